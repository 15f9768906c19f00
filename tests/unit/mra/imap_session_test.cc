#include "mra/imap_session.h"

#include <catch2/catch.hpp>

#include "common/mime.h"
#include "imap_grammar_fixture.h"
#include "memory_store_fixture.h"

using namespace tern::mra;
using namespace tern::mra::imap;
using tern::mra::testing::MemoryStore;
using Action = ImapSession::Action;

namespace {

const std::string kMsg1 =
    "From: Alice <alice@example.org>\n"
    "To: bob@example.org\n"
    "Subject: Hello\n"
    "Date: Mon, 3 Jun 2024 09:00:00 +0000\n"
    "Message-ID: <m1@example.org>\n"
    "\n"
    "Hi Bob,\n"
    "lunch today?\n";

const std::string kMsg2 =
    "From: Carol <carol@example.org>\n"
    "To: bob@example.org\n"
    "Subject: =?UTF-8?Q?Rechnung_f=C3=BCr_Juni?=\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"xyz\"\n"
    "\n"
    "--xyz\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "Anbei die Rechnung f\xc3\xbcr Juni.\n"
    "--xyz\n"
    "Content-Type: application/octet-stream; name=\"data.bin\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAwQ=\n"
    "--xyz--\n";

const std::string kMsg3 =
    "From: dave@example.net\n"
    "To: bob@example.org\n"
    "Subject: =?KOI8-R?B?8NLJ18XU?=\n"
    "\n"
    "short\n";

SessionConfig test_config() {
  SessionConfig c;
  c.now = [] { return int64_t{1717660000}; };
  c.limits.max_append = 1 << 20;
  return c;
}

// Drives a session the way the daemon's glue does: feed, then step() until it wants
// input (or something the test must handle).
// Every response is checked against the RFC 3501 / RFC 9051 grammar on the way.
struct Client {
  ImapSession& s;
  Action last = Action::kNeedInput;
  bool utf8 = false;  // the client enabled IMAP4rev2

  std::string pump() {
    std::string out;
    for (int guard = 0; guard < 10000000; ++guard) {
      ImapSession::Step st = s.step();
      out += st.out;
      last = st.action;
      if (st.action != Action::kContinue) break;
    }
    INFO(out);
    CHECK(tern::mra::testing::ResponseChecker::check(out, utf8) == "");
    if (out.find("* ENABLED IMAP4rev2") != std::string::npos) utf8 = true;
    return out;
  }
  std::string send(const std::string& in) {
    s.feed(in);
    return pump();
  }
  std::string send_bytewise(const std::string& in) {
    std::string out;
    for (char c : in) {
      s.feed(std::string_view(&c, 1));
      out += pump();
      if (last == Action::kClose) break;
    }
    return out;
  }
};

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

struct Fixture {
  MemoryStore store;
  ImapSession session{test_config(), store, "bob"};
  Client c{session};
  Fixture() {
    store.deliver("INBOX", kMsg1, {}, 1717405200);
    store.deliver("INBOX", kMsg2, {"\\Seen"}, 1717491600);
    store.deliver("INBOX", kMsg3, {}, 1717578000);
  }
  std::string select() { return c.send("s SELECT INBOX\r\n"); }
};

}  // namespace

TEST_CASE("greeting and capabilities follow the TLS and plaintext policy", "[imap][session]") {
  SessionConfig cfg = test_config();
  cfg.starttls = true;
  ImapSession plain(cfg);
  CHECK(plain.greeting() ==
        "* OK [CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE STARTTLS LOGINDISABLED] Tern ready.\r\n");
  cfg.tls = true;
  ImapSession tls(cfg);
  CHECK(tls.greeting() == "* OK [CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN] Tern ready.\r\n");
  cfg.tls = false;
  cfg.plaintext_auth_without_tls = true;
  ImapSession allowed(cfg);
  CHECK(contains(allowed.greeting(), "STARTTLS AUTH=PLAIN AUTH=LOGIN]"));
  CHECK_FALSE(contains(allowed.greeting(), "LOGINDISABLED"));
}

