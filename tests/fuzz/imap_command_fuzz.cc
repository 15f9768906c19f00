// Fuzzes ImapReader + parse_command: arbitrary client bytes, split into chunks at
// arbitrary points (the first byte picks the chunk size), must never crash, hang or
// exceed the reader's bounds, and every framed command must parse or be refused.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "mra/imap_parser.h"
#include "mra/imap_reader.h"

using namespace tern::mra::imap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t chunk = 1 + data[0] % 64;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  ReaderLimits lim;
  lim.max_line = 1024;
  lim.max_command = 4096;
  lim.max_literal = 2048;
  lim.max_append = 8192;
  ImapReader r(lim);
  for (size_t off = 0; off < in.size(); off += chunk) {
    r.feed(in.substr(off, chunk));
    for (;;) {
      ImapReader::Status s = r.next();
      if (s == ImapReader::Status::kNeedMore || s == ImapReader::Status::kFatal) break;
      if (s == ImapReader::Status::kCommand) {
        const RawCommand& c = r.command();
        if (c.text.size() > lim.max_command + lim.max_append) __builtin_trap();
        ParseResult p = parse_command(c);
        if (auto* cmd = std::get_if<Command>(&p)) {
          if (cmd->tag.empty()) __builtin_trap();
          if (auto* f = std::get_if<FetchArgs>(&cmd->args)) {
            for (const FetchAtt& a : f->atts) (void)a.section.to_string();
          }
        }
      }
    }
    if (r.buffered() > lim.max_line + 2 + chunk) __builtin_trap();
  }
  return 0;
}
