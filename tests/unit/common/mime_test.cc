#include "common/mime.h"

#include <catch2/catch.hpp>

#include "common/mime_charset.h"
#include "common/text.h"

using namespace tern::common::mime;
using Kind = Part::Kind;

namespace {

// What Thunderbird sends: a reply in text and HTML with a PDF and an image attached.
const char kThunderbird[] =
    "Message-ID: <3c1f0a8e-5b2d-4c61-9d4a-2f0e8b7a6c11@example.org>\n"
    "Date: Tue, 4 Jun 2024 10:15:42 +0200\n"
    "MIME-Version: 1.0\n"
    "User-Agent: Mozilla Thunderbird\n"
    "Content-Language: en-GB\n"
    "To: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.net>\n"
    "From: Alice Example <alice@example.org>\n"
    "Subject: =?UTF-8?Q?Quarterly_report_=E2=80=93_draft?=\n"
    "Content-Type: multipart/mixed;\n"
    " boundary=\"------------a1B2c3D4e5F6g7H8i9J0kLmN\"\n"
    "\n"
    "This is a multi-part message in MIME format.\n"
    "--------------a1B2c3D4e5F6g7H8i9J0kLmN\n"
    "Content-Type: multipart/alternative;\n"
    " boundary=\"------------0pQrStUvWxYz1A2b3C4d5E6f\"\n"
    "\n"
    "--------------0pQrStUvWxYz1A2b3C4d5E6f\n"
    "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Hi J=C3=BCrgen,\n"
    "\n"
    "here is the draft =E2=80=93 numbers are prelimin=\n"
    "ary.\n"
    "\n"
    "--------------0pQrStUvWxYz1A2b3C4d5E6f\n"
    "Content-Type: text/html; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "<html><body><p>Hi J\xc3\xbcrgen,</p></body></html>\n"
    "\n"
    "--------------0pQrStUvWxYz1A2b3C4d5E6f--\n"
    "--------------a1B2c3D4e5F6g7H8i9J0kLmN\n"
    "Content-Type: application/pdf;\n"
    " name*=UTF-8''Q2%E2%80%93report.pdf\n"
    "Content-Disposition: attachment;\n"
    " filename*=UTF-8''Q2%E2%80%93report.pdf\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoK\n"
    "PDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0\n"
    "\n"
    "--------------a1B2c3D4e5F6g7H8i9J0kLmN\n"
    "Content-Type: image/png; name=\"chart.png\"\n"
    "Content-Disposition: inline; filename=\"chart.png\"\n"
    "Content-Id: <part1.chart@example.org>\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\n"
    "\n"
    "--------------a1B2c3D4e5F6g7H8i9J0kLmN--\n";

// A message forwarded as an attachment, itself multipart, inside a multipart/mixed.
const char kForward[] =
    "From: Bob <bob@example.com>\r\n"
    "To: carol@example.com\r\n"
    "Subject: Fwd: lunch\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=outer\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "See below.\r\n"
    "--outer\r\n"
    "Content-Type: message/rfc822\r\n"
    "Content-Description: forwarded message\r\n"
    "\r\n"
    "From: Dave <dave@example.net>\r\n"
    "Subject: lunch\r\n"
    "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    "\r\n"
    "--inner\r\n"
    "Content-Type: text/plain; charset=iso-8859-1\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Caf=E9 at noon?\r\n"
    "--inner\r\n"
    "Content-Type: text/html; charset=iso-8859-1\r\n"
    "\r\n"
    "<p>Caf\xe9 at noon?</p>\r\n"
    "--inner--\r\n"
    "\r\n"
    "--outer--\r\n"
    "epilogue\r\n";

}  // namespace

