// What the SMTP client does to a message for a server that lacks an extension the
// message needs. Pure: bytes in, bytes (or a reason) out.
//
// 8BITMIME (RFC 6152 3): a message with 8-bit bytes may only go to a server that
// advertises 8BITMIME; otherwise the client must convert it to 7 bits or return it.
// Tern converts, as Postfix does (disable_mime_output_conversion = no): every MIME
// leaf whose body has 8-bit bytes is re-encoded as quoted-printable (a "binary"
// part as base64) and its Content-Transfer-Encoding changed; composite parts marked
// 8bit become 7bit. What cannot be converted without changing meaning, 8-bit bytes
// in a header, is not sent: the message bounces with 5.6.3.
//
// SMTPUTF8 (RFC 6531 3.4): a message that needs it (UTF-8 in an envelope address or
// a header) cannot go to a server without it and bounces with 5.6.7. A message that
// was submitted with SMTPUTF8 but is all ASCII there goes without it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::mta {

// Any byte >= 0x80.
bool has_8bit(std::string_view s);

// The header section of a message (up to the first empty line).
std::string_view message_headers(std::string_view message);

// Whether the transaction needs SMTPUTF8: UTF-8 in the sender, a recipient or the
// message's header section.
bool needs_smtputf8(std::string_view sender, const std::vector<std::string>& rcpts, std::string_view headers);

// The message converted to 7 bits (CRLF line endings in what was re-encoded). An
// error (kPerm) says why it cannot be.
common::Result<std::string> downgrade_8bit(std::string_view message);

// Quoted-printable (RFC 2045 6.7) of a line-oriented body: line breaks (CRLF or a
// bare LF) stay hard line breaks (CRLF); lines are cut at 76 characters with soft
// breaks; trailing blanks are encoded.
std::string qp_encode(std::string_view body);

}  // namespace tern::mta
