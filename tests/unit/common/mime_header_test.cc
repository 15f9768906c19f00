#include "common/mime_header.h"

#include <catch2/catch.hpp>

#include "common/mime_decode.h"

using namespace tern::common::mime;

TEST_CASE("parse_header_section splits fields and keeps folding", "[mime][header]") {
  std::string text =
      "Received: from a\r\n"
      "\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
      "Subject: hello\r\n"
      "  world\r\n"
      "X-Empty:\r\n"
      "From : someone@example.org\r\n"
      "\r\n"
      "body\r\n";
  HeaderSection h = parse_header_section(text);
  REQUIRE(h.fields.size() == 4);
  CHECK(h.has_blank);
  CHECK(h.size == text.find("body"));
  CHECK(h.fields[0].name == "Received");
  CHECK(h.fields[0].value == " from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000");
  CHECK(h.fields[1].value == " hello\r\n  world");
  CHECK(h.fields[2].name == "X-Empty");
  CHECK(h.fields[2].value.empty());
  CHECK(h.fields[3].name == "From");  // obs-optional blanks before the colon
  CHECK(h.first("subject").has_value());
  CHECK(unfold(*h.first("SUBJECT")) == "hello  world");
  CHECK_FALSE(h.first("To").has_value());
}

TEST_CASE("parse_header_section survives malformed headers", "[mime][header]") {
  SECTION("bare LF line ends") {
    HeaderSection h = parse_header_section("A: 1\nB: 2\n\nbody");
    REQUIRE(h.fields.size() == 2);
    CHECK(h.size == 11);
    CHECK(h.fields[1].value == " 2");
  }
  SECTION("no blank line: the whole input is header") {
    HeaderSection h = parse_header_section("A: 1\r\nB: 2");
    CHECK(h.fields.size() == 2);
    CHECK_FALSE(h.has_blank);
    CHECK(h.size == 10);
  }
  SECTION("lines without colon and leading continuation are not fields") {
    HeaderSection h = parse_header_section("  orphan continuation\r\nFrom mbox line\r\nA: 1\r\nbad name: 2\r\n\r\n");
    REQUIRE(h.fields.size() == 1);
    CHECK(h.fields[0].name == "A");
  }
  SECTION("NUL and 8-bit bytes in values are kept") {
    std::string text("Subject: a\0b \xe9\r\n\r\n", 18);
    HeaderSection h = parse_header_section(text);
    REQUIRE(h.fields.size() == 1);
    CHECK(h.fields[0].value == std::string_view(" a\0b \xe9", 6));
  }
  SECTION("field count is bounded") {
    std::string text;
    for (int i = 0; i < 50; ++i) text += "X-A: 1\r\n";
    HeaderSection h = parse_header_section(text + "\r\n", 10);
    CHECK(h.fields.size() == 10);
    CHECK(h.truncated);
    CHECK(h.size == text.size() + 2);
  }
  SECTION("empty input") {
    HeaderSection h = parse_header_section("");
    CHECK(h.fields.empty());
    CHECK(h.size == 0);
  }
}

