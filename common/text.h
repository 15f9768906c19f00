// Small string helpers shared by every module: splitting, trimming, case folding,
// base64, escaping of untrusted text for logs, and the edit distance that config
// errors use to suggest the nearest known key. Pure functions; no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::common {

std::string_view trim(std::string_view s);
std::string to_lower(std::string_view s);
bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view s, std::string_view prefix);

// Splits on any of `separators`, dropping empty pieces ("a, b,,c" -> a b c with ", ").
std::vector<std::string> split_any(std::string_view s, std::string_view separators);
// Splits on exactly `sep`, keeping empty pieces.
std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);

// Parses a whole decimal number; nullopt on any junk, sign, or overflow.
std::optional<uint64_t> parse_u64(std::string_view s);

// Levenshtein distance, for "did you mean ...?" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);

// RFC 4648 base64. decode returns nullopt on invalid input (bad characters,
// bad padding); whitespace is not accepted.
std::string base64_encode(std::string_view data);
std::optional<std::string> base64_decode(std::string_view text);

std::string hex_encode(std::string_view data);

// Makes untrusted text safe to put in a log line: printable ASCII stays, everything
// else (control bytes, DEL, non-ASCII) becomes \ooo, and the result is cut at `max`
// bytes with "..." (OpenSMTPD strnvis, Postfix printable()).
std::string log_escape(std::string_view s, size_t max = 256);

}  // namespace tern::common