TEST_CASE("LOGIN: refused in plaintext, handed to authd over TLS", "[imap][session][auth]") {
  SessionConfig cfg = test_config();
  cfg.starttls = true;
  ImapSession s(cfg);
  Client c{s};
  CHECK(c.send("a1 LOGIN bob secret\r\n") ==
        "a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n");
  CHECK(c.send("a2 AUTHENTICATE PLAIN\r\n") ==
        "a2 NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.\r\n");
  // STARTTLS; a command pipelined behind it is dropped (RFC 3501 6.2.1).
  CHECK(c.send("a3 STARTTLS\r\na4 LOGIN bob injected\r\n") == "a3 OK Begin TLS negotiation now.\r\n");
  CHECK(c.last == Action::kStartTls);
  s.tls_started();
  CHECK(c.pump().empty());
  CHECK(c.last == Action::kNeedInput);
  CHECK(c.send("a5 CAPABILITY\r\n") ==
        "* CAPABILITY IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN AUTH=LOGIN\r\na5 OK CAPABILITY completed.\r\n");
  CHECK(c.send("a6 STARTTLS\r\n") == "a6 BAD TLS is already active.\r\n");

  CHECK(c.send("a7 LOGIN bob \"wrong pass\"\r\n").empty());
  CHECK(c.last == Action::kAuthenticate);
  CHECK(s.auth_request().mechanism == "PLAIN");
  CHECK(s.auth_request().initial_response == std::string("\0bob\0wrong pass", 15));
  CHECK(s.auth_request().login_command);
  // While tern-authd thinks, pipelined input waits.
  s.feed("a8 NOOP\r\n");
  CHECK(s.step().action == Action::kNeedInput);
  ImapSession::Step fail = s.auth_result(false, "");
  CHECK(fail.out == "a7 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
  CHECK(s.auth_request().mechanism.empty());  // nothing of the secret is kept
  CHECK(c.pump() == "a8 OK NOOP completed.\r\n");
  c.send("a9 LOGIN bob right\r\n");
  ImapSession::Step ok = s.auth_result(true, "bob");
  CHECK(ok.action == Action::kLoggedIn);
  CHECK(contains(ok.out, "a9 OK [CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE"));
  CHECK(contains(ok.out, "APPENDLIMIT=1048576] Logged in\r\n"));
  CHECK(s.state() == ImapSession::State::kAuthenticated);
  CHECK(s.user() == "bob");
  CHECK(c.send("b1 LOGIN x y\r\n") == "b1 BAD Already authenticated.\r\n");
}

TEST_CASE("AUTHENTICATE with SASL-IR, challenges and cancellation", "[imap][session][auth]") {
  SessionConfig cfg = test_config();
  cfg.tls = true;
  ImapSession s(cfg);
  Client c{s};
  c.send("a1 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n");
  CHECK(c.last == Action::kAuthenticate);
  CHECK(s.auth_request().initial_response == std::string("\0bob\0secret", 11));
  CHECK_FALSE(s.auth_request().login_command);
  CHECK(s.auth_result(false, "").action == Action::kContinue);

  c.send("a2 AUTHENTICATE LOGIN\r\n");
  CHECK(c.last == Action::kAuthenticate);
  CHECK_FALSE(s.auth_request().initial_response);
  CHECK(s.auth_challenge("Username:") == "+ VXNlcm5hbWU6\r\n");
  CHECK(c.send("Ym9i\r\n").empty());
  CHECK(c.last == Action::kAuthenticate);
  CHECK(s.auth_response() == "bob");
  s.auth_challenge("Password:");
  CHECK(c.send("*\r\n") == "a2 BAD Authentication aborted by client.\r\n");
  CHECK(c.last == Action::kAuthCancel);

  c.send("a3 AUTHENTICATE PLAIN\r\n");
  s.auth_challenge("");
  CHECK(c.send("!!notbase64\r\n") == "a3 BAD Invalid base64 in authentication response.\r\n");
  CHECK(c.last == Action::kAuthCancel);
  CHECK(c.send("a4 AUTHENTICATE PLAIN =\r\n").empty());
  CHECK(s.auth_request().initial_response == "");
  CHECK(s.auth_result(false, "", true).out == "a4 NO [UNAVAILABLE] Temporary authentication failure.\r\n");
  CHECK(c.send("a5 AUTHENTICATE CRAM-MD5\r\n") == "a5 NO Unsupported authentication mechanism.\r\n");
  CHECK(c.send("a6 AUTHENTICATE PLAIN ***\r\n").substr(0, 7) == "a6 BAD ");

  // The third failure ends the connection.
  c.send("a7 LOGIN bob x\r\n");
  CHECK(s.auth_result(false, "").action == Action::kContinue);
  c.send("a8 LOGIN bob y\r\n");
  ImapSession::Step last = s.auth_result(false, "");
  CHECK(last.out == "a8 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n* BYE Too many invalid authentication attempts.\r\n");
  CHECK(last.action == Action::kClose);
}

TEST_CASE("before login: garbage, overlong lines, huge literals", "[imap][session][limits]") {
  SessionConfig cfg = test_config();
  SECTION("commands that need authentication are refused") {
    ImapSession s(cfg);
    Client c{s};
    CHECK(c.send("a SELECT INBOX\r\n") == "a BAD Command not permitted before authentication.\r\n");
    CHECK(c.send("b ID (\"name\" \"test\")\r\n") == "* ID (\"name\" \"Tern\")\r\nb OK ID completed.\r\n");
    CHECK(s.client_id().at(0).second == "test");
  }
  SECTION("ten lines of garbage end the connection") {
    ImapSession s(cfg);
    Client c{s};
    std::string out = c.send(
        "GET / HTTP/1.1\r\nHost: x\r\n\x16\x03\x01\x02\r\n\x01\x02\x03\r\n* x\r\n+\r\n{5}\r\n\xff\xfe\r\nA\r\nB\r\nC\r\nD\r\n");
    CHECK(c.last == Action::kClose);
    CHECK(count(out, "BAD") == 10);
    CHECK(contains(out, "* BYE Too many invalid IMAP commands.\r\n"));
    CHECK(s.state() == ImapSession::State::kLogout);
    CHECK(c.send("a NOOP\r\n").empty());  // nothing more is processed
  }
  SECTION("an overlong line before login closes the connection") {
    ImapSession s(cfg);
    Client c{s};
    CHECK(c.send("a NOOP " + std::string(20000, 'x') + "\r\n") == "* BYE Line too long\r\n");
    CHECK(c.last == Action::kClose);
  }
  SECTION("a 1 GB literal is refused before any byte of it is read") {
    ImapSession s(cfg);
    Client c{s};
    CHECK(c.send("a LOGIN {1073741824}\r\n") == "a BAD [TOOBIG] Literal too big\r\n");
    CHECK(c.send("b NOOP\r\n") == "b OK NOOP completed.\r\n");
    CHECK(c.send("c LOGIN {1073741824+}\r\n") == "* BYE [TOOBIG] Literal too big\r\n");
    CHECK(c.last == Action::kClose);
  }
  SECTION("a small synchronising literal gets a continuation") {
    cfg.plaintext_auth_without_tls = true;
    ImapSession s(cfg);
    Client c{s};
    CHECK(c.send("a LOGIN {3}\r\n") == "+ Ready for literal data\r\n");
    CHECK(c.send("bob \"pw\"\r\n").empty());
    CHECK(c.last == Action::kAuthenticate);
    CHECK(s.auth_request().initial_response == std::string("\0bob\0pw", 7));
  }
  SECTION("an unterminated literal just waits") {
    ImapSession s(cfg);
    Client c{s};
    c.send("a LOGIN {100}\r\nonly part");
    CHECK(c.last == Action::kNeedInput);
    CHECK(s.buffered() == 0);  // the literal's bytes are in the command being framed
  }
}

TEST_CASE("SELECT, EXAMINE and the mailbox view", "[imap][session]") {
  Fixture f;
  CHECK(f.select() ==
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted.\r\n"
        "* 3 EXISTS\r\n"
        "* 3 RECENT\r\n"
        "* OK [UNSEEN 1] First unseen.\r\n"
        "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
        "* OK [UIDNEXT 4] Predicted next UID\r\n"
        "* OK [HIGHESTMODSEQ " + std::to_string(f.store.box("INBOX").modseq) + "] Highest\r\n"
        "s OK [READ-WRITE] SELECT completed.\r\n");
  CHECK(f.session.state() == ImapSession::State::kSelected);
  // A second SELECT closes the first (RFC 9051 [CLOSED]); EXAMINE is read-only.
  std::string ex = f.c.send("e EXAMINE Sent\r\n");
  CHECK(ex.substr(0, 41) == "* OK [CLOSED] Previous mailbox closed.\r\n*");
  CHECK(contains(ex, "* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"));
  CHECK(contains(ex, "* 0 EXISTS\r\n"));
  CHECK(contains(ex, "e OK [READ-ONLY] EXAMINE completed.\r\n"));
  CHECK(f.c.send("x STORE 1 +FLAGS \\Seen\r\n") == "x NO [READ-ONLY] Mailbox is read-only.\r\n");
  CHECK(f.c.send("y EXPUNGE\r\n") == "y NO [READ-ONLY] Mailbox is read-only.\r\n");
  // An empty mailbox: "*" names no message (RFC 9051 6.4.5), UIDs just match nothing.
  CHECK(f.c.send("y2 FETCH * FLAGS\r\n") == "y2 BAD Invalid messageset\r\n");
  CHECK(f.c.send("y3 FETCH 1:* FLAGS\r\n") == "y3 BAD Invalid messageset\r\n");
  CHECK(f.c.send("y4 UID FETCH 1:* FLAGS\r\n") == "y4 OK FETCH completed.\r\n");
  CHECK(f.c.send("y5 SEARCH ALL\r\n") == "* SEARCH\r\ny5 OK SEARCH completed.\r\n");
  // A failed SELECT leaves no mailbox selected.
  CHECK(f.c.send("n SELECT Nope\r\n") ==
        "* OK [CLOSED] Previous mailbox closed.\r\nn NO [NONEXISTENT] Mailbox doesn't exist\r\n");
  CHECK(f.session.state() == ImapSession::State::kAuthenticated);
  CHECK(f.c.send("z FETCH 1 FLAGS\r\n") == "z BAD No mailbox selected.\r\n");
  CHECK(f.c.send("u SELECT \"../../etc\"\r\n").substr(0, 15) == "u NO [CANNOT] '");
  CHECK(f.c.send("v SELECT &Jjo!-\r\n") == "v NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n");
}

TEST_CASE("FETCH data items", "[imap][session][fetch]") {
  Fixture f;
  f.select();
  std::string s1 = tern::common::mime::to_crlf(kMsg1);
  SECTION("FLAGS, UID, sizes and dates") {
    CHECK(f.c.send("a FETCH 1:2 (FLAGS UID RFC822.SIZE INTERNALDATE)\r\n") ==
          "* 1 FETCH (FLAGS (\\Recent) UID 1 RFC822.SIZE " + std::to_string(s1.size()) +
              " INTERNALDATE \"03-Jun-2024 09:00:00 +0000\")\r\n"
              "* 2 FETCH (FLAGS (\\Seen \\Recent) UID 2 RFC822.SIZE " +
              std::to_string(tern::common::mime::to_crlf(kMsg2).size()) +
              " INTERNALDATE \"04-Jun-2024 09:00:00 +0000\")\r\n"
              "a OK FETCH completed.\r\n");
    // UID FETCH always includes UID; unknown UIDs are skipped silently.
    CHECK(f.c.send("b UID FETCH 2:9 FLAGS\r\n") ==
          "* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent))\r\nb OK FETCH completed.\r\n");
    CHECK(f.c.send("c UID FETCH 50:60 FLAGS\r\n") == "c OK FETCH completed.\r\n");
    CHECK(f.c.send("d FETCH 4 FLAGS\r\n") == "d BAD Invalid messageset\r\n");
    CHECK(f.c.send("d2 FETCH 2:4 FLAGS\r\n") == "d2 BAD Invalid messageset\r\n");
    CHECK(f.c.send("e FETCH 1 FAST\r\n") == "* 1 FETCH (FLAGS (\\Recent) INTERNALDATE \"03-Jun-2024 09:00:00 +0000\" RFC822.SIZE " +
                                                std::to_string(s1.size()) + ")\r\ne OK FETCH completed.\r\n");
  }
  SECTION("ENVELOPE and BODYSTRUCTURE, cached after the first time") {
    std::string env = f.c.send("a FETCH 1 ENVELOPE\r\n");
    CHECK(env ==
          "* 1 FETCH (ENVELOPE (\"Mon, 3 Jun 2024 09:00:00 +0000\" \"Hello\" ((\"Alice\" NIL \"alice\" \"example.org\")) "
          "((\"Alice\" NIL \"alice\" \"example.org\")) ((\"Alice\" NIL \"alice\" \"example.org\")) "
          "((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL \"<m1@example.org>\"))\r\na OK FETCH completed.\r\n");
    CHECK(f.c.send("b FETCH 1 ENVELOPE\r\n") == env.replace(env.find("a OK"), 1, "b"));
    std::string bs = f.c.send("c FETCH 2 BODYSTRUCTURE\r\n");
    // The line end before a boundary belongs to the boundary (RFC 2046 5.1.1).
    CHECK(contains(bs, "(\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 29 0 NIL NIL NIL NIL)"));
    CHECK(contains(bs, "(\"application\" \"octet-stream\" (\"name\" \"data.bin\") NIL NIL \"base64\" 8 NIL NIL NIL NIL)"));
    CHECK(contains(bs, " \"mixed\" (\"boundary\" \"xyz\") NIL NIL NIL))\r\n"));
    CHECK(contains(f.c.send("d FETCH 2 BODY\r\n"), "* 2 FETCH (BODY ((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"8bit\" 29 0)"));
  }
  SECTION("BODY[] sets \\Seen, BODY.PEEK[] does not") {
    CHECK(f.c.send("a FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]\r\n") ==
          "* 1 FETCH (BODY[HEADER.FIELDS (Subject)] {18}\r\nSubject: Hello\r\n\r\n)\r\na OK FETCH completed.\r\n");
    CHECK(f.c.send("b FETCH 1 BODY[TEXT]<3.3>\r\n") ==
          "* 1 FETCH (BODY[TEXT]<3> {3}\r\nBob FLAGS (\\Seen \\Recent))\r\nb OK FETCH completed.\r\n");
    CHECK(f.store.box("INBOX").msgs[0].flags == std::vector<std::string>{"\\Seen"});
    CHECK(f.c.send("c FETCH 1 (FLAGS RFC822.TEXT)\r\n") ==
          "* 1 FETCH (FLAGS (\\Seen \\Recent) RFC822.TEXT {23}\r\nHi Bob,\r\nlunch today?\r\n)\r\nc OK FETCH completed.\r\n");
    std::string whole = f.c.send("d FETCH 3 RFC822\r\n");
    CHECK(whole == "* 3 FETCH (RFC822 {" + std::to_string(tern::common::mime::to_crlf(kMsg3).size()) + "}\r\n" +
                       tern::common::mime::to_crlf(kMsg3) + " FLAGS (\\Seen \\Recent))\r\nd OK FETCH completed.\r\n");
    const std::string mime2 = "Content-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    CHECK(f.c.send("e FETCH 2 (BODY[1] BODY[3] BODY[2.MIME])\r\n") ==
          "* 2 FETCH (BODY[1] {29}\r\nAnbei die Rechnung f\xc3\xbcr Juni. BODY[3] NIL BODY[2.MIME] {" +
              std::to_string(mime2.size()) + "}\r\n" + mime2 + ")\r\ne OK FETCH completed.\r\n");
  }
  SECTION("BINARY decodes, BINARY.SIZE measures") {
    CHECK(f.c.send("a FETCH 2 (BINARY.PEEK[2] BINARY.SIZE[2])\r\n") ==
          std::string("* 2 FETCH (BINARY[2] ~{5}\r\n") + std::string("\0\x01\x02\x03\x04", 5) +
              " BINARY.SIZE[2] 5)\r\na OK FETCH completed.\r\n");
    CHECK(f.c.send("b FETCH 2 BINARY.PEEK[2]<1.2>\r\n") == "* 2 FETCH (BINARY[2]<1> {2}\r\n\x01\x02)\r\nb OK FETCH completed.\r\n");
    CHECK(f.c.send("c FETCH 2 BINARY.PEEK[9]\r\n") == "* 2 FETCH (BINARY[9] NIL)\r\nc OK FETCH completed.\r\n");
  }
  SECTION("a message that cannot be read gives NO [EXPUNGEISSUED]-style failure, not a broken response") {
    f.store.fail_reads = true;
    CHECK(f.c.send("a FETCH 1 (FLAGS ENVELOPE)\r\n") ==
          "a NO [EXPUNGEISSUED] Some messages were expunged and could not be fetched.\r\n");
    CHECK(f.c.send("b FETCH 1 FLAGS\r\n") == "* 1 FETCH (FLAGS (\\Recent))\r\nb OK FETCH completed.\r\n");
  }
}

