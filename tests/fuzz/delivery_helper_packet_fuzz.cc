// Fuzz target: the packets of tern-mda's delivery helper (mda/delivery_helper.h),
// the root process that delivers to system users. The helper (root) parses the
// DELIVER requests of tern-mda and the DONE replies of its per-delivery child, which
// runs as the user; tern-mda parses the DONE the helper passes on. The codec is
// common/sockets.h encode_packet / parse_packet, behind encode/decode_helper_outcome.
//
// Input: byte 0 picks a mode. Even: the rest is a packet as received. Odd: the rest
// is cut at NUL bytes into field values, encoded.
//
// Invariants: no crash; parse_packet accepts only what encode_packet writes (the
// accepted fields, encoded again in the packet's order, are the packet byte for
// byte: no duplicate key, no escape or raw byte the encoder never writes);
// decode(encode(fields)) == fields; a decoded DONE always makes one well-formed
// LMTP reply line (it goes to tern-mta as the recipient's reply), and encoding the
// decoded outcome and decoding it again gives the same outcome.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/sockets.h"
#include "mda/delivery_helper.h"

using namespace tern;
namespace net = tern::common::net;

namespace {

// The packet's own items, in order (verb first), as the encoder would see them.
std::vector<std::pair<std::string, std::string>> items(std::string_view p, std::string& verb) {
  std::vector<std::pair<std::string, std::string>> kv;
  size_t tab = p.find('\t');
  verb = std::string(p.substr(0, tab));
  while (tab != std::string_view::npos) {
    size_t start = tab + 1;
    tab = p.find('\t', start);
    std::string_view item = p.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start);
    size_t eq = item.find('=');
    std::string_view v = item.substr(eq + 1);
    kv.emplace_back(std::string(item.substr(0, eq)), std::string(v));
  }
  return kv;
}

void check_reply_line(const std::string& w) {
  if (w.size() < 6 || w.substr(w.size() - 2) != "\r\n") std::abort();
  std::string_view line(w.data(), w.size() - 2);
  if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) std::abort();
  for (int i = 0; i < 3; ++i) {
    if (line[i] < '0' || line[i] > '9') std::abort();
  }
  if (line[0] < '2' || line[0] > '5' || line[3] != ' ') std::abort();
}

void check_outcome(std::string_view packet) {
  mda::Outcome o = mda::decode_helper_outcome(packet);
  check_reply_line(o.reply.format());
  mda::Outcome again = mda::decode_helper_outcome(mda::encode_helper_outcome(o));
  if (again.reply.code != o.reply.code || again.reply.enhanced != o.reply.enhanced ||
      again.reply.lines != o.reply.lines || again.log != o.log || again.mailbox != o.mailbox || again.uid != o.uid) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > mda::kMaxHelperPacket) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    for (std::string_view verb : {"DONE", "DELIVER"}) {
      std::optional<net::PacketFields> f = net::parse_packet(in, verb);
      if (!f) continue;
      std::string v;
      std::vector<std::pair<std::string, std::string>> raw = items(in, v);
      std::vector<std::pair<std::string, std::string>> decoded;
      for (auto& [k, ignored] : raw) {
        auto it = f->find(k);
        if (it == f->end()) std::abort();
        decoded.emplace_back(k, it->second);
      }
      if (net::encode_packet(verb, decoded) != in) std::abort();
    }
    check_outcome(in);
    return 0;
  }
  // Fields from the input: the keys of a DELIVER request, values cut at NUL.
  static const char* const kKeys[] = {"user", "size", "sender", "return_path", "recipient", "folder", "received", "arrival"};
  std::vector<std::pair<std::string, std::string>> kv;
  size_t pos = 0;
  for (const char* k : kKeys) {
    size_t z = in.find('\0', pos);
    kv.emplace_back(k, std::string(in.substr(pos, z == std::string_view::npos ? std::string_view::npos : z - pos)));
    if (z == std::string_view::npos) {
      pos = in.size();
    } else {
      pos = z + 1;
    }
  }
  std::string packet = net::encode_packet("DELIVER", kv);
  std::optional<net::PacketFields> f = net::parse_packet(packet, "DELIVER");
  if (!f || f->size() != kv.size()) std::abort();
  for (auto& [k, v] : kv) {
    if ((*f)[k] != v) std::abort();
  }
  if (net::parse_packet(packet, "DONE")) std::abort();
  // An outcome built from the same bytes survives the trip through the helper.
  mda::Outcome o;
  o.reply = common::smtp::Reply(250, "2.0.0", kv[0].second);
  o.log = kv[2].second;
  o.mailbox = kv[3].second;
  o.uid = static_cast<uint32_t>(kv[4].second.size());
  mda::Outcome back = mda::decode_helper_outcome(mda::encode_helper_outcome(o));
  if (back.reply.code != 250 || back.reply.enhanced != "2.0.0" || back.reply.lines != o.reply.lines ||
      back.log != o.log || back.mailbox != o.mailbox || back.uid != o.uid) {
    std::abort();
  }
  check_outcome(packet);
  return 0;
}
