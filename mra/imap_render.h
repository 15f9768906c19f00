// Rendering of IMAP response data (RFC 3501 9 / RFC 9051 9 formal syntax): strings
// (quoted or literal, whichever the content allows), flag lists, INTERNALDATE,
// ENVELOPE, BODY and BODYSTRUCTURE, and BODY[section] / BINARY[section] contents.
//
// Clients parse these with hand-written parsers (Thunderbird, mutt, iOS Mail, mbsync),
// so the output follows the grammar to the letter: a quoted string never holds CR,
// LF, NUL or (without UTF-8 mode) 8-bit bytes; such values go out as literals; a
// literal never holds NUL (replaced by 0x80, as Dovecot does) except a literal8 in a
// BINARY response; address and body structures have exactly the members the grammar
// lists, NIL where absent. No I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mime.h"
#include "mra/imap_command.h"

namespace tern::mra::imap {

// Whether 8-bit (UTF-8) bytes may go in quoted strings: after ENABLE IMAP4rev2 or
// UTF8=ACCEPT (RFC 9051 4.3, RFC 6855 3).
struct RenderMode {
  bool utf8 = false;
};

// An IMAP "string": quoted when the content allows, else a literal.
void append_string(std::string& out, std::string_view s, RenderMode mode = {});
// "nstring": NIL or a string.
void append_nstring(std::string& out, const std::optional<std::string>& s, RenderMode mode = {});
// "astring": an atom when the content allows, else a string.
void append_astring(std::string& out, std::string_view s, RenderMode mode = {});
// "{n}" CRLF data, NUL replaced by 0x80 (RFC 3501 4.3: literals are CHAR8).
void append_literal(std::string& out, std::string_view data);
// "~{n}" CRLF data when `data` holds NUL (literal8, RFC 3516 4.2), else a literal.
void append_literal8(std::string& out, std::string_view data);

// "(\Seen $Label1)".
std::string format_flag_list(const std::vector<std::string>& flags);

// "17-Jul-1996 02:44:25 -0700" (date-time, with quotes) of a UNIX time shown in `zone`.
std::string format_internal_date(int64_t unix_time, int zone_minutes = 0);

// ENVELOPE (RFC 3501 7.4.2) of a message or encapsulated message header section.
void append_envelope(std::string& out, const tern::common::mime::HeaderSection& header, RenderMode mode = {});

// BODYSTRUCTURE (`extended`) or BODY of a part and everything below it.
void append_body_structure(std::string& out, const tern::common::mime::Message& msg,
                           const tern::common::mime::Part& part, bool extended, RenderMode mode = {});

// The bytes of BODY[section] (before any <partial>): a view into the message where
// the section is a contiguous range (so BODY[]<0.65536> costs no copy of the
// message), an owned string for HEADER.FIELDS. `exists` is false when the section
// names no part of this message (the response is then NIL).
struct SectionContent {
  bool exists = false;
  std::string_view view;
  std::string storage;
  bool owned = false;
  std::string_view data() const { return owned ? std::string_view(storage) : view; }
};
SectionContent section_content(const tern::common::mime::Message& msg, const Section& section);

// The subset of a header section whose field names are (or, with `exclude`, are not)
// in `fields`, whole folded lines, then the blank line (RFC 3501 6.4.5).
std::string filter_header(std::string_view header_text, const std::vector<std::string>& fields, bool exclude);

// The outcome of BINARY[section] (RFC 3516).
struct BinaryContent {
  enum class Status {
    kOk,          // `data` holds the decoded content
    kNoSection,   // no such part: NIL
    kUnknownCte,  // the part's transfer encoding is unknown or broken: NO [UNKNOWN-CTE]
  };
  Status status = Status::kOk;
  std::string data;
};
BinaryContent binary_content(const tern::common::mime::Message& msg, const Section& section);

// Applies <offset.count> (RFC 3501 6.4.5): the substring, empty past the end.
std::string_view apply_partial(std::string_view data, const std::optional<std::pair<uint64_t, uint64_t>>& partial);

}  // namespace tern::mra::imap
