#include "mra/imap_mutf7.h"

#include <catch2/catch.hpp>

using namespace tern::mra::imap;

TEST_CASE("modified UTF-7 encodes and decodes (RFC 3501 5.1.3)", "[imap][mutf7]") {
  struct Case {
    const char* utf8;
    const char* mutf7;
  };
  const Case cases[] = {
      {"INBOX", "INBOX"},
      {"", ""},
      {"&", "&-"},
      {"Tom & Jerry", "Tom &- Jerry"},
      // RFC 3501's own example: "~peter/mail/台北/日本語".
      {"~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
      {"Entw\xc3\xbc" "rfe", "Entw&APw-rfe"},
      {"\xc3\xa9t\xc3\xa9", "&AOk-t&AOk-"},
      {"Gel\xc3\xb6schte Elemente", "Gel&APY-schte Elemente"},
      {"\xd0\x9e\xd1\x82\xd0\xbf\xd1\x80\xd0\xb0\xd0\xb2\xd0\xbb\xd0\xb5\xd0\xbd\xd0\xbd\xd1\x8b\xd0\xb5", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"},
      {"\xf0\x9f\x93\xa7 mail", "&2D3c5w- mail"},  // U+1F4E7, a surrogate pair
      {"a\xc2\xa0" "b", "a&AKA-b"},
  };
  for (const Case& c : cases) {
    INFO(c.utf8);
    CHECK(mutf7_encode(c.utf8) == c.mutf7);
    CHECK(mutf7_decode(c.mutf7) == c.utf8);
  }
}

TEST_CASE("modified UTF-7 decoding is strict", "[imap][mutf7]") {
  const char* bad[] = {
      "&",              // unterminated
      "&AOk",           // no closing '-'
      "&AOk-&AOk-",     // two adjacent runs: the only spelling is "&AOkA6Q-"
      "&AGE-",          // encodes 'a', which must stand for itself
      "&ACY-",          // encodes '&', which must be "&-"
      "&AOl-",          // non-zero padding bits
      "&2D0-",          // lone high surrogate
      "&3eU-",          // lone low surrogate
      "&Jjo!-",         // '!' is not in the alphabet
      "&Jjo/-",         // '/' is the standard base64 character, not the modified one
      "caf\xc3\xa9",    // raw 8-bit
      "tab\there",      // control character
      "&-&",            // trailing lone '&'
      "&AO-",           // 12 bits: not a whole UTF-16 unit, and 12 > 6 bits of padding
  };
  for (const char* b : bad) {
    INFO(b);
    CHECK_FALSE(mutf7_decode(b));
  }
  CHECK(mutf7_decode("&AOkA6Q-") == "\xc3\xa9\xc3\xa9");
  CHECK(mutf7_decode("&-&-") == "&&");
  CHECK_FALSE(mutf7_encode("bad\xff"));
}

TEST_CASE("modified UTF-7 round-trips every BMP character class", "[imap][mutf7]") {
  std::string s;
  for (uint32_t cp : {0x20u, 0x26u, 0x7eu, 0x7fu, 0xa0u, 0x100u, 0x7ffu, 0x800u, 0xfffdu, 0x10000u, 0x10ffffu}) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::optional<std::string> e = mutf7_encode(s);
  REQUIRE(e);
  CHECK(mutf7_decode(*e) == s);
}