TEST_CASE("decode_header_text decodes RFC 2047 encoded-words", "[mime][header]") {
  struct Case {
    const char* raw;
    const char* want;
  };
  const Case cases[] = {
      {"plain text", "plain text"},
      {"=?utf-8?q?caf=C3=A9?=", "caf\xc3\xa9"},
      {"=?UTF-8?B?Y2Fmw6k=?=", "caf\xc3\xa9"},
      {"=?iso-8859-1?q?Andr=E9?= Pirard", "Andr\xc3\xa9 Pirard"},
      // RFC 2047 section 8 examples: blanks between adjacent words vanish.
      {"(=?ISO-8859-1?Q?a?=)", "(a)"},
      {"(=?ISO-8859-1?Q?a?= b)", "(a b)"},
      {"(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)", "(ab)"},
      {"(=?ISO-8859-1?Q?a?=  \r\n   =?ISO-8859-1?Q?b?=)", "(ab)"},
      {"(=?ISO-8859-1?Q?a_b?=)", "(a b)"},
      {"(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)", "(a b)"},
      // KOI8-R and ISO-2022-JP words.
      {"=?koi8-r?B?8NLJ18XU?=", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"},
      {"=?ISO-2022-JP?B?GyRCRnxLXBsoQg==?=", "\xe6\x97\xa5\xe6\x9c\xac"},
      // A UTF-8 character split across two words is joined before conversion.
      {"=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "caf\xc3\xa9"},
      // RFC 2231 language suffix.
      {"=?US-ASCII*EN?Q?Keith_Moore?=", "Keith Moore"},
      // Glued to text (not RFC-conformant, but common).
      {"Re:=?utf-8?q?x?=", "Re:x"},
      // Broken words stay as written.
      {"=?utf-8?x?abc?=", "=?utf-8?x?abc?="},
      {"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"},
      {"=??q?abc?=", "=??q?abc?="},
      // Unknown charset: the bytes, repaired as UTF-8.
      {"=?x-unknown-cs?q?abc?=", "abc"},
      // Raw UTF-8 (RFC 6532) and raw Latin-1.
      {"caf\xc3\xa9", "caf\xc3\xa9"},
      {"caf\xe9", "caf\xc3\xa9"},
      // Folding and control bytes introduced by decoding.
      {"  folded\r\n line  ", "folded line"},
      {"=?utf-8?q?a=0D=0Ab=00c?=", "a  b c"},
  };
  for (const Case& c : cases) {
    INFO(c.raw);
    CHECK(decode_header_text(c.raw) == c.want);
  }
}

TEST_CASE("parse_content_type reads type, subtype and parameters", "[mime][header]") {
  ContentType ct = parse_content_type(" Text/HTML; charset=\"UTF-8\"; format=flowed (comment)");
  CHECK(ct.type == "text");
  CHECK(ct.subtype == "html");
  REQUIRE(ct.params.size() == 2);
  CHECK(ct.params[0].name == "charset");
  CHECK(ct.params[0].value == "UTF-8");
  CHECK(ct.params[1].value == "flowed");
  CHECK(ct.param("CHARSET") == "UTF-8");

  ContentType mp = parse_content_type("multipart/mixed;\r\n boundary=\"----=_Part_0_12345.678\"");
  CHECK(mp.type == "multipart");
  CHECK(mp.find("boundary")->value == "----=_Part_0_12345.678");

  ContentType q = parse_content_type("text/plain; name=\"quoted\\\"string\"; x=a\\b");
  CHECK(q.find("name")->value == "quoted\"string");

  // Unquoted blanks in a value, a parameter without '=', empty parameters.
  ContentType sloppy = parse_content_type("application/pdf;; name=my file.pdf; junk; size=10;");
  REQUIRE(sloppy.params.size() == 2);
  CHECK(sloppy.params[0].value == "my file.pdf");
  CHECK(sloppy.params[1].name == "size");

  CHECK(parse_content_type("").type.empty());
  CHECK(parse_content_type("text").type.empty());
  CHECK(parse_content_type("/plain").type.empty());
  CHECK(parse_content_type("text/").type.empty());
}

TEST_CASE("RFC 2231 parameters are joined and decoded", "[mime][header]") {
  // RFC 2231 examples.
  ContentType a = parse_content_type(
      "message/external-body; access-type=URL;\r\n"
      " URL*0=\"ftp://\";\r\n"
      " URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"");
  REQUIRE(a.find("url"));
  CHECK(a.find("url")->value == "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar");
  CHECK_FALSE(a.find("url")->extended);

  ContentType b = parse_content_type("application/x-stuff; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A");
  CHECK(b.find("title")->extended);
  CHECK(b.param("title") == "This is ***fun***");

  ContentType c = parse_content_type(
      "application/x-stuff;\r\n"
      " title*0*=us-ascii'en'This%20is%20even%20more%20;\r\n"
      " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\r\n"
      " title*2=\"isn't it!\"");
  CHECK(c.param("title") == "This is even more ***fun*** isn't it!");
  // The joined encoded form is what BODYSTRUCTURE shows.
  CHECK(c.find("title")->value == "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!");

  ContentType d = parse_content_disposition("attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf");
  CHECK(d.type == "attachment");
  CHECK(d.param("filename") == "\xe2\x82\xac rates.pdf");

  // Out-of-order sections are sorted; a gap ends the value.
  ContentType e = parse_content_type("text/plain; n*1=b; n*0=a; n*3=d");
  CHECK(e.param("n") == "ab");

  // Encoded-words in quotes (not RFC-conformant, very common).
  ContentType f = parse_content_disposition("attachment; filename=\"=?utf-8?B?w6l0w6kucGRm?=\"");
  CHECK(f.param("filename") == "\xc3\xa9t\xc3\xa9.pdf");
}

TEST_CASE("Content-Transfer-Encoding and Content-Language", "[mime][header]") {
  CHECK(parse_content_transfer_encoding(" Base64") == "base64");
  CHECK(parse_content_transfer_encoding("quoted-printable (comment)") == "quoted-printable");
  CHECK(parse_content_transfer_encoding("?invalid") == "");
  CHECK(parse_content_transfer_encoding("7bit junk") == "");
  CHECK(parse_content_transfer_encoding("") == "");
  CHECK(parse_content_language("en, fi, se") == std::vector<std::string>{"en", "fi", "se"});
  CHECK(parse_content_language("de-CH") == std::vector<std::string>{"de-CH"});
}

TEST_CASE("FieldLexer handles comments, quotes and their abuse", "[mime][header]") {
  FieldLexer lex("a (comment (nested) \\) ) \"q\\\"x\" [1.2.3.4] <");
  CHECK(lex.next().text == "a");
  FieldLexer::Token q = lex.next();
  CHECK(q.kind == FieldLexer::Kind::kQuoted);
  CHECK(q.text == "q\"x");
  CHECK(q.space_before);
  CHECK(lex.last_comment() == "comment (nested) ) ");
  CHECK(lex.next().kind == FieldLexer::Kind::kDomainLiteral);
  CHECK(lex.next().text == "<");
  CHECK(lex.next().kind == FieldLexer::Kind::kEnd);

  // 100,000 opening parentheses: one linear pass, no recursion.
  std::string deep = std::string(100000, '(') + "x";
  FieldLexer d(deep);
  CHECK(d.next().kind == FieldLexer::Kind::kEnd);
  // Unterminated quote runs to the end.
  FieldLexer u("\"never closed");
  CHECK(u.next().text == "never closed");
}

TEST_CASE("base64 and quoted-printable decoding", "[mime][decode]") {
  std::string out;
  CHECK(decode_base64("aGVsbG8gd29ybGQ=", out));
  CHECK(out == "hello world");
  out.clear();
  CHECK(decode_base64("aGVs\r\nbG8g\r\nd29y\r\nbGQ=\r\n", out));
  CHECK(out == "hello world");
  out.clear();
  CHECK_FALSE(decode_base64("aGVsbG8gd29ybGQ", out));  // missing padding: decoded anyway
  CHECK(out == "hello world");
  out.clear();
  CHECK_FALSE(decode_base64("aGVs*bG8=", out));  // junk byte skipped
  CHECK(out == "hello");
  out.clear();
  CHECK(decode_base64("YQ==Yg==", out));  // concatenated blocks
  CHECK(out == "ab");
  out.clear();
  CHECK_FALSE(decode_base64("Y", out));
  CHECK(out.empty());

  out.clear();
  CHECK(decode_quoted_printable("caf=C3=A9 =\r\nsoft break\r\nhard   \r\nend", out));
  CHECK(out == "caf\xc3\xa9 soft break\r\nhard\r\nend");
  out.clear();
  CHECK(decode_quoted_printable("lower=c3=a9\n", out));
  CHECK(out == "lower\xc3\xa9\n");
  out.clear();
  CHECK_FALSE(decode_quoted_printable("bad=ZZ and =4", out));
  CHECK(out == "bad=ZZ and =4");
  out.clear();
  CHECK(decode_quoted_printable("a_b=5F", out, /*q_encoding=*/true));
  CHECK(out == "a b_");

  out.clear();
  CHECK(decode_body("7bit", "as is", out));
  CHECK(out == "as is");
  out.clear();
  CHECK_FALSE(decode_body("x-uuencode", "begin", out));
  CHECK(known_encoding("binary"));
  CHECK_FALSE(known_encoding("x-uuencode"));
}