TEST_CASE("a Thunderbird multipart/mixed with alternative and attachments", "[mime]") {
  // Parsed as stored (LF) and as served (CRLF): the same tree, sizes differing by the CRs.
  for (bool crlf : {false, true}) {
    std::string raw = crlf ? to_crlf(kThunderbird) : std::string(kThunderbird);
    Message m = Message::parse(raw);
    INFO("crlf=" << crlf);
    const Part& root = m.root();
    CHECK(root.kind == Kind::kMultipart);
    CHECK(root.content_type.subtype == "mixed");
    REQUIRE(root.children.size() == 3);
    CHECK(m.parts().size() == 6);
    CHECK_FALSE(m.limited());

    const Part& alt = m.part(root.children[0]);
    CHECK(alt.kind == Kind::kMultipart);
    CHECK(alt.content_type.subtype == "alternative");
    REQUIRE(alt.children.size() == 2);
    const Part& plain = m.part(alt.children[0]);
    const Part& html = m.part(alt.children[1]);
    std::string nl = crlf ? "\r\n" : "\n";
    CHECK(m.body_text(plain) == "Hi J=C3=BCrgen," + nl + nl + "here is the draft =E2=80=93 numbers are prelimin=" +
                                    nl + "ary." + nl);
    CHECK(plain.body_lines == 4);
    CHECK(plain.encoding == "quoted-printable");
    CHECK(m.text_body_utf8(plain) ==
          "Hi J\xc3\xbcrgen," + nl + nl + "here is the draft \xe2\x80\x93 numbers are preliminary." + nl);
    CHECK(html.content_type.subtype == "html");
    CHECK(m.body_text(html) == "<html><body><p>Hi J\xc3\xbcrgen,</p></body></html>" + nl);
    CHECK(html.body_lines == 1);
    CHECK(m.header_text(html) ==
          "Content-Type: text/html; charset=UTF-8" + nl + "Content-Transfer-Encoding: 8bit" + nl + nl);

    const Part& pdf = m.part(root.children[1]);
    CHECK(pdf.content_type.type == "application");
    CHECK(pdf.disposition.type == "attachment");
    CHECK(pdf.disposition.param("filename") == "Q2\xe2\x80\x93report.pdf");
    CHECK(pdf.content_type.find("name")->extended);
    bool clean = false;
    std::string pdf_bytes = m.decoded_body(pdf, &clean);
    CHECK(clean);
    CHECK(pdf_bytes.substr(0, 8) == "%PDF-1.4");

    const Part& png = m.part(root.children[2]);
    CHECK(png.id == "<part1.chart@example.org>");
    CHECK(png.disposition.type == "inline");
    CHECK(m.decoded_body(png).substr(1, 3) == "PNG");

    // Section numbers (RFC 3501 6.4.5).
    CHECK(m.find_section({}) == &root);
    CHECK(m.find_section({1}) == &alt);
    CHECK(m.find_section({1, 2}) == &html);
    CHECK(m.find_section({3}) == &png);
    CHECK(m.find_section({4}) == nullptr);
    CHECK(m.find_section({1, 3}) == nullptr);
    CHECK(m.find_section({2, 1}) == nullptr);
    CHECK(m.find_section({0}) == nullptr);

    std::string text = m.searchable_text();
    CHECK(text.find("preliminary") != std::string::npos);
    CHECK(text.find("J\xc3\xbcrgen") != std::string::npos);
    CHECK(text.find("JVBERi0") == std::string::npos);  // attachments are not text

    // The root's header: the envelope fields.
    CHECK(decode_header_text(*root.header.first("Subject")) == "Quarterly report \xe2\x80\x93 draft");
    CHECK(root.language == std::vector<std::string>{"en-GB"});
  }
}

TEST_CASE("a forwarded message/rfc822 with its own multipart", "[mime]") {
  Message m = Message::parse(kForward);
  const Part& root = m.root();
  REQUIRE(root.children.size() == 2);
  const Part& intro = m.part(root.children[0]);
  CHECK(m.body_text(intro) == "See below.");
  CHECK(intro.body_lines == 0);  // "See below." then the CRLF that belongs to the boundary

  const Part& fwd = m.part(root.children[1]);
  CHECK(fwd.kind == Kind::kMessage);
  CHECK(fwd.description == "forwarded message");
  REQUIRE(fwd.children.size() == 1);
  const Part& inner = m.part(fwd.children[0]);
  CHECK(inner.kind == Kind::kMultipart);
  CHECK(inner.header_begin == fwd.body_begin);
  CHECK(inner.body_end == fwd.body_end);
  CHECK(decode_header_text(*inner.header.first("subject")) == "lunch");
  // The encapsulated message runs to the CRLF before "--outer--".
  CHECK(m.body_text(fwd).substr(0, 28) == "From: Dave <dave@example.net");
  CHECK(m.body_text(fwd).substr(m.body_text(fwd).size() - 11) == "--inner--\r\n");
  REQUIRE(inner.children.size() == 2);
  const Part& qp = m.part(inner.children[0]);
  CHECK(m.text_body_utf8(qp) == "Caf\xc3\xa9 at noon?");
  CHECK(m.text_body_utf8(m.part(inner.children[1])) == "<p>Caf\xc3\xa9 at noon?</p>");

  // Sections through the encapsulated message.
  CHECK(m.find_section({2}) == &fwd);
  CHECK(m.message_of(fwd) == &inner);
  CHECK(m.find_section({2, 1}) == &qp);
  CHECK(m.find_section({2, 2}) == &m.part(inner.children[1]));
  CHECK(m.find_section({2, 3}) == nullptr);
  CHECK(m.find_section({1, 1}) == nullptr);
  CHECK(m.message_of(intro) == nullptr);
}

