#include "mra/imap_render.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include "mra/imap_parser.h"

using namespace tern::mra::imap;
namespace mime = tern::common::mime;

namespace {

std::string envelope_of(const std::string& raw, RenderMode mode = {}) {
  mime::Message m = mime::Message::parse(raw);
  std::string out;
  append_envelope(out, m.root().header, mode);
  return out;
}

// A forwarded message, assembled from named pieces so the expected sizes below
// come from the pieces, not from the parser under test.
const std::string kInner =
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
    "--inner--\r\n";
const std::string kOuterHeader =
    "From: Bob <bob@example.com>\r\n"
    "To: carol@example.com\r\n"
    "Subject: Fwd: lunch\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=outer\r\n"
    "\r\n";
const std::string kPart2Mime = "Content-Type: message/rfc822\r\nContent-Description: forwarded message\r\n\r\n";
const std::string kForward = kOuterHeader + "--outer\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee below.\r\n--outer\r\n" +
                             kPart2Mime + kInner + "\r\n--outer--\r\nepilogue\r\n";

std::string content(const mime::Message& m, const std::string& fetch_item) {
  // Parse the section syntax with the real command parser.
  ImapReader r;
  r.feed("a FETCH 1 (" + fetch_item + ")\r\n");
  REQUIRE(r.next() == ImapReader::Status::kCommand);
  ParseResult pr = parse_command(r.command());
  REQUIRE(std::holds_alternative<Command>(pr));
  const FetchAtt& att = std::get<FetchArgs>(std::get<Command>(pr).args).atts.at(0);
  SectionContent c = section_content(m, att.section);
  if (!c.exists) return "NIL";
  return std::string(apply_partial(c.data(), att.partial));
}

}  // namespace

TEST_CASE("strings are quoted when they can be, literals otherwise", "[imap][render]") {
  auto str = [](std::string_view s, bool utf8 = false) {
    std::string out;
    append_string(out, s, RenderMode{utf8});
    return out;
  };
  CHECK(str("plain") == "\"plain\"");
  CHECK(str("") == "\"\"");
  CHECK(str("say \"hi\" \\o/") == "\"say \\\"hi\\\" \\\\o/\"");
  CHECK(str("two\r\nlines") == "{10}\r\ntwo\r\nlines");
  CHECK(str("caf\xc3\xa9") == "{5}\r\ncaf\xc3\xa9");           // 8-bit: a literal in IMAP4rev1
  CHECK(str("caf\xc3\xa9", true) == "\"caf\xc3\xa9\"");        // quoted in IMAP4rev2
  CHECK(str("caf\xe9", true) == "{4}\r\ncaf\xe9");             // not UTF-8: still a literal
  CHECK(str(std::string("a\0b", 3)) == "{3}\r\na\x80" "b");    // NUL never goes out
  CHECK(str(std::string(2000, 'x')).substr(0, 8) == "{2000}\r\n");
  std::string lit8;
  append_literal8(lit8, std::string("a\0b", 3));
  CHECK(lit8 == std::string("~{3}\r\na\0b", 9));
  std::string nil;
  append_nstring(nil, std::nullopt);
  CHECK(nil == "NIL");
  std::string as;
  append_astring(as, "INBOX");
  append_astring(as, "My Box");
  append_astring(as, "NIL");
  append_astring(as, "");
  CHECK(as == "INBOX\"My Box\"\"NIL\"\"\"");
}

TEST_CASE("flag lists and INTERNALDATE", "[imap][render]") {
  CHECK(format_flag_list({}) == "()");
  CHECK(format_flag_list({"\\Seen", "$Forwarded"}) == "(\\Seen $Forwarded)");
  CHECK(format_internal_date(837596665, -420) == "\"17-Jul-1996 02:44:25 -0700\"");
  CHECK(format_internal_date(0) == "\"01-Jan-1970 00:00:00 +0000\"");
  CHECK(format_internal_date(1700000000, 330) == "\"15-Nov-2023 03:43:20 +0530\"");
}