TEST_CASE("a long FETCH is produced in bounded chunks", "[imap][session][fetch][limits]") {
  MemoryStore store;
  std::string body(5000, 'x');
  for (int i = 0; i < 200; ++i) store.deliver("INBOX", "Subject: " + std::to_string(i) + "\n\n" + body + "\n");
  SessionConfig cfg = test_config();
  cfg.output_chunk = 16384;
  ImapSession s(cfg, store, "bob");
  Client c{s};
  c.send("s SELECT INBOX\r\n");
  s.feed("f FETCH 1:* BODY.PEEK[]\r\n");
  size_t steps = 0, total = 0, biggest = 0;
  for (;;) {
    ImapSession::Step st = s.step();
    ++steps;
    total += st.out.size();
    biggest = std::max(biggest, st.out.size());
    if (st.action != Action::kContinue) break;
  }
  CHECK(total > 200 * 5000);
  CHECK(steps > 50);
  CHECK(biggest <= cfg.output_chunk + 6000);  // one chunk plus at most one message
}

TEST_CASE("STORE changes flags and reports them", "[imap][session][store]") {
  Fixture f;
  f.select();
  // A new keyword: FLAGS and PERMANENTFLAGS name it before the FETCH that uses it.
  CHECK(f.c.send("a STORE 1 +FLAGS (\\Flagged $Work)\r\n") ==
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted.\r\n"
        "* 1 FETCH (FLAGS (\\Flagged $Work \\Recent))\r\na OK STORE completed.\r\n");
  CHECK(f.c.send("b STORE 1 -FLAGS.SILENT ($Work)\r\n") == "b OK STORE completed.\r\n");
  CHECK(f.c.send("c UID STORE 1:2 FLAGS (\\answered)\r\n") ==
        "* 1 FETCH (UID 1 FLAGS (\\Answered \\Recent))\r\n* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent))\r\nc OK STORE completed.\r\n");
  CHECK(f.c.send("d STORE 1 +FLAGS (\\Recent)\r\n") == "d BAD Invalid flag \\Recent\r\n");
  CHECK(f.c.send("e STORE 1 +FLAGS (\\Bogus)\r\n") == "e BAD Invalid flag \\Bogus\r\n");
  CHECK(f.c.send("f STORE 9 +FLAGS (\\Seen)\r\n") == "f BAD Invalid messageset\r\n");
  // CONDSTORE: UNCHANGEDSINCE below the current modseq is refused per message.
  uint64_t ms = f.store.box("INBOX").msgs[0].modseq;
  std::string cond = f.c.send("g STORE 1,3 (UNCHANGEDSINCE " + std::to_string(ms - 1) + ") +FLAGS (\\Seen)\r\n");
  CHECK(contains(cond, "* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ("));
  CHECK(contains(cond, "g OK [MODIFIED 1] Conditional STORE failed.\r\n"));
  CHECK(contains(f.c.send("h FETCH 1 (MODSEQ)\r\n"), "* 1 FETCH (MODSEQ (" + std::to_string(ms) + "))\r\n"));
}