TEST_CASE("a plain RFC 822 message without MIME", "[mime]") {
  Message m = Message::parse("From: a@b\nSubject: hi\n\nline one\nline two\n");
  const Part& root = m.root();
  CHECK(root.kind == Kind::kLeaf);
  CHECK_FALSE(root.content_type_given);
  CHECK(root.content_type.type == "text");
  CHECK(root.content_type.subtype == "plain");
  CHECK(root.content_type.param("charset") == "us-ascii");
  CHECK(root.body_lines == 2);
  CHECK(m.body_text(root) == "line one\nline two\n");
  // A single-part message's body is its part 1.
  CHECK(m.find_section({1}) == &root);
  CHECK(m.find_section({2}) == nullptr);
  CHECK(m.find_section({1, 1}) == nullptr);
}

TEST_CASE("malformed multiparts still give a usable tree", "[mime]") {
  SECTION("missing close delimiter: the last part runs to the end") {
    Message m = Message::parse(
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n");
    REQUIRE(m.root().children.size() == 2);
    CHECK(m.body_text(m.part(m.root().children[1])) == "two\r\n");
  }
  SECTION("the boundary never appears: no parts, the body is the preamble") {
    Message m = Message::parse("Content-Type: multipart/mixed; boundary=nope\r\n\r\njust text\r\n");
    CHECK(m.root().kind == Kind::kMultipart);
    CHECK(m.root().children.empty());
    CHECK(m.body_text(m.root()) == "just text\r\n");
  }
  SECTION("multipart without a boundary parameter") {
    Message m = Message::parse("Content-Type: multipart/mixed\r\n\r\n--x\r\nbody\r\n");
    CHECK(m.root().kind == Kind::kMultipart);
    CHECK(m.root().children.empty());
  }
  SECTION("an inner multipart without its close delimiter ends at the outer boundary") {
    Message m = Message::parse(
        "Content-Type: multipart/mixed; boundary=outer\n\n"
        "--outer\n"
        "Content-Type: multipart/alternative; boundary=inner\n\n"
        "--inner\n\ninner one\n"
        "--outer\n\nouter two\n"
        "--outer--\n");
    REQUIRE(m.root().children.size() == 2);
    const Part& alt = m.part(m.root().children[0]);
    REQUIRE(alt.children.size() == 1);
    CHECK(m.body_text(m.part(alt.children[0])) == "inner one");
    CHECK(m.body_text(m.part(m.root().children[1])) == "outer two");
  }
  SECTION("a boundary that is a prefix of another does not cut parts") {
    Message m = Message::parse(
        "Content-Type: multipart/mixed; boundary=ab\n\n"
        "--ab\nContent-Type: multipart/mixed; boundary=abc\n\n"
        "--abc\n\nx\n--abcd\n--abc--\n"
        "--ab--\n");
    REQUIRE(m.root().children.size() == 1);
    const Part& in = m.part(m.root().children[0]);
    REQUIRE(in.children.size() == 1);
    CHECK(m.body_text(m.part(in.children[0])) == "x\n--abcd");
  }
  SECTION("parts without a header, without a blank line, or empty") {
    Message m = Message::parse(
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nno blank line here\r\n--b\r\n--b\r\n\r\nlast\r\n--b--\r\n");
    REQUIRE(m.root().children.size() == 3);
    const Part& p1 = m.part(m.root().children[0]);
    CHECK(p1.body_size() == 0);
    CHECK(m.header_text(p1) == "no blank line here\r\n");
    const Part& p2 = m.part(m.root().children[1]);
    CHECK(p2.header_size() == 0);
    CHECK(p2.body_size() == 0);
    CHECK(m.body_text(m.part(m.root().children[2])) == "last");
  }
  SECTION("boundary lines with transport padding; junk after a boundary is not one") {
    Message m = Message::parse(
        "Content-Type: multipart/mixed; boundary=b\n\n--b \t\n\none\n--b junk\n--b--  \n");
    REQUIRE(m.root().children.size() == 1);
    CHECK(m.body_text(m.part(m.root().children[0])) == "one\n--b junk");
  }
  SECTION("message/rfc822 with a base64 encoding is a leaf") {
    Message m = Message::parse("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nRnJvbTogYQ==\n");
    CHECK(m.root().kind == Kind::kLeaf);
  }
  SECTION("multipart/digest parts default to message/rfc822") {
    Message m = Message::parse(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nbody one\n--d--\n");
    REQUIRE(m.root().children.size() == 1);
    const Part& p = m.part(m.root().children[0]);
    CHECK(p.kind == Kind::kMessage);
    CHECK(decode_header_text(*m.part(p.children[0]).header.first("Subject")) == "one");
  }
  SECTION("NUL bytes, 8-bit headers and bare CR") {
    std::string raw = std::string("Subject: caf\xe9\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n") +
                      std::string("a\0b\rc\r\n", 7);
    Message m = Message::parse(raw);
    CHECK(m.body_text(m.root()).size() == 7);
    CHECK(decode_header_text(*m.root().header.first("subject")) == "caf\xc3\xa9");
    CHECK(is_valid_utf8(m.searchable_text()));
  }
  SECTION("empty message") {
    Message m = Message::parse("");
    CHECK(m.parts().size() == 1);
    CHECK(m.root().body_size() == 0);
  }
  SECTION("an unusable Content-Type falls back to text/plain") {
    Message m = Message::parse("Content-Type: ???\n\nx");
    CHECK(m.root().content_type.type == "text");
    CHECK_FALSE(m.root().content_type_given);
  }
}

TEST_CASE("absurd nesting and part counts are bounded", "[mime]") {
  SECTION("100,000 nested multiparts") {
    std::string raw;
    for (int i = 0; i < 100000; ++i) raw += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\n\n--b" + std::to_string(i) + "\n";
    Message m = Message::parse(raw);
    CHECK(m.limited());
    size_t max_depth = 0;
    for (const Part& p : m.parts()) max_depth = std::max(max_depth, p.depth);
    CHECK(max_depth == Limits{}.max_depth);
  }
  SECTION("10,000 nested message/rfc822") {
    std::string raw;
    for (int i = 0; i < 10000; ++i) raw += "Content-Type: message/rfc822\n\n";
    raw += "body\n";
    Limits lim;
    lim.max_depth = 20;
    Message m = Message::parse(raw, lim);
    CHECK(m.limited());
    CHECK(m.parts().size() == 21);
    CHECK(m.parts().back().kind == Kind::kLeaf);
  }
  SECTION("more parts than allowed") {
    std::string raw = "Content-Type: multipart/mixed; boundary=b\n\n";
    for (int i = 0; i < 500; ++i) raw += "--b\n\npart\n";
    raw += "--b--\n";
    Limits lim;
    lim.max_parts = 100;
    Message m = Message::parse(raw, lim);
    CHECK(m.limited());
    CHECK(m.parts().size() == 100);
    CHECK(m.root().children.size() == 99);
  }
}

TEST_CASE("to_crlf normalises line ends", "[mime]") {
  CHECK(to_crlf("a\nb\r\nc\rd\n") == "a\r\nb\r\nc\rd\r\n");
  CHECK(to_crlf("\n\n") == "\r\n\r\n");
  CHECK(to_crlf("") == "");
  CHECK(to_crlf("no newline") == "no newline");
}

TEST_CASE("crlf_size is the length to_crlf gives, for any mix of line ends", "[mime][crlf]") {
  // Stored files come as LF (ours, Postfix, Dovecot), CRLF (migration tools, some
  // MDAs) or a mix, with stray CRs; the size reported must be what is served.
  CHECK(crlf_size("Subject: crlf-file\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\n") == 47);
  CHECK(crlf_size("a\nb\n") == 6);
  CHECK(crlf_size("x\r\r\n") == 4);
  CHECK(crlf_size("\n") == 2);
  CHECK(crlf_size("") == 0);
  CHECK(count_bare_lf("\nx\r\n", true) == 0);  // the CR before the chunk counts
  CHECK(count_bare_lf("\nx\r\n", false) == 1);
  // Every string over {a, CR, LF} up to 8 bytes: the size matches the rendering, and
  // counting in two chunks at any split gives the same count.
  const char alphabet[] = {'a', '\r', '\n'};
  for (size_t len = 0; len <= 8; ++len) {
    size_t total = 1;
    for (size_t k = 0; k < len; ++k) total *= 3;
    for (size_t code = 0; code < total; ++code) {
      std::string s;
      for (size_t k = 0, c = code; k < len; ++k, c /= 3) s += alphabet[c % 3];
      INFO("input bytes: " << tern::common::log_escape(s));
      REQUIRE(crlf_size(s) == to_crlf(s).size());
      for (size_t cut = 0; cut <= s.size(); ++cut) {
        std::string_view a = std::string_view(s).substr(0, cut), b = std::string_view(s).substr(cut);
        REQUIRE(count_bare_lf(a) + count_bare_lf(b, !a.empty() && a.back() == '\r') == count_bare_lf(s));
      }
    }
  }
}

TEST_CASE("to_lf keeps what to_crlf needs to give an APPENDed message back", "[mime][crlf]") {
  CHECK(to_lf("Subject: cr\r\n\r\nx\r\r\ny\r\n") == "Subject: cr\n\nx\r\r\ny\n");
  CHECK(to_crlf(to_lf("Subject: cr\r\n\r\nx\r\r\ny\r\n")) == "Subject: cr\r\n\r\nx\r\r\ny\r\n");
  CHECK(to_lf("a\r\nb\rc\n") == "a\nb\rc\n");  // a bare LF stays; it is served as CRLF
  CHECK(to_lf("\r\n") == "\n");
  CHECK(to_lf("\r") == "\r");
  // Exhaustively: a message without bare LF comes back byte for byte, and its
  // stored form's crlf_size() is the appended length.
  const char alphabet[] = {'a', '\r', '\n'};
  for (size_t len = 0; len <= 9; ++len) {
    size_t total = 1;
    for (size_t k = 0; k < len; ++k) total *= 3;
    for (size_t code = 0; code < total; ++code) {
      std::string s;
      for (size_t k = 0, c = code; k < len; ++k, c /= 3) s += alphabet[c % 3];
      if (count_bare_lf(s) != 0) continue;
      INFO("input bytes: " << tern::common::log_escape(s));
      const std::string stored = to_lf(s);
      REQUIRE(to_crlf(stored) == s);
      REQUIRE(crlf_size(stored) == s.size());
    }
  }
}

TEST_CASE("part ranges nest even when a boundary follows a header's blank line", "[mime]") {
  // Found by mime_fuzz: the encapsulated message's header ends with the blank line
  // whose line end is also the one before "--x--"; children must still lie inside
  // their parents.
  Message m = Message::parse(
      "Content-Type: multipart/mixed; boundary=x\n\n--x\nno blank\n--x\n--xjunk\n"
      "Content-Type: multipart/digest; boundary=y\n\n--y\n\nSubject: d\n\n--x--");
  for (const Part& p : m.parts()) {
    CHECK(p.header_begin <= p.body_begin);
    CHECK(p.body_begin <= p.body_end);
    CHECK(p.body_end <= m.raw().size());
    if (p.parent) {
      CHECK(p.header_begin >= m.part(*p.parent).body_begin);
      CHECK(p.body_end <= m.part(*p.parent).body_end);
    }
  }
  REQUIRE(m.root().children.size() == 2);
  const Part& digest = m.part(m.root().children[1]);
  CHECK(digest.content_type.subtype == "digest");
  REQUIRE(digest.children.size() == 1);
  CHECK(m.part(digest.children[0]).kind == Part::Kind::kMessage);
}