TEST_CASE("ENVELOPE follows RFC 3501 7.4.2", "[imap][render]") {
  std::string raw =
      "Date: Tue, 4 Jun 2024 10:15:42 +0200\r\n"
      "From: \"Alice Example\" <alice@example.org>\r\n"
      "To: =?UTF-8?Q?J=C3=BCrgen?= <juergen@example.net>, bob@example.com\r\n"
      "Cc: Team: carol@example.com, Dave <dave@example.com>;\r\n"
      "Subject: Quarterly\r\n"
      " report\r\n"
      "Message-ID: <123@example.org>\r\n"
      "In-Reply-To: <120@example.org>\r\n"
      "\r\nbody\r\n";
  const char* alice = "((\"Alice Example\" NIL \"alice\" \"example.org\"))";
  CHECK(envelope_of(raw) ==
        std::string("(\"Tue, 4 Jun 2024 10:15:42 +0200\" \"Quarterly report\" ") + alice + " " + alice + " " + alice +
            " ((\"=?UTF-8?Q?J=C3=BCrgen?=\" NIL \"juergen\" \"example.net\")(NIL NIL \"bob\" \"example.com\"))"
            " ((NIL NIL \"Team\" NIL)(NIL NIL \"carol\" \"example.com\")(\"Dave\" NIL \"dave\" \"example.com\")(NIL NIL NIL NIL))"
            " NIL \"<120@example.org>\" \"<123@example.org>\")");

  // Sender and Reply-To of their own; Bcc; an address without domain; a route.
  std::string raw2 =
      "From: a@x.test\nSender: s@x.test\nReply-To: <@relay.test:r@x.test>\nBcc: root\n\n";
  CHECK(envelope_of(raw2) ==
        "(NIL NIL ((NIL NIL \"a\" \"x.test\")) ((NIL NIL \"s\" \"x.test\")) ((NIL \"@relay.test\" \"r\" \"x.test\")) "
        "NIL NIL ((NIL NIL \"root\" \"MISSING_DOMAIN\")) NIL NIL)");

  CHECK(envelope_of("\r\nno header\r\n") == "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
  // 8-bit and quotes.
  CHECK(envelope_of("Subject: caf\xc3\xa9 \"q\"\n\n") == "(NIL {9}\r\ncaf\xc3\xa9 \"q\" NIL NIL NIL NIL NIL NIL NIL NIL)");
  CHECK(envelope_of("Subject: caf\xc3\xa9 \"q\"\n\n", RenderMode{true}) ==
        "(NIL \"caf\xc3\xa9 \\\"q\\\"\" NIL NIL NIL NIL NIL NIL NIL NIL)");
  CHECK(envelope_of("Subject:\n\n") == "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
}

TEST_CASE("BODYSTRUCTURE and BODY of a forwarded multipart", "[imap][render]") {
  mime::Message m = mime::Message::parse(kForward);
  const std::string dave = "((\"Dave\" NIL \"dave\" \"example.net\"))";
  const std::string inner_env = "(NIL \"lunch\" " + dave + " " + dave + " " + dave + " NIL NIL NIL NIL NIL)";
  const std::string inner_size = std::to_string(kInner.size());
  const std::string inner_lines = std::to_string(std::count(kInner.begin(), kInner.end(), '\n'));
  std::string bs;
  append_body_structure(bs, m, m.root(), true);
  CHECK(bs ==
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0 NIL NIL NIL NIL)"
        "(\"message\" \"rfc822\" NIL NIL \"forwarded message\" \"7bit\" " + inner_size + " " + inner_env +
        " ((\"text\" \"plain\" (\"charset\" \"iso-8859-1\") NIL NIL \"quoted-printable\" 15 0 NIL NIL NIL NIL)"
        "(\"text\" \"html\" (\"charset\" \"iso-8859-1\") NIL NIL \"7bit\" 20 0 NIL NIL NIL NIL)"
        " \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL) " + inner_lines + " NIL NIL NIL NIL)"
        " \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)");
  std::string body;
  append_body_structure(body, m, m.root(), false);
  CHECK(body ==
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 0)"
        "(\"message\" \"rfc822\" NIL NIL \"forwarded message\" \"7bit\" " + inner_size + " " + inner_env +
        " ((\"text\" \"plain\" (\"charset\" \"iso-8859-1\") NIL NIL \"quoted-printable\" 15 0)"
        "(\"text\" \"html\" (\"charset\" \"iso-8859-1\") NIL NIL \"7bit\" 20 0) \"alternative\") " + inner_lines + ")"
        " \"mixed\")");
}