TEST_CASE("SEARCH, ESEARCH and saved results", "[imap][session][search]") {
  Fixture f;
  f.select();
  CHECK(f.c.send("a SEARCH UNSEEN\r\n") == "* SEARCH 1 3\r\na OK SEARCH completed.\r\n");
  CHECK(f.c.send("b UID SEARCH FROM carol\r\n") == "* SEARCH 2\r\nb OK SEARCH completed.\r\n");
  CHECK(f.c.send("c SEARCH OR SUBJECT hello SUBJECT \"f\xc3\xbcr\"\r\n") == "* SEARCH 1 2\r\nc OK SEARCH completed.\r\n");
  CHECK(f.c.send("d SEARCH CHARSET UTF-8 SUBJECT {12}\r\n\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2\r\n") ==
        "+ Ready for literal data\r\n* SEARCH 3\r\nd OK SEARCH completed.\r\n");
  CHECK(f.c.send("e SEARCH CHARSET KOI8-R SUBJECT \"\xf0\xd2\xc9\xd7\xc5\xd4\"\r\n") == "* SEARCH 3\r\ne OK SEARCH completed.\r\n");
  CHECK(f.c.send("f SEARCH CHARSET X-BOGUS ALL\r\n") == "f NO [BADCHARSET (US-ASCII UTF-8)] Unknown charset.\r\n");
  CHECK(f.c.send("g SEARCH BODY rechnung NOT SEEN\r\n") == "* SEARCH\r\ng OK SEARCH completed.\r\n");
  CHECK(f.c.send("h SEARCH RETURN (MIN MAX COUNT) ALL\r\n") ==
        "* ESEARCH (TAG \"h\") MIN 1 MAX 3 COUNT 3\r\nh OK SEARCH completed.\r\n");
  CHECK(f.c.send("i UID SEARCH RETURN (ALL) UNSEEN\r\n") == "* ESEARCH (TAG \"i\") UID ALL 1,3\r\ni OK SEARCH completed.\r\n");
  CHECK(f.c.send("j SEARCH RETURN (COUNT) SUBJECT nothing\r\n") == "* ESEARCH (TAG \"j\") COUNT 0\r\nj OK SEARCH completed.\r\n");
  // SEARCHRES: SAVE alone sends no ESEARCH; "$" then names the saved messages.
  CHECK(f.c.send("k SEARCH RETURN (SAVE) FROM dave\r\n") == "k OK SEARCH completed.\r\n");
  CHECK(f.c.send("l FETCH $ UID\r\n") == "* 3 FETCH (UID 3)\r\nl OK FETCH completed.\r\n");
  CHECK(f.c.send("m SEARCH MODSEQ 1\r\n").substr(0, 23) == "* SEARCH 1 2 3 (MODSEQ ");
  CHECK(f.c.send("n SEARCH 2:* SMALLER 200\r\n") == "* SEARCH 3\r\nn OK SEARCH completed.\r\n");
}

