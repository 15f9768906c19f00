// 8BITMIME downgrade (quoted-printable, base64 for binary parts) and the SMTPUTF8
// question, on whole messages and MIME trees.
#include "mta/smtp_client_mime.h"

#include <catch2/catch.hpp>

#include "common/mime.h"

using namespace tern;
using mta::downgrade_8bit;
using mta::qp_encode;

TEST_CASE("quoted-printable encoding") {
  struct Case {
    std::string in, out;
  };
  const Case cases[] = {
      {"plain text\r\n", "plain text\r\n"},
      {"a=b\r\n", "a=3Db\r\n"},
      {"caf\xc3\xa9\r\n", "caf=C3=A9\r\n"},
      {"trailing blank \r\n", "trailing blank=20\r\n"},
      {"tab\t\r\n", "tab=09\r\n"},
      {"bare lf\nnext", "bare lf\r\nnext"},
      {"no final newline", "no final newline"},
      {"bare\rcr\r\n", "bare=0Dcr\r\n"},
      {std::string("nul\0x\r\n", 7), "nul=00x\r\n"},
      {"", ""},
      {"\r\n\r\n", "\r\n\r\n"},
  };
  for (const Case& c : cases) CHECK(qp_encode(c.in) == c.out);
  // Lines are cut at 76 characters with soft breaks, and an escape is never split.
  std::string longline(200, 'x');
  std::string enc = qp_encode(longline + "\r\n");
  size_t pos = 0;
  std::string joined;
  while (pos < enc.size()) {
    size_t e = enc.find("\r\n", pos);
    std::string line = enc.substr(pos, e - pos);
    CHECK(line.size() <= 76);
    if (!line.empty() && line.back() == '=') line.pop_back();
    joined += line;
    pos = e + 2;
  }
  CHECK(joined == longline);
  std::string eights(100, '\xe9');
  std::string e8 = qp_encode(eights);
  std::string unbroken;
  for (size_t p = 0; p < e8.size();) {
    size_t e = e8.find("\r\n", p);
    std::string line = e8.substr(p, e == std::string::npos ? std::string::npos : e - p);
    CHECK(line.size() <= 76);
    if (e != std::string::npos) {
      REQUIRE(line.back() == '=');  // only soft breaks: the input has no line end
      line.pop_back();
    }
    unbroken += line;
    p = e == std::string::npos ? e8.size() : e + 2;
  }
  std::string want;
  for (int i = 0; i < 100; ++i) want += "=E9";
  CHECK(unbroken == want);  // no escape was cut by a soft break
}

TEST_CASE("downgrading a simple 8-bit text message") {
  std::string m =
      "From: a@a.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9f""e\r\n";
  auto out = downgrade_8bit(m);
  REQUIRE(out);
  CHECK(*out ==
        "From: a@a.test\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n");
  // A 7-bit message is left as it is.
  std::string seven = "Subject: x\r\n\r\nhello\r\n";
  CHECK(*downgrade_8bit(seven) == seven);
}

TEST_CASE("a message without MIME headers becomes MIME") {
  std::string m = "Subject: old\r\n\r\nna\xefve\r\n";
  auto out = downgrade_8bit(m);
  REQUIRE(out);
  CHECK(out->find("Content-Transfer-Encoding: quoted-printable\r\n") != std::string::npos);
  CHECK(out->find("MIME-Version: 1.0\r\n") != std::string::npos);
  CHECK(out->find("Content-Type: text/plain; charset=unknown-8bit\r\n") != std::string::npos);
  CHECK(out->find("\r\n\r\nna=EFve\r\n") != std::string::npos);
  CHECK_FALSE(mta::has_8bit(*out));
}

TEST_CASE("multipart and message/rfc822: only the 8-bit leaves change") {
  std::string m =
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nascii part\r\n"
      "--b1\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe9t\xe9\r\n"
      "--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain\r\n\r\ninner \xff\r\n"
      "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x01\x80\x02\r\n"
      "--b1--\r\n";
  auto out = downgrade_8bit(m);
  REQUIRE(out);
  CHECK_FALSE(mta::has_8bit(*out));
  CHECK(out->find("ascii part\r\n") != std::string::npos);
  CHECK(out->find("=E9t=E9") != std::string::npos);
  CHECK(out->find("inner =FF") != std::string::npos);
  CHECK(out->find("Content-Transfer-Encoding: base64\r\n\r\nAYAC\r\n") != std::string::npos);
  // The multipart itself said 8bit; its parts are 7-bit now, so is it.
  CHECK(out->find("Content-Transfer-Encoding: 7bit\r\n\r\npreamble") != std::string::npos);
  // The tree still parses the same way, and the decoded text is what it was.
  auto parsed = common::mime::Message::parse(*out);
  REQUIRE(parsed.root().children.size() == 4);
  CHECK(parsed.decoded_body(parsed.part(parsed.root().children[1])) == "\xe9t\xe9");
}

TEST_CASE("what cannot be converted") {
  CHECK_FALSE(downgrade_8bit("Subject: caf\xc3\xa9\r\n\r\nbody \xe9\r\n"));
  std::string pre =
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\npre \xe9\r\n--b\r\n\r\nx\r\n--b--\r\n";
  CHECK_FALSE(downgrade_8bit(pre));
  std::string part_header =
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
      "Content-Disposition: attachment; filename=\"\xe9.txt\"\r\n\r\nx\r\n--b--\r\n";
  CHECK_FALSE(downgrade_8bit(part_header));
}

TEST_CASE("needs_smtputf8 looks at the envelope and the header only") {
  using mta::needs_smtputf8;
  CHECK_FALSE(needs_smtputf8("a@a.test", {"b@b.test"}, "Subject: x\r\n\r\n"));
  CHECK(needs_smtputf8("j\xc3\xbcrgen@a.test", {"b@b.test"}, "Subject: x\r\n\r\n"));
  CHECK(needs_smtputf8("a@a.test", {"b@b\xc3\xbc.test"}, "Subject: x\r\n\r\n"));
  CHECK(needs_smtputf8("a@a.test", {"b@b.test"}, "Subject: \xc3\xbc\r\n\r\n"));
  CHECK(mta::message_headers("A: b\r\n\r\nbody \xc3\xbc") == "A: b\r\n\r\n");
  CHECK(mta::message_headers("A: b\n\nbody") == "A: b\n\n");
  CHECK(mta::message_headers("no blank line") == "no blank line");
}