TEST_CASE("BODYSTRUCTURE extension data and edge cases", "[imap][render]") {
  auto bs = [](const std::string& raw) {
    mime::Message m = mime::Message::parse(raw);
    std::string out;
    append_body_structure(out, m, m.root(), true);
    return out;
  };
  // Every extension field of a leaf part, RFC 2231 parameters kept encoded.
  CHECK(bs("Content-Type: application/pdf; name*=UTF-8''%E2%82%AC.pdf\r\n"
           "Content-Transfer-Encoding: BASE64\r\n"
           "Content-ID: <id@x>\r\n"
           "Content-Description: the \"bill\"\r\n"
           "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
           "Content-Disposition: attachment; filename=\"bill.pdf\"; size=4\r\n"
           "Content-Language: en, de\r\n"
           "Content-Location: http://example.com/bill.pdf\r\n"
           "\r\nQUJD\r\n") ==
        "(\"application\" \"pdf\" (\"name*\" \"UTF-8''%E2%82%AC.pdf\") \"<id@x>\" \"the \\\"bill\\\"\" \"base64\" 6 "
        "\"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"attachment\" (\"filename\" \"bill.pdf\" \"size\" \"4\")) (\"en\" \"de\") "
        "\"http://example.com/bill.pdf\")");
  // A text part without charset gets the default; a non-text part without params gets NIL.
  CHECK(bs("Content-Type: text/plain; format=flowed\n\nx\n") ==
        "(\"text\" \"plain\" (\"format\" \"flowed\" \"charset\" \"us-ascii\") NIL NIL \"7bit\" 2 1 NIL NIL NIL NIL)");
  CHECK(bs("Content-Type: image/png\n\n") == "(\"image\" \"png\" NIL NIL NIL \"7bit\" 0 NIL NIL NIL NIL)");
  // A multipart whose boundary never appears: one empty text part stands in (1*body).
  CHECK(bs("Content-Type: multipart/mixed; boundary=zz\n\nno parts\n") ==
        "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) \"mixed\" "
        "(\"boundary\" \"zz\") NIL NIL NIL)");
  // A message/rfc822 the parser did not open (forbidden encoding) keeps the members
  // its media type requires: envelope, body, lines.
  CHECK(bs("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n") ==
        "(\"message\" \"rfc822\" NIL NIL NIL \"base64\" 17 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
        "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL) 1 NIL NIL NIL NIL)");
  // A parameter value with 8-bit bytes goes out as a literal.
  CHECK(bs("Content-Type: text/plain; name=\"caf\xc3\xa9\"\n\n") ==
        "(\"text\" \"plain\" (\"name\" {5}\r\ncaf\xc3\xa9 \"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)");
}

