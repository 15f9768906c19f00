// parse_command(): the grammar of IMAP commands (RFC 3501 9, RFC 9051 9 and the
// extensions listed in imap_command.h) applied to a command framed by ImapReader.
//
// Strict where looseness would be ambiguous or dangerous (tags, atoms, quoted-string
// escapes, NUL anywhere outside APPEND's message, sequence sets, dates, nesting) and
// bounded where the client controls the size: search-key nesting (kMaxSearchDepth),
// list lengths, ID fields (RFC 2971 3.3). Returns the command or an error with the
// tag (empty when there was no valid tag) and a message fit for "tag BAD <message>".
// No I/O.
#pragma once

#include <string>
#include <variant>

#include "mra/imap_command.h"
#include "mra/imap_reader.h"

namespace tern::mra::imap {

struct ParseError {
  std::string tag;      // "" when the line did not start with a valid tag
  std::string message;  // e.g. "Invalid sequence set"
};

using ParseResult = std::variant<Command, ParseError>;

// NOT NOT NOT ... and ((((...)))) recurse; 64 levels is far beyond any real client.
constexpr int kMaxSearchDepth = 64;

ParseResult parse_command(const RawCommand& raw);

// Parses a "date-time" value without its quotes ("17-Jul-1996 02:44:25 -0700").
std::optional<DateTime> parse_date_time(std::string_view s);
// Parses a search "date" ("1-Feb-1994").
std::optional<Date> parse_search_date(std::string_view s);

}  // namespace tern::mra::imap
