// Fuzz target: the cleanup header filter (mta/cleanup.h), which sees every byte of
// every message tern-mta queues.
//
// Input: byte 0 picks the piece size, byte 1 the options, the rest is the message.
// Invariants: the output is the same however the message is split; it is exactly
// the input plus the bytes the filter says it added, less those it says it removed
// (drop_headers); it starts with the prepended
// Received header; the added Message-ID is reported when the message had none.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mta/cleanup.h"

using tern::mta::HeaderFilter;

namespace {

std::string run(const HeaderFilter::Options& o, std::string_view msg, size_t piece, HeaderFilter* keep) {
  HeaderFilter f(o);
  std::string out;
  if (piece == 0) piece = msg.size() + 1;
  for (size_t i = 0; i < msg.size(); i += piece) f.feed(msg.substr(i, piece), out);
  f.finish(out);
  if (keep) *keep = f;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t piece = data[0] % 17;
  const uint8_t flags = data[1];
  std::string_view msg(reinterpret_cast<const char*>(data) + 2, size - 2);
  HeaderFilter::Options o;
  o.prepend = "Received: by fuzz\r\n";
  o.add_message_id = flags & 1;
  o.add_date = flags & 2;
  o.from_header = (flags & 4) ? "a@b" : "";
  o.message_id = "<fuzz@x>";
  o.header_size_limit = 64 + (flags >> 3) * 16;
  HeaderFilter whole_f(o), split_f(o);
  std::string whole = run(o, msg, 0, &whole_f);
  std::string split = run(o, msg, piece, &split_f);
  if (whole != split) std::abort();
  if (whole.size() != msg.size() + whole_f.added_bytes() - whole_f.removed_bytes()) std::abort();
  if (whole_f.removed_bytes() != split_f.removed_bytes()) std::abort();
  if (whole.compare(0, o.prepend.size(), o.prepend) != 0) std::abort();
  if (o.add_message_id && !whole_f.had_message_id() && whole_f.message_id() != o.message_id) std::abort();
  return 0;
}
