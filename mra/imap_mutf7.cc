#include "mra/imap_mutf7.h"

#include <cstdint>
#include <vector>

#include "common/mime_charset.h"

namespace tern::mra::imap {

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == ',') return 63;
  return -1;
}

bool printable(uint32_t c) { return c >= 0x20 && c <= 0x7e; }

void flush_utf16(std::string& out, const std::vector<uint16_t>& units) {
  uint32_t bits = 0;
  int nbits = 0;
  out += '&';
  for (uint16_t u : units) {
    bits = (bits << 16) | u;
    nbits += 16;
    while (nbits >= 6) {
      nbits -= 6;
      out += kAlphabet[(bits >> nbits) & 0x3F];
    }
  }
  if (nbits > 0) out += kAlphabet[(bits << (6 - nbits)) & 0x3F];
  out += '-';
}

}  // namespace

std::optional<std::string> mutf7_encode(std::string_view utf8) {
  if (!tern::common::mime::is_valid_utf8(utf8)) return std::nullopt;
  std::string out;
  std::vector<uint16_t> pending;
  size_t i = 0;
  while (i < utf8.size()) {
    uint32_t cp = tern::common::mime::next_code_point(utf8, i);
    if (printable(cp)) {
      if (!pending.empty()) {
        flush_utf16(out, pending);
        pending.clear();
      }
      if (cp == '&') {
        out += "&-";
      } else {
        out += static_cast<char>(cp);
      }
      continue;
    }
    if (cp >= 0x10000) {
      cp -= 0x10000;
      pending.push_back(static_cast<uint16_t>(0xD800 | (cp >> 10)));
      pending.push_back(static_cast<uint16_t>(0xDC00 | (cp & 0x3FF)));
    } else {
      pending.push_back(static_cast<uint16_t>(cp));
    }
  }
  if (!pending.empty()) flush_utf16(out, pending);
  return out;
}

std::optional<std::string> mutf7_decode(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (!printable(c)) return std::nullopt;
    if (c != '&') {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    ++i;
    if (i < s.size() && s[i] == '-') {  // "&-" is '&'
      out += '&';
      ++i;
      continue;
    }
    uint32_t bits = 0;
    int nbits = 0;
    uint32_t high = 0;  // a pending high surrogate
    size_t units = 0;
    for (;;) {
      if (i >= s.size()) return std::nullopt;  // no closing '-'
      char d = s[i++];
      if (d == '-') break;
      int v = b64_value(d);
      if (v < 0) return std::nullopt;
      bits = (bits << 6) | static_cast<uint32_t>(v);
      nbits += 6;
      if (nbits >= 16) {
        nbits -= 16;
        auto u = static_cast<uint16_t>((bits >> nbits) & 0xFFFF);
        bits &= (1u << nbits) - 1;
        ++units;
        if (high) {
          if (u < 0xDC00 || u > 0xDFFF) return std::nullopt;  // high surrogate not followed by low
          tern::common::mime::append_utf8(out, 0x10000 + ((high - 0xD800) << 10) + (u - 0xDC00));
          high = 0;
        } else if (u >= 0xD800 && u <= 0xDBFF) {
          high = u;
        } else if (u >= 0xDC00 && u <= 0xDFFF) {
          return std::nullopt;  // a lone low surrogate
        } else if (printable(u)) {
          return std::nullopt;  // printable ASCII must stand for itself
        } else {
          tern::common::mime::append_utf8(out, u);
        }
      }
    }
    // "&-" was handled above, so an encoded run must hold at least one character;
    // left-over bits are padding: fewer than 6 of them (RFC 2152), all zero.
    if (units == 0 || high || nbits >= 6 || bits != 0) return std::nullopt;
    // The next character must not start another encoded run: "&AGE-&AGI-" has a
    // shorter spelling, "&AGEAYg-", and a name has only one spelling.
    if (i < s.size() && s[i] == '&' && !(i + 1 < s.size() && s[i + 1] == '-')) return std::nullopt;
  }
  return out;
}

}  // namespace tern::mra::imap
