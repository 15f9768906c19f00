// The response grammar checker (a test fixture) must reject what clients would choke
// on, and every FETCH item Tern renders for tricky messages must pass it.
#include <catch2/catch.hpp>

#include "common/mime.h"
#include "imap_grammar_fixture.h"
#include "memory_store_fixture.h"
#include "mra/imap_session.h"

using tern::mra::testing::MemoryStore;
using tern::mra::testing::ResponseChecker;
using namespace tern::mra::imap;

TEST_CASE("the grammar checker accepts conforming output", "[imap][grammar]") {
  const char* good[] = {
      "* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n",
      "a1 OK done\r\n",
      "+ Ready\r\n",
      "* 3 EXISTS\r\n* 1 EXPUNGE\r\n",
      "* 1 FETCH (FLAGS (\\Seen $X) UID 5 RFC822.SIZE 10 INTERNALDATE \"17-Jul-1996 02:44:25 -0700\")\r\n",
      "* 1 FETCH (BODY[HEADER.FIELDS (From \"X Y\")]<0> {3}\r\nabc)\r\n",
      "* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL))\r\n",
      "* 1 FETCH (BODY ((\"text\" \"plain\" (\"a\" \"b\") NIL NIL \"7bit\" 1 1)(\"image\" \"png\" NIL NIL NIL \"base64\" 4) \"mixed\"))\r\n",
      "* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
      "* LIST (\\HasChildren) \"/\" Work (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
      "* ESEARCH (TAG \"a\") UID MIN 1 ALL 1:3,5\r\n",
      "* STATUS \"My Box\" (MESSAGES 1 UIDNEXT 2)\r\n",
      "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n",
  };
  for (const char* g : good) {
    INFO(g);
    CHECK(ResponseChecker::check(g) == "");
  }
  CHECK(ResponseChecker::check("* LIST () \"/\" \"Entw\xc3\xbcrfe\"\r\n", true) == "");
}

TEST_CASE("the grammar checker rejects what clients cannot parse", "[imap][grammar]") {
  const char* bad[] = {
      "* 1 FETCH (FLAGS (\\Seen)\r\n",                                    // unbalanced
      "* 1 FETCH (BODY[] {5}\r\nabc)\r\n",                                 // literal longer than the data
      "* 1 FETCH (RFC822.SIZE x)\r\n",
      "* 1 FETCH (INTERNALDATE \"17-Foo-1996 02:44:25 -0700\")\r\n",
      "* 1 FETCH (ENVELOPE (NIL NIL NIL))\r\n",                            // too few envelope members
      "* 1 FETCH (BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0))\r\n",  // text without lines
      "* 1 FETCH (BODYSTRUCTURE (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 0 0))\r\n",  // no envelope
      "* 1 FETCH (BODY ((\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)))\r\n",  // multipart without subtype
      "* LIST () \"/\" \"caf\xc3\xa9\"\r\n",                               // 8-bit quoted in IMAP4rev1
      "* STATUS \"a\"b\" (MESSAGES 1)\r\n",
      "* OK\r\n",                                                          // no text
      "a1 MAYBE done\r\n",
      "* 1 FETCH (BODY[] \"a\r\nb\")\r\n",                                 // CRLF in a quoted string
      "* CAPABILITY IDLE\r\n",                                             // no IMAP4rev1
      "* 1 FETCH (FLAGS ())",                                              // no CRLF
  };
  for (const char* b : bad) {
    INFO(b);
    CHECK(ResponseChecker::check(b) != "");
  }
  CHECK(ResponseChecker::check(std::string("* 1 FETCH (BODY[] {3}\r\na\0b)\r\n", 30)) != "");  // NUL in literal
  CHECK(ResponseChecker::check(std::string("* 1 FETCH (BINARY[] ~{3}\r\na\0b)\r\n", 32)) == "");
}

