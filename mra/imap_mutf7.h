// Modified UTF-7 mailbox names (RFC 3501 5.1.3), both ways, with strict validation.
//
// IMAP4rev1 sends mailbox names in this encoding; IMAP4rev2 (RFC 9051 5.1) and
// UTF8=ACCEPT send UTF-8 instead, so the session converts at its edge and everything
// behind it (the store, the file system) sees UTF-8 only. Decoding is strict, as
// Dovecot's is: every name has exactly one encoding, so two spellings can never name
// one mailbox (or slip past a check made on the other spelling). Rejected: bytes
// outside printable ASCII, '&' without its closing '-', base64 that encodes printable
// ASCII, non-zero padding bits, unpaired UTF-16 surrogates, an empty "&-" misuse is
// fine ("&-" is '&'). No I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tern::mra::imap {

// UTF-8 -> modified UTF-7. nullopt when the input is not well-formed UTF-8.
std::optional<std::string> mutf7_encode(std::string_view utf8);

// Modified UTF-7 -> UTF-8. nullopt when the input is not valid modified UTF-7.
std::optional<std::string> mutf7_decode(std::string_view mutf7);

}  // namespace tern::mra::imap