TEST_CASE("SEARCHRES: SAVE with MIN or MAX saves only those; NO empties $, BAD keeps it", "[imap][session][search]") {
  Fixture f;
  f.select();
  // RFC 5182 2.4: with MIN (or MAX) and no ALL/COUNT, "$" is just that message.
  CHECK(f.c.send("a UID SEARCH RETURN (SAVE MIN) ALL\r\n") == "* ESEARCH (TAG \"a\") UID MIN 1\r\na OK SEARCH completed.\r\n");
  CHECK(f.c.send("b UID FETCH $ (UID)\r\n") == "* 1 FETCH (UID 1)\r\nb OK FETCH completed.\r\n");
  CHECK(f.c.send("c SEARCH RETURN (SAVE MAX) ALL\r\n") == "* ESEARCH (TAG \"c\") MAX 3\r\nc OK SEARCH completed.\r\n");
  CHECK(f.c.send("d FETCH $ (UID)\r\n") == "* 3 FETCH (UID 3)\r\nd OK FETCH completed.\r\n");
  CHECK(f.c.send("e SEARCH RETURN (MIN SAVE MAX) ALL\r\n") == "* ESEARCH (TAG \"e\") MIN 1 MAX 3\r\ne OK SEARCH completed.\r\n");
  CHECK(f.c.send("f FETCH $ (UID)\r\n") == "* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\nf OK FETCH completed.\r\n");
  // With COUNT (or ALL) every match is saved.
  CHECK(f.c.send("g SEARCH RETURN (SAVE MIN COUNT) ALL\r\n") == "* ESEARCH (TAG \"g\") MIN 1 COUNT 3\r\ng OK SEARCH completed.\r\n");
  CHECK(f.c.send("h SEARCH $\r\n") == "* SEARCH 1 2 3\r\nh OK SEARCH completed.\r\n");
  // A syntax error (BAD) leaves "$" alone (RFC 5182 2.1) ...
  CHECK(f.c.send("i SEARCH RETURN (SAVE) BADKEY\r\n").substr(0, 6) == "i BAD ");
  CHECK(f.c.send("j SEARCH $\r\n") == "* SEARCH 1 2 3\r\nj OK SEARCH completed.\r\n");
  // ... a NO to a SEARCH with SAVE empties it.
  CHECK(f.c.send("k SEARCH RETURN (SAVE) CHARSET X-BOGUS ALL\r\n") == "k NO [BADCHARSET (US-ASCII UTF-8)] Unknown charset.\r\n");
  CHECK(f.c.send("l SEARCH $\r\n") == "* SEARCH\r\nl OK SEARCH completed.\r\n");
}

TEST_CASE("COPY, MOVE and EXPUNGE with UIDPLUS", "[imap][session]") {
  Fixture f;
  f.select();
  uint32_t trash_validity = f.store.box("Trash").uid_validity;
  CHECK(f.c.send("a COPY 1:2 Trash\r\n") ==
        "a OK [COPYUID " + std::to_string(trash_validity) + " 1:2 1:2] COPY completed.\r\n");
  CHECK(f.store.box("Trash").msgs.size() == 2);
  CHECK(f.c.send("b COPY 1 Nowhere\r\n") == "b NO [TRYCREATE] Mailbox doesn't exist.\r\n");
  CHECK(f.c.send("c MOVE 2 Trash\r\n") == "* OK [COPYUID " + std::to_string(trash_validity) +
                                              " 2 3] Moved UIDs.\r\n* 2 EXPUNGE\r\nc OK MOVE completed.\r\n");
  CHECK(f.c.send("d FETCH 1:* UID\r\n") == "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nd OK FETCH completed.\r\n");
  f.c.send("e STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\n");
  CHECK(f.c.send("f UID EXPUNGE 3\r\n") == "* 2 EXPUNGE\r\nf OK EXPUNGE completed.\r\n");
  CHECK(f.c.send("g EXPUNGE\r\n") == "* 1 EXPUNGE\r\ng OK EXPUNGE completed.\r\n");
  CHECK(f.c.send("h SEARCH ALL\r\n") == "* SEARCH\r\nh OK SEARCH completed.\r\n");
  // CLOSE expunges silently; UNSELECT does not expunge.
  f.store.deliver("INBOX", kMsg1, {"\\Deleted"});
  CHECK(contains(f.c.send("i NOOP\r\n"), "* 1 EXISTS\r\n"));
  CHECK(f.c.send("j UNSELECT\r\n") == "j OK UNSELECT completed.\r\n");
  CHECK(f.store.box("INBOX").msgs.size() == 1);
  f.select();
  CHECK(f.c.send("k CLOSE\r\n") == "k OK CLOSE completed.\r\n");
  CHECK(f.store.box("INBOX").msgs.empty());
  CHECK(f.session.state() == ImapSession::State::kAuthenticated);
}

TEST_CASE("two sessions on one mailbox see each other's changes", "[imap][session][sync]") {
  MemoryStore store;
  store.deliver("INBOX", kMsg1);
  store.deliver("INBOX", kMsg2);
  store.deliver("INBOX", kMsg3);
  ImapSession sa(test_config(), store, "bob"), sb(test_config(), store, "bob");
  Client a{sa}, b{sb};
  a.send("a1 SELECT INBOX\r\n");
  CHECK(contains(b.send("b1 SELECT INBOX\r\n"), "* 0 RECENT\r\n"));  // \Recent went to the first session

  b.send("b2 STORE 1 +FLAGS (\\Flagged)\r\n");
  CHECK(a.send("a2 NOOP\r\n") == "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\na2 OK NOOP completed.\r\n");
  CHECK(b.send("b3 NOOP\r\n") == "b3 OK NOOP completed.\r\n");  // no echo of its own change

  b.send("b4 STORE 2 +FLAGS.SILENT (\\Deleted)\r\n");
  CHECK(b.send("b5 EXPUNGE\r\n") == "* 2 EXPUNGE\r\nb5 OK EXPUNGE completed.\r\n");
  // RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH; the numbers stay.
  std::string fetch = a.send("a3 FETCH 1:3 (UID FLAGS)\r\n");
  // Message 2 is gone: its number stays until NOOP, and FETCH says it could not be
  // served (RFC 5530 EXPUNGEISSUED) rather than inventing data.
  CHECK(fetch == "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"
                 "a3 NO [EXPUNGEISSUED] Some messages were expunged and could not be fetched.\r\n");
  CHECK(a.send("a4 SEARCH ALL\r\n") == "* SEARCH 1 3\r\na4 OK SEARCH completed.\r\n");
  CHECK(a.send("a5 FETCH 2 BODY.PEEK[]\r\n") ==
        "a5 NO [EXPUNGEISSUED] Some messages were expunged and could not be fetched.\r\n");
  CHECK(a.send("a6 NOOP\r\n") == "* 2 EXPUNGE\r\na6 OK NOOP completed.\r\n");
  CHECK(a.send("a7 FETCH 2 UID\r\n") == "* 2 FETCH (UID 3)\r\na7 OK FETCH completed.\r\n");
  // UID commands may carry EXPUNGE.
  b.send("b6 STORE 1 +FLAGS.SILENT (\\Deleted)\r\n");
  b.send("b7 EXPUNGE\r\n");
  CHECK(a.send("a8 UID FETCH 3 UID\r\n") == "* 2 FETCH (UID 3)\r\n* 1 EXPUNGE\r\na8 OK FETCH completed.\r\n");

  // A delivery shows up as EXISTS (and RECENT for the session that gets it).
  store.deliver("INBOX", kMsg1);
  CHECK(a.send("a9 NOOP\r\n") == "* 2 EXISTS\r\n* 2 RECENT\r\na9 OK NOOP completed.\r\n");
  CHECK(b.send("b8 NOOP\r\n") == "* 2 EXISTS\r\n* 0 RECENT\r\nb8 OK NOOP completed.\r\n");
}