TEST_CASE("BODY[section] contents (RFC 3501 6.4.5)", "[imap][render]") {
  mime::Message m = mime::Message::parse(kForward);
  CHECK(content(m, "BODY[]") == kForward);
  CHECK(content(m, "BODY[]<0.4>") == "From");
  CHECK(content(m, "BODY[]<6.3>") == "Bob");
  CHECK(content(m, "BODY[]<100000.3>") == "");
  CHECK(content(m, "BODY[HEADER]") == kOuterHeader);
  CHECK(content(m, "BODY[TEXT]") == kForward.substr(kOuterHeader.size()));
  CHECK(content(m, "BODY[1]") == "See below.");
  CHECK(content(m, "BODY[1.MIME]") == "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
  CHECK(content(m, "BODY[2]") == kInner);
  CHECK(content(m, "BODY[2.MIME]") == kPart2Mime);
  CHECK(content(m, "BODY[2.HEADER]") == kInner.substr(0, kInner.find("\r\n\r\n") + 4));
  CHECK(content(m, "BODY[2.TEXT]") == kInner.substr(kInner.find("\r\n\r\n") + 4));
  CHECK(content(m, "BODY[2.1]") == "Caf=E9 at noon?");
  CHECK(content(m, "BODY[2.2]") == "<p>Caf\xe9 at noon?</p>");
  CHECK(content(m, "BODY[2.1.MIME]") ==
        "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
  CHECK(content(m, "BODY[HEADER.FIELDS (SUBJECT to)]") == "To: carol@example.com\r\nSubject: Fwd: lunch\r\n\r\n");
  CHECK(content(m, "BODY[HEADER.FIELDS.NOT (Content-Type MIME-Version)]") ==
        "From: Bob <bob@example.com>\r\nTo: carol@example.com\r\nSubject: Fwd: lunch\r\n\r\n");
  CHECK(content(m, "BODY[2.HEADER.FIELDS (Subject)]") == "Subject: lunch\r\n\r\n");
  CHECK(content(m, "BODY[HEADER.FIELDS (X-None)]") == "\r\n");
  CHECK(content(m, "BODY[3]") == "NIL");
  CHECK(content(m, "BODY[1.HEADER]") == "NIL");  // part 1 is not a message/rfc822
  CHECK(content(m, "BODY[1.1]") == "NIL");
  CHECK(content(m, "BODY[2.3]") == "NIL");
}

TEST_CASE("filter_header keeps folded lines whole", "[imap][render]") {
  std::string h = "Received: a\r\n\tb\r\nSubject: s\r\nreceived: c\r\nX-Long: 1\r\n 2\r\n\r\n";
  CHECK(filter_header(h, {"RECEIVED"}, false) == "Received: a\r\n\tb\r\nreceived: c\r\n\r\n");
  CHECK(filter_header(h, {"received"}, true) == "Subject: s\r\nX-Long: 1\r\n 2\r\n\r\n");
  CHECK(filter_header("A: 1\nB: 2\n\n", {"b"}, false) == "B: 2\n\r\n");
}

TEST_CASE("BINARY decodes leaf parts (RFC 3516)", "[imap][render]") {
  mime::Message m = mime::Message::parse(kForward);
  Section s21;
  s21.part = {2, 1};
  BinaryContent b = binary_content(m, s21);
  CHECK(b.status == BinaryContent::Status::kOk);
  CHECK(b.data == "Caf\xe9 at noon?");
  Section none;
  none.part = {9};
  CHECK(binary_content(m, none).status == BinaryContent::Status::kNoSection);
  mime::Message bad = mime::Message::parse("Content-Transfer-Encoding: base64\n\n!!!notbase64\n");
  Section one;
  one.part = {1};
  CHECK(binary_content(bad, one).status == BinaryContent::Status::kUnknownCte);
  mime::Message uu = mime::Message::parse("Content-Transfer-Encoding: x-uuencode\n\nbegin\n");
  CHECK(binary_content(uu, one).status == BinaryContent::Status::kUnknownCte);
  mime::Message nul = mime::Message::parse("Content-Transfer-Encoding: base64\n\nAGEA\n");
  BinaryContent bn = binary_content(nul, one);
  CHECK(bn.data == std::string("\0a\0", 3));
  CHECK(binary_content(m, Section{}).data == kForward);
}
