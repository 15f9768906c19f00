// POP3 command lines (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH, RFC 2595 STLS) as values.
//
// A parser, not I/O: one line in (without its line end), a Command or an error out.
// Keywords are case-insensitive; arguments are separated by blanks. PASS takes the
// rest of the line as the password (RFC 1939 7: it may contain spaces). Command lines
// are bounded at 255 octets (RFC 2449 4); the session bounds SASL response lines
// separately. Message numbers are 1..2^32-1. No I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tern::mra::pop3 {

enum class Verb {
  kUser,  // USER name
  kPass,  // PASS password
  kAuth,  // AUTH [mechanism [initial-response]]
  kStls,  // STLS
  kCapa,  // CAPA
  kQuit,  // QUIT
  kStat,  // STAT
  kList,  // LIST [msg]
  kRetr,  // RETR msg
  kDele,  // DELE msg
  kNoop,  // NOOP
  kRset,  // RSET
  kTop,   // TOP msg n
  kUidl,  // UIDL [msg]
};

struct Command {
  Verb verb = Verb::kNoop;
  std::string arg;                              // USER's name, PASS's password, AUTH's mechanism (upper-case)
  std::optional<std::string> initial_response;  // AUTH's initial response, as sent ("=" for empty)
  std::optional<uint32_t> msg;                  // LIST/RETR/DELE/TOP/UIDL message number
  uint32_t lines = 0;                           // TOP's line count
};

struct ParseError {
  std::string message;  // for "-ERR <message>"
};

using ParseResult = std::variant<Command, ParseError>;

// RFC 2449 4: "command lines ... MUST NOT exceed 255 octets, including the terminating CRLF".
constexpr size_t kMaxCommandLine = 253;

ParseResult parse_command(std::string_view line);

}  // namespace tern::mra::pop3
