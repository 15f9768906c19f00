// Fuzz target: the mbox parsers, on the bytes of a mailbox file that the user (or
// any program of theirs, or a sender through the message content) controls:
// common/mbox.h split() (tern-mda's and the tests' reader) and the mbox store's
// mra/mbox_store.h mboxfmt::parse / client_view / render / new_message.
//
// Input: byte 0 picks a mode. Mode even: the rest is a whole mbox file. Mode odd:
// the rest is up to eight message contents separated by NUL, each written with
// new_message() (the From_ line, mboxrd quoting, the blank line), one after the
// other.
//
// Invariants, for any file: no crash; both parsers find the same messages (same
// count, same From_ lines); mboxfmt's offsets are ordered and inside the file; the
// file rewritten message by message with render() (what a flag change writes)
// parses again into as many messages with the same UIDs, flags and client views.
// For written messages: each one is found again, and split() gives each content
// back (in LF form, ending with a newline).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/mbox.h"
#include "common/mime.h"
#include "mra/mbox_store.h"

using namespace tern;
namespace mbox = tern::common::mbox;
namespace mboxfmt = tern::mra::mboxfmt;

namespace {

std::string from_line_of(const std::string& data, const mra::MboxMessage& m) {
  std::string l = data.substr(m.offset, m.header_off - m.offset);
  if (!l.empty() && l.back() == '\n') l.pop_back();
  return l.substr(5);
}

void check_file(const std::string& data) {
  std::vector<mra::MboxMessage> msgs = mboxfmt::parse(data);
  std::vector<mbox::Message> split = mbox::split(data);
  if (split.size() != msgs.size()) std::abort();
  uint64_t prev_end = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const mra::MboxMessage& m = msgs[i];
    if (m.offset < prev_end || m.offset >= m.header_off || m.header_off > m.body_off || m.body_off > m.end ||
        m.end > data.size()) {
      std::abort();
    }
    if (i + 1 == msgs.size() ? m.end != data.size() : m.end != msgs[i + 1].offset) std::abort();
    if (from_line_of(data, m) != split[i].from_line) std::abort();
    prev_end = m.end;
  }
  // Rewritten as a flag change rewrites it, it parses into the same messages.
  std::string again;
  for (size_t i = 0; i < msgs.size(); ++i) {
    again += mboxfmt::render(data, msgs[i], 1234, i == 0 ? 77 : 0);
  }
  std::vector<mra::MboxMessage> back = mboxfmt::parse(again);
  if (back.size() != msgs.size()) std::abort();
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (back[i].uid != msgs[i].uid || back[i].flags != msgs[i].flags) std::abort();
    if (mboxfmt::client_view(again, back[i]) != mboxfmt::client_view(data, msgs[i])) std::abort();
  }
  if (!back.empty() && (!back[0].has_base || back[0].base_validity != 1234 || back[0].base_next != 77)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 65536) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    check_file(std::string(in));
    return 0;
  }
  std::vector<std::string_view> contents;
  for (size_t pos = 0; contents.size() < 8;) {
    size_t z = in.find('\0', pos);
    contents.push_back(in.substr(pos, z == std::string_view::npos ? std::string_view::npos : z - pos));
    if (z == std::string_view::npos) break;
    pos = z + 1;
  }
  std::string file;
  for (std::string_view c : contents) file += mboxfmt::new_message(c, 1700000000);
  std::vector<mbox::Message> split = mbox::split(file);
  if (split.size() != contents.size()) std::abort();
  for (size_t i = 0; i < contents.size(); ++i) {
    std::string want = common::mime::to_lf(contents[i]);
    if (!want.empty() && want.back() != '\n') want += '\n';
    if (split[i].content != want) std::abort();
    if (split[i].from_line != "MAILER-DAEMON Tue Nov 14 22:13:20 2023") std::abort();
  }
  if (mboxfmt::parse(file).size() != contents.size()) std::abort();
  check_file(file);
  return 0;
}
