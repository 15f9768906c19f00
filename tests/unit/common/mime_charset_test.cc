#include "common/mime_charset.h"

#include <catch2/catch.hpp>

using namespace tern::common::mime;

TEST_CASE("is_valid_utf8 accepts well-formed and rejects ill-formed UTF-8", "[mime][charset]") {
  struct Case {
    std::string text;
    bool valid;
  };
  const Case cases[] = {
      {"", true},
      {"plain ascii", true},
      {"caf\xc3\xa9", true},                  // é
      {"\xe2\x82\xac", true},                 // €
      {"\xf0\x9f\x98\x80", true},             // U+1F600
      {"\xc3", false},                        // truncated
      {"\xc0\xaf", false},                    // overlong '/'
      {"\xe0\x80\xaf", false},                // overlong
      {"\xed\xa0\x80", false},                // surrogate U+D800
      {"\xf4\x90\x80\x80", false},            // > U+10FFFF
      {"\xff", false},
      {"a\x80z", false},                      // lone continuation byte
      {std::string("nul\0inside", 10), true}, // NUL is a valid code point
  };
  for (const Case& c : cases) {
    INFO(c.text);
    CHECK(is_valid_utf8(c.text) == c.valid);
  }
}

TEST_CASE("sanitize_utf8 replaces each ill-formed sequence with U+FFFD", "[mime][charset]") {
  CHECK(sanitize_utf8("ok") == "ok");
  CHECK(sanitize_utf8("a\xff" "b") == "a\xef\xbf\xbd" "b");
  CHECK(sanitize_utf8("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(sanitize_utf8("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(is_valid_utf8(sanitize_utf8("\xe2\x82")));
}

TEST_CASE("normalize_charset_name canonicalises labels and refuses junk", "[mime][charset]") {
  CHECK(normalize_charset_name("UTF-8") == "utf-8");
  CHECK(normalize_charset_name("utf8") == "utf-8");
  CHECK(normalize_charset_name("\"ISO-8859-1\"") == "iso-8859-1");
  CHECK(normalize_charset_name("Latin1") == "iso-8859-1");
  CHECK(normalize_charset_name("KOI8-R") == "koi8-r");
  // iconv option suffixes, paths and overlong names never reach iconv_open().
  CHECK_FALSE(normalize_charset_name("utf-8//TRANSLIT"));
  CHECK_FALSE(normalize_charset_name("../../etc/passwd"));
  CHECK_FALSE(normalize_charset_name(""));
  CHECK_FALSE(normalize_charset_name(std::string(65, 'a')));
  CHECK_FALSE(normalize_charset_name("utf 8"));
}

TEST_CASE("to_utf8 converts the charsets mail uses", "[mime][charset]") {
  CHECK(to_utf8("iso-8859-1", "caf\xe9") == "caf\xc3\xa9");
  // ISO-8859-1 is read as windows-1252: 0x80 is the euro sign.
  CHECK(to_utf8("ISO-8859-1", "\x80") == "\xe2\x82\xac");
  CHECK(to_utf8("iso-8859-15", "\xa4") == "\xe2\x82\xac");
  CHECK(to_utf8("koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4") == "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");  // Привет
  CHECK(to_utf8("shift_jis", "\x93\xfa\x96\x7b") == "\xe6\x97\xa5\xe6\x9c\xac");                          // 日本
  CHECK(to_utf8("iso-2022-jp", "\x1b$BF|K\\\x1b(B") == "\xe6\x97\xa5\xe6\x9c\xac");                      // 日本, stateful
  CHECK(to_utf8("gb2312", "\xd6\xd0\xce\xc4") == "\xe4\xb8\xad\xe6\x96\x87");                            // 中文
  CHECK(to_utf8("utf-16be", std::string("\x00" "A\x20\xac", 4)) == "A\xe2\x82\xac");
  CHECK(to_utf8("windows-1251", "\xcf\xf0\xe8") == "\xd0\x9f\xd1\x80\xd0\xb8");                           // При
}

TEST_CASE("to_utf8 never fails on content, only on unknown charsets", "[mime][charset]") {
  // UTF-8 label with broken bytes: repaired.
  CHECK(to_utf8("utf-8", "a\xffz") == "a\xef\xbf\xbdz");
  // "us-ascii" text that is really UTF-8 stays UTF-8; 8-bit junk is read as cp1252.
  CHECK(to_utf8("us-ascii", "caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(to_utf8("us-ascii", "caf\xe9") == "caf\xc3\xa9");
  // A Shift_JIS lead byte with no trail byte at the end: kept text plus a replacement.
  CHECK(to_utf8("shift_jis", "A\x81") == "A\xef\xbf\xbd");
  // Truncated multibyte sequence at the end.
  std::optional<std::string> trunc = to_utf8("utf-16le", std::string("A\x00" "B", 3));
  REQUIRE(trunc);
  CHECK(trunc->substr(0, 1) == "A");
  CHECK(is_valid_utf8(*trunc));
  CHECK_FALSE(to_utf8("x-no-such-charset", "abc"));
  CHECK(to_utf8_lenient("x-no-such-charset", "ab\xff") == "ab\xef\xbf\xbd");
  CHECK(charset_supported("UTF-8"));
  CHECK(charset_supported("koi8-r"));
  CHECK_FALSE(charset_supported("x-no-such-charset"));
}

TEST_CASE("fold_case folds ASCII, Latin, Greek and Cyrillic capitals", "[mime][charset]") {
  CHECK(fold_case("Hello WORLD") == "hello world");
  CHECK(fold_case("\xc3\x89t\xc3\xa9") == "\xc3\xa9t\xc3\xa9");                   // Été -> été
  CHECK(fold_case("\xc5\x81\xc3\x93" "D\xc5\xb9") == "\xc5\x82\xc3\xb3" "d\xc5\xba");  // ŁÓDŹ -> łódź
  CHECK(fold_case("\xce\xa3\xce\x9f\xce\xa6\xce\x99\xce\x91") == "\xcf\x83\xce\xbf\xcf\x86\xce\xb9\xce\xb1");  // ΣΟΦΙΑ
  CHECK(fold_case("\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2") == "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
  CHECK(fold_case("\xd0\x81") == "\xd1\x91");  // Ё -> ё
  CHECK(fold_case("\xc3\x97") == "\xc3\x97");  // × is not a letter
  CHECK(is_valid_utf8(fold_case("bad\xff")));
}
