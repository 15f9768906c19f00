// libFuzzer target: the auth-client / auth-master line parsers (common/auth_protocol.h)
// behind a LineReader, as tern-authd runs them on untrusted bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/auth_protocol.h"
#include "common/line_reader.h"

namespace ap = tern::common::auth_protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::common::LineReader reader(ap::kMaxLineLength);
  // Feed in two uneven pieces so partial lines are exercised.
  std::string_view in(reinterpret_cast<const char*>(data), size);
  reader.feed(in.substr(0, size / 3));
  reader.feed(in.substr(size / 3));
  tern::common::LineReader::Line line;
  for (int i = 0; i < 10000; ++i) {
    auto st = reader.next(line);
    if (st == tern::common::LineReader::Status::kNeedMore) break;
    if (st != tern::common::LineReader::Status::kLine) continue;
    ap::ParsedLine p = ap::parse_line(line.text);
    if (!p.ok) continue;
    if (p.line.command == "AUTH") {
      ap::AuthParse a = ap::parse_auth(p.line);
      if (a.error == ap::AuthParseError::kNone && a.cmd.initial_response.size() > ap::kMaxSaslMessage) __builtin_trap();
    } else if (p.line.command == "CONT") {
      (void)ap::parse_cont(p.line);
    }
    // Escaping round-trips whatever was parsed.
    for (const auto& arg : p.line.args) {
      auto back = ap::tab_unescape(ap::tab_escape(arg));
      if (!back || *back != arg) __builtin_trap();
    }
  }
  return 0;
}