TEST_CASE("IDLE: updates while idling, DONE ends it", "[imap][session][idle]") {
  Fixture f;
  f.select();
  CHECK(f.c.send("i IDLE\r\n") == "+ idling\r\n");
  CHECK(f.c.last == Action::kIdle);
  CHECK(f.session.in_idle());
  CHECK(f.session.poll().empty());
  f.store.deliver("INBOX", kMsg3);
  CHECK(f.session.poll() == "* 4 EXISTS\r\n* 4 RECENT\r\n");
  f.store.box("INBOX").msgs.erase(f.store.box("INBOX").msgs.begin());  // another process expunged UID 1
  CHECK(f.session.poll() == "* 1 EXPUNGE\r\n");
  CHECK(f.c.send("DON") .empty());
  CHECK(f.c.send("E\r\n") == "i OK IDLE completed.\r\n");
  CHECK_FALSE(f.session.in_idle());
  CHECK(f.c.send("j IDLE\r\n") == "+ idling\r\n");
  CHECK(f.c.send("k NOOP\r\n") == "j BAD Expected DONE.\r\n");
  // Outside IDLE, poll() holds back expunges (no command in progress).
  f.store.box("INBOX").msgs.erase(f.store.box("INBOX").msgs.begin());
  CHECK(f.session.poll().empty());
  CHECK(f.c.send("l NOOP\r\n") == "* 1 EXPUNGE\r\nl OK NOOP completed.\r\n");
}

TEST_CASE("APPEND with flags, date, literals and UIDPLUS", "[imap][session][append]") {
  Fixture f;
  std::string msg = "From: me@example.org\r\nSubject: draft\r\n\r\nbody\r\n";
  CHECK(f.c.send("a APPEND Drafts (\\Draft \\Seen \\Recent) \"05-Jun-2024 10:00:00 +0200\" {" +
                 std::to_string(msg.size()) + "}\r\n") == "+ Ready for literal data\r\n");
  CHECK(f.c.send(msg + "\r\n") ==
        "a OK [APPENDUID " + std::to_string(f.store.box("Drafts").uid_validity) + " 1] APPEND completed.\r\n");
  const auto& m = f.store.box("Drafts").msgs.at(0);
  CHECK(m.data == msg);
  CHECK(m.flags == std::vector<std::string>{"\\Draft", "\\Seen"});
  CHECK(m.date == 1717574400);
  CHECK(f.c.send("b APPEND Drafts {3+}\r\nabc\r\n").substr(0, 18) == "b OK [APPENDUID 17");
  CHECK(f.store.box("Drafts").msgs.at(1).date == 1717660000);  // no date: now
  CHECK(f.c.send("c APPEND Nowhere {3+}\r\nabc\r\n") == "c NO [TRYCREATE] Mailbox doesn't exist.\r\n");
  CHECK(f.c.send("d APPEND Drafts {0+}\r\n\r\n") == "d NO [CANNOT] Can't save an empty message\r\n");
  CHECK(f.c.send("e APPEND Drafts {2000000}\r\n") == "e NO [TOOBIG] Message too big\r\n");
  CHECK(f.c.send("f APPEND Drafts (\\Bogus) {1+}\r\nx\r\n") == "f BAD Invalid flag \\Bogus\r\n");
  // Appending to the selected mailbox shows up as EXISTS.
  f.select();
  CHECK(f.c.send("g APPEND INBOX {3+}\r\nxyz\r\n") ==
        "* 4 EXISTS\r\n* 4 RECENT\r\ng OK [APPENDUID 1700000000 4] APPEND completed.\r\n");
}

