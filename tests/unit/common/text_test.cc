// text.h: base64 (RFC 4648 vectors and invalid input), log_escape, split/join,
// parse_u64 and edit_distance edge cases.
#include "common/text.h"

#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

using namespace tern::common;
using namespace std::string_literals;

TEST_CASE("base64 encodes and decodes the RFC 4648 section 10 vectors", "[text][base64]") {
  struct Case {
    std::string plain, encoded;
  };
  const Case cases[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
      // Binary, every 6-bit value, and the two characters outside the alphanumerics.
      {"\0"s, "AA=="},
      {"\xff\xff\xff"s, "////"},
      {"\xfb\xef\xbe"s, "++++"},
      {"\0\x10\x83\x10\x51\x87\x20\x92\x8b\x30\xd3\x8f\x41\x14\x93\x51\x55\x97\x61\x96\x9b\x71\xd7\x9f"
       "\x82\x18\xa3\x92\x59\xa7\xa2\x9a\xab\xb2\xdb\xaf\xc3\x1c\xb3\xd3\x5d\xb7\xe3\x9e\xbb\xf3\xdf\xbf"s,
       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"},
      // AUTH PLAIN's NUL-separated triple (RFC 4616).
      {"\0tim\0tanstaaftanstaaf"s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.encoded);
    CHECK(base64_encode(c.plain) == c.encoded);
    std::optional<std::string> d = base64_decode(c.encoded);
    REQUIRE(d);
    CHECK(*d == c.plain);
  }
}

TEST_CASE("base64 round-trips every length and byte value", "[text][base64]") {
  std::string data;
  for (int i = 0; i < 300; ++i) {
    data.push_back(static_cast<char>((i * 7 + 3) & 0xff));
    std::string e = base64_encode(data);
    CHECK(e.size() == (data.size() + 2) / 3 * 4);
    std::optional<std::string> d = base64_decode(e);
    REQUIRE(d);
    CHECK(*d == data);
  }
}

TEST_CASE("base64 rejects invalid input", "[text][base64]") {
  const char* bad[] = {
      "Z",          // not a multiple of 4
      "Zg",         //
      "Zg=",        //
      "Zm9vY",      //
      "====",       // padding only
      "Z===",       // three padding characters
      "=Zg=",       // padding first
      "Zg=a",       // data after padding
      "Zg==Zg==",   // padding in the middle
      "Zm\r\n",     // line breaks are not accepted
      "Zm9vYmFy\r\nAA",
      "Zm9v YmF",   // nor spaces
      " Zm9",       //
      "Zm9-",       // base64url alphabet is a different encoding
      "Zm9_",       //
      "Zm9\x80",    // non-ASCII
  };
  for (const char* b : bad) {
    CAPTURE(b);
    CHECK_FALSE(base64_decode(b));
  }
  CHECK_FALSE(base64_decode("Zm9v\0Zg="s));  // NUL
}

TEST_CASE("base64 decode accepts non-zero pad bits (RFC 4648 3.5 leaves it to the decoder)", "[text][base64]") {
  // "Zh==" is not what an encoder writes for "f" ("Zg=="), but decodes to the same byte.
  std::optional<std::string> d = base64_decode("Zh==");
  REQUIRE(d);
  CHECK(*d == "f");
}

TEST_CASE("log_escape keeps printable ASCII and escapes the rest", "[text][log]") {
  struct Case {
    std::string in;
    size_t max;
    std::string out;
  };
  const Case cases[] = {
      {"hello world", 256, "hello world"},
      {"", 256, ""},
      {"a\tb", 256, "a\\011b"},
      {"line\r\nforged: line", 256, "line\\015\\012forged: line"},
      {"nul\0byte"s, 256, "nul\\000byte"},
      {"back\\slash", 256, "back\\134slash"},  // so an escape in the output is never ambiguous
      {"del\x7f", 256, "del\\177"},
      {"caf\xc3\xa9", 256, "caf\\303\\251"},  // non-ASCII (UTF-8) is escaped bytewise
      {std::string(256, 'a'), 256, std::string(256, 'a')},
      {std::string(257, 'a'), 256, std::string(256, 'a') + "..."},
      {"abcdef", 3, "abc..."},
  };
  for (const Case& c : cases) {
    CAPTURE(c.in, c.max);
    CHECK(log_escape(c.in, c.max) == c.out);
  }
}

TEST_CASE("log_escape output is bounded even for hostile input", "[text][log]") {
  std::string hostile(100000, '\x01');
  std::string e = log_escape(hostile, 256);
  CHECK(e.size() <= 256 + 3 + 3);  // one escape may cross the limit
  CHECK(e.substr(e.size() - 3) == "...");
  for (char c : e) CHECK((c >= 0x20 && c < 0x7f));
}

TEST_CASE("split keeps empty pieces, split_any drops them", "[text][split]") {
  using V = std::vector<std::string>;
  CHECK(split("", ',') == V{""});
  CHECK(split(",", ',') == V{"", ""});
  CHECK(split("a,,b", ',') == V{"a", "", "b"});
  CHECK(split("a,b,", ',') == V{"a", "b", ""});
  CHECK(split("abc", ',') == V{"abc"});
  CHECK(split_any("", ", ").empty());
  CHECK(split_any(" , ,, ", ", ").empty());
  CHECK(split_any("a, b,,c", ", ") == V{"a", "b", "c"});
  CHECK(split_any("  $myhostname,\tlocalhost  ", ", \t") == V{"$myhostname", "localhost"});
  CHECK(join({}, ", ") == "");
  CHECK(join({"a"}, ", ") == "a");
  CHECK(join({"a", "", "b"}, ",") == "a,,b");
}

TEST_CASE("parse_u64 takes whole decimal numbers only", "[text][number]") {
  struct Case {
    const char* in;
    std::optional<uint64_t> out;
  };
  const Case cases[] = {
      {"0", 0},
      {"7", 7},
      {"007", 7},
      {"4294967296", 4294967296ull},
      {"18446744073709551615", UINT64_MAX},
      {"18446744073709551616", std::nullopt},   // UINT64_MAX + 1
      {"99999999999999999999", std::nullopt},   // 20 digits, overflows
      {"000000000000000000001", std::nullopt},  // more than 20 digits
      {"", std::nullopt},
      {"-1", std::nullopt},
      {"+1", std::nullopt},
      {" 1", std::nullopt},
      {"1 ", std::nullopt},
      {"1.0", std::nullopt},
      {"0x10", std::nullopt},
      {"1e3", std::nullopt},
      {"١", std::nullopt},  // a non-ASCII digit
  };
  for (const Case& c : cases) {
    CAPTURE(c.in);
    CHECK(parse_u64(c.in) == c.out);
  }
  CHECK_FALSE(parse_u64("1\0"s));
}

TEST_CASE("edit_distance is the Levenshtein distance", "[text]") {
  struct Case {
    const char* a;
    const char* b;
    size_t d;
  };
  const Case cases[] = {
      {"", "", 0},
      {"abc", "", 3},
      {"", "abc", 3},
      {"abc", "abc", 0},
      {"kitten", "sitting", 3},
      {"myhostnme", "myhostname", 1},
      {"mydomian", "mydomain", 2},
      {"smtpd_prot", "smtpd_port", 2},
      {"a", "b", 1},
  };
  for (const Case& c : cases) {
    CAPTURE(c.a, c.b);
    CHECK(edit_distance(c.a, c.b) == c.d);
    CHECK(edit_distance(c.b, c.a) == c.d);
  }
}

TEST_CASE("trim, case folding and prefixes", "[text]") {
  CHECK(trim("  a b \t\r\n") == "a b");
  CHECK(trim(" \t ") == "");
  CHECK(trim("") == "");
  CHECK(to_lower("MyHostName-1") == "myhostname-1");
  CHECK(to_lower("\xc3\x89") == "\xc3\x89");  // bytes above ASCII are left alone
  CHECK(iequals("EHLO", "ehlo"));
  CHECK_FALSE(iequals("EHLO", "ehl"));
  CHECK_FALSE(iequals("[", "{"));  // 0x5b vs 0x7b: only letters fold
  CHECK(istarts_with("STARTTLS now", "starttls"));
  CHECK_FALSE(istarts_with("STA", "starttls"));
  CHECK(hex_encode("\x00\xff\x10"s) == "00ff10");
}
