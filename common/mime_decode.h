// Content-Transfer-Encoding decoding (RFC 2045 6): base64 and quoted-printable, for
// IMAP SEARCH (text is searched decoded), IMAP BINARY (RFC 3516) and RFC 2047
// encoded-words.
//
// Decoders never fail: they decode what they can and report whether the input was
// clean, so SEARCH can read a sloppy attachment while BINARY can refuse it with
// [UNKNOWN-CTE] as RFC 3516 4.2 asks. No I/O.
#pragma once

#include <string>
#include <string_view>

namespace tern::common::mime {

// Appends the base64 decoding of `in` to `out`. Line breaks and blanks are skipped;
// padding ends a group; other bytes are skipped and make the result unclean, as does
// a truncated final group (its whole bytes are still decoded). Returns "clean".
bool decode_base64(std::string_view in, std::string& out);

// Appends the quoted-printable decoding of `in` to `out`: "=XX" (either case), soft
// line breaks "=" CRLF / "=" LF (blanks allowed before the break), trailing blanks of
// each line dropped (RFC 2045 6.7 rule 3). An invalid "=" sequence is kept as written
// and makes the result unclean. With `q_encoding` (RFC 2047 4.2), '_' is a space and
// there are no line breaks. Returns "clean".
bool decode_quoted_printable(std::string_view in, std::string& out, bool q_encoding = false);

// Decodes a body by its Content-Transfer-Encoding token (lower-case; "" or an
// unknown token means identity, as 7bit/8bit/binary are). Returns "clean"; an unknown
// encoding is not clean.
bool decode_body(std::string_view encoding, std::string_view in, std::string& out);

// True when the encoding token is one decode_body() knows (including identities).
bool known_encoding(std::string_view encoding);

}  // namespace tern::common::mime