TEST_CASE("CREATE, DELETE, RENAME, SUBSCRIBE, LIST and LSUB", "[imap][session][list]") {
  Fixture f;
  CHECK(f.c.send("a CREATE Work/\r\n") == "a OK CREATE completed.\r\n");
  CHECK(f.store.has("Work"));
  CHECK(f.c.send("b CREATE Work/Proj&AOk-t-\r\n") == "b OK CREATE completed.\r\n");
  CHECK(f.store.has("Work/Proj\xc3\xa9t-"));
  CHECK(f.c.send("c CREATE Archive/2024/Q1\r\n") == "c OK CREATE completed.\r\n");
  CHECK(f.c.send("d CREATE Work\r\n") == "d NO [ALREADYEXISTS] Mailbox already exists\r\n");
  CHECK(f.c.send("e CREATE inbox\r\n") == "e NO [ALREADYEXISTS] Mailbox already exists\r\n");
  for (const char* bad : {"../escape", "/abs", "a/../b", "~user", "a//b", "x*"}) {
    INFO(bad);
    std::string r = f.c.send(std::string("f CREATE \"") + bad + "\"\r\n");
    CHECK(r.substr(0, 14) == "f NO [CANNOT] ");
  }
  CHECK(f.c.send("g CREATE \"caf\xc3\xa9\"\r\n") == "g NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n");
  CHECK(f.c.send("h CREATE &AGE-\r\n") == "h NO [CANNOT] Mailbox name is not valid modified UTF-7\r\n");

  CHECK(f.c.send("i LIST \"\" \"\"\r\n") == "* LIST (\\Noselect) \"/\" \"\"\r\ni OK LIST completed.\r\n");
  CHECK(f.c.send("j LIST \"\" %\r\n") ==
        "* LIST (\\Noselect \\HasChildren) \"/\" Archive\r\n"  // exists only as a parent
        "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts\r\n"
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n"
        "* LIST (\\HasNoChildren \\Junk) \"/\" Junk\r\n"
        "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"
        "* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n"
        "* LIST (\\HasChildren) \"/\" Work\r\n"
        "j OK LIST completed.\r\n");
  // "Archive" and "Archive/2024" exist only as parents: shown \Noselect under "%", not under "*".
  CHECK(f.c.send("k LIST Archive/ %\r\n") == "* LIST (\\Noselect \\HasChildren) \"/\" Archive/2024\r\nk OK LIST completed.\r\n");
  CHECK(f.c.send("l LIST \"\" Archive*\r\n") == "* LIST (\\HasNoChildren) \"/\" Archive/2024/Q1\r\nl OK LIST completed.\r\n");
  CHECK(f.c.send("m LIST \"\" Work/*\r\n") == "* LIST (\\HasNoChildren) \"/\" Work/Proj&AOk-t-\r\nm OK LIST completed.\r\n");
  CHECK(f.c.send("n SUBSCRIBE Work/Proj&AOk-t-\r\n") == "n OK SUBSCRIBE completed.\r\n");
  // "*" returns the subscribed child itself, so not its unsubscribed parent; "%"
  // hides the child and returns the parent as \\Noselect (RFC 3501 6.3.9).
  CHECK(f.c.send("o LSUB \"\" Work*\r\n") == "* LSUB () \"/\" Work/Proj&AOk-t-\r\no OK LSUB completed.\r\n");
  CHECK(f.c.send("o2 LSUB \"\" Work%\r\n") == "* LSUB (\\Noselect) \"/\" Work\r\no2 OK LSUB completed.\r\n");
  CHECK(f.c.send("p LIST (SUBSCRIBED RECURSIVEMATCH) \"\" Work\r\n") ==
        "* LIST (\\HasChildren) \"/\" Work (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\np OK LIST completed.\r\n");
  CHECK(f.c.send("q LIST (SPECIAL-USE) \"\" *\r\n") ==
        "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts\r\n"
        "* LIST (\\HasNoChildren \\Junk) \"/\" Junk\r\n"
        "* LIST (\\HasNoChildren \\Sent) \"/\" Sent\r\n"
        "* LIST (\\HasNoChildren \\Trash) \"/\" Trash\r\n"
        "q OK LIST completed.\r\n");
  CHECK(f.c.send("r LIST \"\" INBOX RETURN (STATUS (MESSAGES UNSEEN SIZE))\r\n") ==
        "* LIST (\\HasNoChildren) \"/\" INBOX\r\n* STATUS INBOX (MESSAGES 3 UNSEEN 2 SIZE " +
            std::to_string(tern::common::mime::to_crlf(kMsg1 + kMsg2 + kMsg3).size()) + ")\r\nr OK LIST completed.\r\n");

  CHECK(f.c.send("s RENAME Work Job\r\n") == "s OK RENAME completed.\r\n");
  CHECK(f.store.has("Job/Proj\xc3\xa9t-"));
  CHECK(f.c.send("t RENAME Job Job/Inner\r\n") == "t NO [CANNOT] Can't rename a mailbox under itself\r\n");
  CHECK(f.c.send("u RENAME Nope Other\r\n") == "u NO [NONEXISTENT] Mailbox doesn't exist\r\n");
  CHECK(f.c.send("v DELETE INBOX\r\n") == "v NO [CANNOT] INBOX can't be deleted\r\n");
  CHECK(f.c.send("w DELETE Job/Proj&AOk-t-\r\n") == "w OK DELETE completed.\r\n");
  CHECK(f.c.send("x DELETE Job/Proj&AOk-t-\r\n") == "x NO [NONEXISTENT] Mailbox doesn't exist\r\n");
  f.select();
  CHECK(f.c.send("y DELETE INBOX/x\r\n") == "y NO [NONEXISTENT] Mailbox doesn't exist\r\n");
  f.c.send("z SELECT Sent\r\n");
  CHECK(f.c.send("z2 DELETE Sent\r\n") == "z2 NO [INUSE] Can't delete the selected mailbox: Mailbox is in use\r\n");
}

TEST_CASE("STATUS, NAMESPACE, QUOTA, ENABLE and IMAP4rev2", "[imap][session]") {
  Fixture f;
  CHECK(f.c.send("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED APPENDLIMIT)\r\n") ==
        "* STATUS INBOX (MESSAGES 3 RECENT 3 UIDNEXT 4 UIDVALIDITY 1700000000 UNSEEN 2 DELETED 0 APPENDLIMIT 1048576)\r\n"
        "a OK STATUS completed.\r\n");
  CHECK(f.c.send("b STATUS Nope (MESSAGES)\r\n") == "b NO [NONEXISTENT] Mailbox doesn't exist\r\n");
  CHECK(f.c.send("c NAMESPACE\r\n") == "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\nc OK NAMESPACE completed.\r\n");
  CHECK(f.c.send("d GETQUOTAROOT INBOX\r\n") == "* QUOTAROOT INBOX\r\nd OK GETQUOTAROOT completed.\r\n");
  QuotaInfo q;
  q.storage_used = 5000;
  q.storage_limit = 1024 * 1024;
  q.messages_used = 3;
  q.messages_limit = 1000;
  f.store.set_quota(q);
  CHECK(f.c.send("e GETQUOTAROOT INBOX\r\n") ==
        "* QUOTAROOT INBOX \"\"\r\n* QUOTA \"\" (STORAGE 5 1024 MESSAGE 3 1000)\r\ne OK GETQUOTAROOT completed.\r\n");
  CHECK(f.c.send("f GETQUOTA \"\"\r\n") == "* QUOTA \"\" (STORAGE 5 1024 MESSAGE 3 1000)\r\nf OK GETQUOTA completed.\r\n");
  CHECK(f.c.send("g SETQUOTA \"\" (STORAGE 1)\r\n") == "g NO [NOPERM] Quota can't be changed over IMAP.\r\n");

  CHECK(f.c.send("h ENABLE IMAP4rev2 X-UNKNOWN\r\n") == "* ENABLED IMAP4rev2\r\nh OK ENABLE completed.\r\n");
  CHECK(f.c.send("i ENABLE IMAP4rev2\r\n") == "* ENABLED\r\ni OK ENABLE completed.\r\n");
  // IMAP4rev2: UTF-8 names, no \Recent, ESEARCH, LIST in SELECT.
  CHECK(f.c.send("j CREATE \"Entw\xc3\xbcrfe\"\r\n") == "j OK CREATE completed.\r\n");
  CHECK(f.store.has("Entw\xc3\xbcrfe"));
  CHECK(f.c.send("k LIST \"\" Entw*\r\n") == "* LIST (\\HasNoChildren) \"/\" \"Entw\xc3\xbcrfe\"\r\nk OK LIST completed.\r\n");
  std::string sel = f.select();
  CHECK_FALSE(contains(sel, "RECENT"));
  CHECK(contains(sel, "* LIST () \"/\" INBOX\r\n"));
  CHECK(f.c.send("l FETCH 1 FLAGS\r\n") == "* 1 FETCH (FLAGS ())\r\nl OK FETCH completed.\r\n");
  CHECK(f.c.send("m SEARCH UNSEEN\r\n") == "* ESEARCH (TAG \"m\") ALL 1,3\r\nm OK SEARCH completed.\r\n");
  CHECK(f.c.send("n ENABLE CONDSTORE\r\n") == "n BAD ENABLE is only valid before SELECT.\r\n");
}