TEST_CASE("every FETCH item of tricky messages conforms to the grammar", "[imap][grammar]") {
  const std::string messages[] = {
      // Thunderbird-style, with RFC 2231 and an 8-bit header.
      "From: =?UTF-8?Q?J=C3=BCrgen?= <j@example.de>\nTo: \"A, B\" <ab@x.test>, Group: c@x.test, \"q\\\"\" <d@x.test>;\n"
      "Subject: caf\xc3\xa9 \"quoted\" \\ back\nDate: Tue, 4 Jun 2024 10:15:42 +0200\nMIME-Version: 1.0\n"
      "Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8; format=flowed\n"
      "Content-Transfer-Encoding: quoted-printable\nContent-Language: de, en\n\ncaf=C3=A9\n--b1\n"
      "Content-Type: application/pdf; name*=UTF-8''%E2%82%AC.pdf\nContent-Disposition: attachment;\n"
      " filename*0*=UTF-8''%E2%82%AC; filename*1=\".pdf\"\nContent-ID: <x@y>\nContent-MD5: abc=\n"
      "Content-Location: http://x.test/a\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--b1--\n",
      // Forwarded message inside a digest, empty parts, no header.
      "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\nFrom: <>\nCc: undisclosed-recipients:;\n\nbody\n"
      "--d\nContent-Type: message/rfc822\n\n--d--\n",
      // Broken: no boundary, binary junk, NUL, bare CR, 8-bit everywhere.
      [] {
        static const char kBroken[] =
            "Content-Type: multipart/alternative\nSubject: \xff\xfe junk\r\nFrom: broken <<a@@b>>\n\n\0\x01\r\xff\n";
        return std::string(kBroken, sizeof(kBroken) - 1);
      }(),
      // No header at all, and a header with no body.
      "\njust a body\n",
      "Subject: only a header",
      // Deep nesting beyond the limit.
      [] {
        std::string s;
        for (int i = 0; i < 150; ++i) s += "Content-Type: message/rfc822\n\n";
        return s + "Subject: deep\n\nbottom\n";
      }(),
      // Bad encodings for BINARY.
      "Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n",
      "Content-Transfer-Encoding: base64\n\n!!!!\n",
      // Long folded header lines and a huge parameter list.
      [] {
        std::string s = "Subject: a";
        for (int i = 0; i < 200; ++i) s += "\n  word" + std::to_string(i);
        s += "\nContent-Type: text/plain";
        for (int i = 0; i < 300; ++i) s += "; p" + std::to_string(i) + "=v";
        return s + "\n\nx\n";
      }(),
  };
  for (bool rev2 : {false, true}) {
    MemoryStore store;
    for (const std::string& m : messages) store.deliver("INBOX", m);
    SessionConfig cfg;
    ImapSession s(cfg, store, "u");
    std::string script = rev2 ? "e ENABLE IMAP4rev2\r\n" : "";
    script +=
        "a SELECT INBOX\r\n"
        "b FETCH 1:* ALL\r\n"
        "c FETCH 1:* FULL\r\n"
        "d FETCH 1:* (BODYSTRUCTURE UID MODSEQ)\r\n"
        "f FETCH 1:* (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.HEADER] "
        "BODY.PEEK[2.1] BODY.PEEK[HEADER.FIELDS (From Subject)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)]<2.10>)\r\n"
        "g FETCH 1:* (BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2]<0.3>)\r\n"
        "h FETCH 1:* (RFC822.HEADER RFC822.SIZE)\r\n"
        "i SEARCH TEXT x\r\n"
        "j LIST \"\" *\r\n"
        "k STATUS INBOX (MESSAGES UIDNEXT UNSEEN SIZE)\r\n";
    s.feed(script);
    std::string out;
    for (;;) {
      ImapSession::Step st = s.step();
      out += st.out;
      if (st.action != ImapSession::Action::kContinue) break;
    }
    INFO("rev2=" << rev2);
    CHECK(ResponseChecker::check(out) == "");
    std::string tagged;
    for (size_t p = 0; p < out.size();) {
      size_t e = out.find("\r\n", p);
      if (e == std::string::npos) break;
      if (out[p] >= 'a' && out[p] <= 'k' && out[p + 1] == ' ') tagged += out.substr(p, std::min<size_t>(e - p, 60)) + "\n";
      p = e + 2;
    }
    INFO(tagged);
    for (const char* tag : {"a OK", "b OK", "c OK", "d OK", "f OK", "h OK", "i OK", "j OK", "k OK"}) {
      INFO(tag);
      CHECK(out.find(std::string("\n") + tag) != std::string::npos);
    }
    CHECK(out.find("g NO [UNKNOWN-CTE]") != std::string::npos);  // messages 7 and 8
  }
}
