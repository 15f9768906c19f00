// Character sets of mail text: UTF-8 validation and repair, conversion of any charset
// glibc's iconv knows into UTF-8, and the simple case folding that IMAP SEARCH uses.
//
// Mail arrives in every charset and often mislabelled, so nothing here fails on
// content: invalid sequences become U+FFFD. Only an unknown charset name is reported
// (the caller decides: IMAP SEARCH answers NO [BADCHARSET]; display code keeps the
// bytes after repairing them as UTF-8). Charset names from messages are untrusted:
// they are checked before they reach iconv_open(), so "//TRANSLIT"-style suffixes or
// paths never get through. Pure functions; no I/O, no locale dependence.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::common::mime {

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s);

// `s` with every ill-formed UTF-8 sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view s);

// Appends the UTF-8 encoding of code point `cp` (U+FFFD for invalid ones).
void append_utf8(std::string& out, uint32_t cp);

// Decodes one code point at s[i], advancing i. Ill-formed input yields U+FFFD and
// advances by one byte.
uint32_t next_code_point(std::string_view s, size_t& i);

// Canonical lower-case name of a charset label ("UTF8" -> "utf-8", "latin1" ->
// "iso-8859-1"), or nullopt when the label is not a plausible charset name (empty,
// longer than 64 bytes, or with characters outside [A-Za-z0-9._:+()-]).
std::optional<std::string> normalize_charset_name(std::string_view label);

// True when `charset` is known, i.e. to_utf8() will not return nullopt for it.
bool charset_supported(std::string_view charset);

// Converts `data` from `charset` to UTF-8. nullopt only when the charset is unknown.
// US-ASCII and ISO-8859-1 labels are read as their supersets (8-bit bytes in "ASCII"
// text are common; ISO-8859-1 is read as windows-1252, as every browser does), and
// text labelled US-ASCII that is valid UTF-8 is kept as UTF-8.
std::optional<std::string> to_utf8(std::string_view charset, std::string_view data);

// Like to_utf8(), but an unknown charset gives sanitize_utf8(data): for display and
// search, where something readable beats nothing.
std::string to_utf8_lenient(std::string_view charset, std::string_view data);

// Simple case folding of UTF-8 text for case-insensitive substring search: ASCII,
// Latin-1, Latin Extended-A, Greek and Cyrillic capitals become small letters.
// Ill-formed input is sanitised first. (Full Unicode folding, e.g. "ß" -> "ss", is
// not done; RFC 3501 leaves the comparator to the server.)
std::string fold_case(std::string_view utf8);

}  // namespace tern::common::mime