TEST_CASE("LOGOUT, bye() and bad commands after login", "[imap][session]") {
  Fixture f;
  f.select();
  CHECK(f.c.send("a BOGUS\r\n") == "a BAD Error in IMAP command: Unknown command BOGUS\r\n");
  CHECK(f.c.send("b FETCH 1:* (FLAGS\r\n") == "b BAD Error in IMAP command: Missing space\r\n");
  CHECK(f.c.send("c LOGOUT\r\n") == "* BYE Logging out\r\nc OK LOGOUT completed.\r\n");
  CHECK(f.c.last == Action::kClose);
  CHECK(f.session.state() == ImapSession::State::kLogout);
  Fixture g;
  CHECK(g.session.bye("Disconnected for inactivity.") == "* BYE Disconnected for inactivity.\r\n");
  CHECK(g.session.step().action == Action::kClose);
}

TEST_CASE("100,000 pipelined commands in bounded memory", "[imap][session][limits]") {
  Fixture f;
  f.select();
  const int kCommands = 100000;
  std::string all;
  for (int i = 0; i < kCommands; ++i) all += "n" + std::to_string(i) + " NOOP\r\n";
  // The glue's loop: read more only while little is buffered (back-pressure).
  const size_t kReadSize = 16384, kHighWater = 65536;
  size_t fed = 0, max_buffered = 0, oks = 0;
  std::string pending_out;
  while (true) {
    if (f.session.buffered() < kHighWater && fed < all.size()) {
      size_t n = std::min(kReadSize, all.size() - fed);
      f.session.feed(std::string_view(all).substr(fed, n));
      fed += n;
    }
    max_buffered = std::max(max_buffered, f.session.buffered());
    ImapSession::Step st = f.session.step();
    oks += count(st.out, " OK NOOP completed.\r\n");
    if (st.action == Action::kNeedInput && fed == all.size()) break;
    REQUIRE(st.action != Action::kClose);
  }
  CHECK(oks == static_cast<size_t>(kCommands));
  CHECK(max_buffered <= kHighWater + kReadSize);
}

TEST_CASE("byte-at-a-time input gives the same conversation", "[imap][session]") {
  const std::string script =
      "a1 CAPABILITY\r\n"
      "a2 SELECT INBOX\r\n"
      "a3 FETCH 1:* (UID FLAGS ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
      "a4 APPEND INBOX (\\Seen) {12}\r\nHello world!\r\n"
      "a5 APPEND INBOX {5+}\r\nabcde\r\n"
      "a6 SEARCH CHARSET UTF-8 OR SUBJECT {4}\r\nf\xc3\xbcr SEEN\r\n"
      "a7 STORE 1:2 +FLAGS (\\Flagged)\r\n"
      "a8 UID FETCH 4:* BODY[]\r\n"
      "a9 IDLE\r\nDONE\r\n"
      "b1 NOOP\n"
      "b2 LOGOUT\r\n";
  Fixture bulk, bytes;
  std::string out_bulk = bulk.c.send(script);
  std::string out_bytes = bytes.c.send_bytewise(script);
  CHECK(out_bulk == out_bytes);
  for (const char* tag : {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "b1", "b2"}) {
    INFO(tag);
    CHECK(contains(out_bulk, std::string("\n") + tag + " OK "));
  }
  CHECK(count(out_bulk, "+ Ready for literal data\r\n") == 2);
  CHECK(contains(out_bulk, "a9 OK IDLE completed.\r\nb1 OK NOOP completed.\r\n"));
}

TEST_CASE("CONDSTORE: HIGHESTMODSEQ, CHANGEDSINCE and MODSEQ in updates", "[imap][session][condstore]") {
  MemoryStore store;
  store.deliver("INBOX", kMsg1);
  store.deliver("INBOX", kMsg2);
  store.deliver("INBOX", kMsg3);
  ImapSession sa(test_config(), store, "bob"), sb(test_config(), store, "bob");
  Client a{sa}, b{sb};
  uint64_t highest = store.box("INBOX").modseq;
  std::string sel = a.send("a1 SELECT INBOX (CONDSTORE)\r\n");
  CHECK(contains(sel, "* OK [HIGHESTMODSEQ " + std::to_string(highest) + "] Highest\r\n"));
  b.send("b1 SELECT INBOX\r\n");
  b.send("b2 STORE 2 +FLAGS (\\Answered)\r\n");
  uint64_t ms2 = store.box("INBOX").msgs[1].modseq;
  // Another session's change arrives with its MODSEQ once CONDSTORE is on.
  CHECK(a.send("a2 NOOP\r\n") == "* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent) MODSEQ (" + std::to_string(ms2) +
                                      "))\r\na2 OK NOOP completed.\r\n");
  CHECK(a.send("a3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE " + std::to_string(highest) + ")\r\n") ==
        "* 2 FETCH (UID 2 FLAGS (\\Answered \\Recent) MODSEQ (" + std::to_string(ms2) + "))\r\na3 OK FETCH completed.\r\n");
  CHECK(a.send("a4 STATUS INBOX (HIGHESTMODSEQ)\r\n") ==
        "* STATUS INBOX (HIGHESTMODSEQ " + std::to_string(ms2) + ")\r\na4 OK STATUS completed.\r\n");
  CHECK(a.send("a5 SEARCH MODSEQ " + std::to_string(ms2) + "\r\n") ==
        "* SEARCH 2 (MODSEQ " + std::to_string(ms2) + ")\r\na5 OK SEARCH completed.\r\n");
  // Without CONDSTORE, updates carry no MODSEQ.
  CHECK(b.send("b3 NOOP\r\n") == "b3 OK NOOP completed.\r\n");
  a.send("a6 STORE 1 +FLAGS.SILENT (\\Seen)\r\n");
  CHECK(b.send("b4 NOOP\r\n") == "* 1 FETCH (UID 1 FLAGS (\\Seen))\r\nb4 OK NOOP completed.\r\n");
}

TEST_CASE("RENAME INBOX moves its messages and keeps INBOX", "[imap][session]") {
  Fixture f;
  CHECK(f.c.send("a RENAME INBOX Old\r\n") == "a OK RENAME completed.\r\n");
  CHECK(f.store.box("INBOX").msgs.empty());
  CHECK(f.store.box("Old").msgs.size() == 3);
  CHECK(f.c.send("b RENAME Old INBOX\r\n") == "b NO [ALREADYEXISTS] Mailbox already exists\r\n");
}

TEST_CASE("a client that disconnects in the middle of APPEND appends nothing", "[imap][session][append]") {
  MemoryStore store;
  {
    ImapSession s(test_config(), store, "bob");
    Client c{s};
    CHECK(c.send("a APPEND INBOX {100}\r\n") == "+ Ready for literal data\r\n");
    CHECK(c.send(std::string(60, 'x')).empty());
    CHECK(c.last == Action::kNeedInput);
  }  // the connection is gone: the session is destroyed with the literal half read
  CHECK(store.box("INBOX").msgs.empty());
  {
    ImapSession s(test_config(), store, "bob");
    Client c{s};
    CHECK(c.send("b APPEND INBOX {5+}\r\nab").empty());
  }
  CHECK(store.box("INBOX").msgs.empty());
}
