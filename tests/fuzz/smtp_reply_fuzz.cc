// Fuzz target: the client-side reply parser (common/smtp_reply.h).
//
// Input: byte 0 picks enhanced-code parsing; the rest is split into lines at LF.
// Invariants: no crash; a complete reply has a code in 200..599 and at most
// kMaxLines lines; formatting it and parsing that again gives the same reply.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/smtp_reply.h"

using namespace tern::common::smtp;

namespace {

Reply reparse(const Reply& r, bool enhanced) {
  ReplyParser p(enhanced);
  std::string wire = r.format();
  size_t pos = 0;
  while (pos < wire.size()) {
    size_t e = wire.find("\r\n", pos);
    ReplyParser::Status s = p.feed(std::string_view(wire).substr(pos, e - pos));
    pos = e + 2;
    if (s == ReplyParser::Status::kError) std::abort();
    if (s == ReplyParser::Status::kComplete) {
      if (pos != wire.size()) std::abort();
      return p.take();
    }
  }
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool enhanced = data[0] & 1;
  ReplyParser p(enhanced);
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t pos = 0;
  while (pos <= in.size()) {
    size_t e = in.find('\n', pos);
    std::string_view line = in.substr(pos, e == std::string_view::npos ? std::string_view::npos : e - pos);
    if (line.find('\r') != std::string_view::npos || line.find('\0') != std::string_view::npos) break;
    if (p.feed(line) == ReplyParser::Status::kComplete) {
      Reply r = p.take();
      if (r.code < 200 || r.code > 599 || r.lines.empty() || r.lines.size() > ReplyParser::kMaxLines) std::abort();
      Reply again = reparse(r, enhanced);
      if (again.code != r.code || again.lines != r.lines || again.enhanced != r.enhanced) std::abort();
    }
    if (e == std::string_view::npos) break;
    pos = e + 1;
  }
  return 0;
}
