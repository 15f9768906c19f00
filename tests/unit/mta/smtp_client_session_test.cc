// The SMTP client's state machine against canned server dialogues: EHLO/HELO,
// STARTTLS per policy, AUTH, pipelined and lockstep transactions with DATA and
// BDAT, every way a recipient can end, and hostile servers (bytes one at a time,
// overlong lines, endless continuations, replies out of turn, injection attempts).
#include "mta/smtp_client_session.h"

#include <catch2/catch.hpp>

#include "common/line_reader.h"
#include "common/text.h"

using namespace tern;
using common::smtp::Reply;
using mta::Capabilities;
using mta::ClientSession;
using mta::SessionConfig;
using mta::TlsPolicy;
using mta::Transaction;
using Phase = ClientSession::Phase;

namespace {

// The driver's glue without the socket: server bytes -> lines -> replies -> session.
struct Wire {
  ClientSession s;
  common::LineReader lines{4096};
  common::smtp::ReplyParser parser{false};
  std::string written;
  bool start_tls = false, closed = false;
  std::string error;  // a line or reply the glue refused

  explicit Wire(SessionConfig c) : s(std::move(c)) {}

  void apply(ClientSession::Out& o) {
    written += o.write;
    start_tls = start_tls || o.start_tls;
    closed = closed || o.close;
  }
  void feed(std::string_view bytes) {
    lines.feed(bytes);
    common::LineReader::Line line;
    for (;;) {
      auto st = lines.next(line);
      if (st == common::LineReader::Status::kNeedMore) return;
      if (st == common::LineReader::Status::kTooLong) {
        error = "too long";
        return;
      }
      auto ps = parser.feed(line.text);
      if (ps == common::smtp::ReplyParser::Status::kNeedMore) continue;
      if (ps == common::smtp::ReplyParser::Status::kError) {
        error = parser.error();
        return;
      }
      ClientSession::Out o;
      s.on_reply(parser.take(), o);
      apply(o);
      parser.set_enhanced(s.caps().enhanced);
    }
  }
  std::string take() { return std::exchange(written, ""); }
  void tls_ready() {
    ClientSession::Out o;
    s.tls_ready(o);
    apply(o);
  }
  void begin(const Transaction& t) {
    ClientSession::Out o;
    s.begin(t, o);
    apply(o);
  }
  void body_sent() {
    ClientSession::Out o;
    s.body_sent(o);
    apply(o);
  }
};

SessionConfig config(TlsPolicy tls = TlsPolicy::kNone) {
  SessionConfig c;
  c.helo_name = "mx.a.test";
  c.tls = tls;
  return c;
}

const char* kEhloFull =
    "250-mx.b.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 CHUNKING\r\n";
const char* kEhloPipelining = "250-mx.b.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n";
const char* kEhloPlain = "250-mx.b.test\r\n250 HELP\r\n";

Transaction tx(std::vector<std::string> rcpts = {"bob@b.test"}) {
  Transaction t;
  t.sender = "alice@a.test";
  for (auto& r : rcpts) t.rcpts.push_back({r, "", ""});
  t.size = 123;
  return t;
}

Wire ready(const char* ehlo, SessionConfig c = config()) {
  Wire w(std::move(c));
  w.feed("220 mx.b.test ESMTP\r\n");
  REQUIRE(w.take() == "EHLO mx.a.test\r\n");
  w.feed(ehlo);
  REQUIRE(w.s.phase() == Phase::kReady);
  return w;
}

}  // namespace

TEST_CASE("parse_ehlo reads the extensions and ignores what it does not know") {
  Reply r(250, "", std::vector<std::string>{"mx.b.test greets you", "pipelining", "SIZE 1000", "8BITMIME", "SMTPUTF8",
                                            "CHUNKING", "STARTTLS", "DSN", "ENHANCEDSTATUSCODES", "AUTH PLAIN login CRAM-MD5",
                                            "AUTH=LOGIN PLAIN", "X-WHATEVER 1 2", "", "SIZE"});
  Capabilities c = mta::parse_ehlo(r, {});
  CHECK(c.server_name == "mx.b.test");
  CHECK(c.esmtp);
  CHECK(c.pipelining);
  CHECK(c.size);
  CHECK(c.size_limit == 0);  // the last SIZE (without an argument) wins
  CHECK(c.eightbitmime);
  CHECK(c.smtputf8);
  CHECK(c.chunking);
  CHECK(c.starttls);
  CHECK(c.dsn);
  CHECK(c.enhanced);
  CHECK(c.auth == std::vector<std::string>{"PLAIN", "LOGIN", "CRAM-MD5"});

  Capabilities d = mta::parse_ehlo(r, {"pipelining", "chunking", "auth", "starttls"});
  CHECK_FALSE(d.pipelining);
  CHECK_FALSE(d.chunking);
  CHECK_FALSE(d.starttls);
  CHECK(d.auth.empty());
  CHECK(d.eightbitmime);

  Reply bad(250, "", std::vector<std::string>{"x", "SIZE notanumber", "AUTH"});
  Capabilities b = mta::parse_ehlo(bad, {});
  CHECK(b.size);
  CHECK(b.size_limit == 0);
  CHECK(b.auth.empty());

  // A server cannot make us keep an endless AUTH list.
  std::string many = "AUTH";
  for (int i = 0; i < 100; ++i) many += " M" + std::to_string(i);
  Capabilities m = mta::parse_ehlo(Reply(250, "", std::vector<std::string>{"x", many}), {});
  CHECK(m.auth.size() == 32);
}

TEST_CASE("tls policy names") {
  CHECK(*mta::parse_tls_policy("none") == TlsPolicy::kNone);
  CHECK(*mta::parse_tls_policy(" May ") == TlsPolicy::kMay);
  CHECK(*mta::parse_tls_policy("encrypt") == TlsPolicy::kEncrypt);
  CHECK(*mta::parse_tls_policy("verify") == TlsPolicy::kVerify);
  CHECK_FALSE(mta::parse_tls_policy("dane"));
  CHECK_FALSE(mta::parse_tls_policy("secure"));
}

TEST_CASE("greeting and EHLO") {
  SECTION("a refused greeting ends the session") {
    Wire w(config());
    w.feed("554 5.7.1 go away\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kGreeting);
    CHECK(w.s.failure().reply.code == 554);
    CHECK(w.take().empty());
  }
  SECTION("EHLO refused with 5xx: HELO, and no extensions") {
    Wire w(config());
    w.feed("220 old.b.test\r\n");
    CHECK(w.take() == "EHLO mx.a.test\r\n");
    w.feed("502 5.5.2 what\r\n");
    CHECK(w.take() == "HELO mx.a.test\r\n");
    w.feed("250 old.b.test\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK_FALSE(w.s.caps().esmtp);
    w.begin(tx());
    CHECK(w.take() == "MAIL FROM:<alice@a.test>\r\n");  // no SIZE, no pipelining
  }
  SECTION("EHLO refused with 4xx is a failure, not a HELO") {
    Wire w(config());
    w.feed("220 x\r\n");
    w.take();
    w.feed("421 4.3.2 shutting down\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kHello);
  }
  SECTION("HELO refused") {
    Wire w(config());
    w.feed("220 x\r\n500 no\r\n501 no helo\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().stage == "HELO");
  }
  SECTION("a server calling itself by our name is a mail loop") {
    Wire w(config());
    w.feed("220 x\r\n250-MX.A.TEST\r\n250 PIPELINING\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kLoop);
  }
  SECTION("a multi-line greeting") {
    Wire w(config());
    w.feed("220-mx.b.test\r\n220-more words\r\n220 last\r\n");
    CHECK(w.take() == "EHLO mx.a.test\r\n");
  }
}

TEST_CASE("STARTTLS follows smtp_tls_security_level") {
  SECTION("may: offered, so used; EHLO again inside TLS forgets the old extensions") {
    Wire w(config(TlsPolicy::kMay));
    w.feed("220 x\r\n250-mx.b.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n");
    CHECK(w.take() == "EHLO mx.a.test\r\nSTARTTLS\r\n");
    w.feed("220 2.0.0 go ahead\r\n");
    CHECK(w.start_tls);
    CHECK(w.s.phase() == Phase::kHandshake);
    w.tls_ready();
    CHECK(w.s.tls());
    CHECK(w.take() == "EHLO mx.a.test\r\n");
    CHECK_FALSE(w.s.caps().pipelining);
    w.feed("250-mx.b.test\r\n250 8BITMIME\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK_FALSE(w.s.caps().pipelining);
    CHECK(w.s.caps().eightbitmime);
    CHECK(w.take().empty());  // no second STARTTLS
  }
  SECTION("may: not offered, plaintext") {
    Wire w = ready(kEhloPlain, config(TlsPolicy::kMay));
    CHECK_FALSE(w.s.tls());
  }
  SECTION("may: refused, plaintext") {
    Wire w(config(TlsPolicy::kMay));
    w.feed("220 x\r\n250-mx.b.test\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK_FALSE(w.start_tls);
  }
  SECTION("encrypt: not offered, no delivery") {
    Wire w(config(TlsPolicy::kEncrypt));
    w.feed("220 x\r\n");
    w.feed(kEhloPlain);
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kTlsRequired);
    CHECK(w.s.failure().reply.enhanced == "4.7.4");
  }
  SECTION("verify: refused, no delivery") {
    Wire w(config(TlsPolicy::kVerify));
    w.feed("220 x\r\n250-mx.b.test\r\n250 STARTTLS\r\n454 4.7.0 TLS not available\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kTlsRequired);
    CHECK(w.s.failure().stage == "STARTTLS");
  }
  SECTION("none: offered but not used") {
    Wire w(config(TlsPolicy::kNone));
    w.feed("220 x\r\n250-mx.b.test\r\n250 STARTTLS\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.take() == "EHLO mx.a.test\r\n");
  }
  SECTION("implicit TLS: no STARTTLS at all") {
    SessionConfig c = config(TlsPolicy::kEncrypt);
    c.tls_on_connect = true;
    Wire w(c);
    CHECK(w.s.tls());
    w.feed("220 x\r\n250-mx.b.test\r\n250 STARTTLS\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.take() == "EHLO mx.a.test\r\n");
  }
}

TEST_CASE("AUTH with PLAIN and LOGIN") {
  SessionConfig c = config(TlsPolicy::kEncrypt);
  c.tls_on_connect = true;
  c.auth = true;
  c.user = "alice@a.test";
  c.password = "pass word";
  SECTION("PLAIN with the initial response") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH LOGIN PLAIN\r\n");
    std::string want = std::string("\0alice@a.test\0pass word", 23);
    CHECK(w.take() == "EHLO mx.a.test\r\nAUTH PLAIN " + common::base64_encode(want) + "\r\n");
    CHECK(w.s.phase() == Phase::kAuth);
    w.feed("235 2.7.0 Authentication successful\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.s.authenticated());
  }
  SECTION("LOGIN when that is all the server has") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH LOGIN\r\n");
    CHECK(w.take() == "EHLO mx.a.test\r\nAUTH LOGIN\r\n");
    w.feed("334 VXNlcm5hbWU6\r\n");
    CHECK(w.take() == common::base64_encode("alice@a.test") + "\r\n");
    w.feed("334 UGFzc3dvcmQ6\r\n");
    CHECK(w.take() == common::base64_encode("pass word") + "\r\n");
    w.feed("235 ok\r\n");
    CHECK(w.s.authenticated());
  }
  SECTION("a wrong password") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH PLAIN\r\n535 5.7.8 Error: authentication failed\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kAuth);
    CHECK(w.s.failure().reply.code == 535);
    CHECK_FALSE(w.s.failure().local);
  }
  SECTION("a server that challenges forever is cut off") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH LOGIN\r\n");
    w.take();
    for (int i = 0; i < 10 && w.s.phase() == Phase::kAuth; ++i) w.feed("334 VXNlcm5hbWU6\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.take().find("*\r\n") != std::string::npos);
  }
  SECTION("a challenge that is not base64 cancels") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH LOGIN\r\n");
    w.take();
    w.feed("334 !!!not base64!!!\r\n");
    CHECK(w.take() == "*\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
  }
  SECTION("no mechanism we have") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH CRAM-MD5 GSSAPI\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().local);
    CHECK(w.s.failure().detail.find("CRAM-MD5 GSSAPI") != std::string::npos);
  }
  SECTION("no password in the clear unless configured") {
    SessionConfig p = config(TlsPolicy::kMay);
    p.auth = true;
    p.user = "u";
    p.password = "secret";
    Wire w(p);
    w.feed("220 x\r\n250-mx.b.test\r\n250 AUTH PLAIN LOGIN\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().local);
    CHECK(w.take().find("AUTH") == std::string::npos);
    p.plaintext_auth_without_tls = true;
    Wire ok(p);
    ok.feed("220 x\r\n250-mx.b.test\r\n250 AUTH PLAIN LOGIN\r\n");
    CHECK(ok.s.phase() == Phase::kAuth);
  }
  SECTION("a server without AUTH gets the mail without a login") {
    Wire w(c);
    w.feed("220 x\r\n250-mx.b.test\r\n250 PIPELINING\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK_FALSE(w.s.authenticated());
  }
}

TEST_CASE("a pipelined transaction with DATA") {
  Wire w = ready(kEhloPipelining);
  Transaction t = tx({"bob@b.test", "nobody@b.test"});
  t.eightbit = true;
  w.begin(t);
  CHECK(w.take() ==
        "MAIL FROM:<alice@a.test> BODY=8BITMIME\r\nRCPT TO:<bob@b.test>\r\nRCPT TO:<nobody@b.test>\r\nDATA\r\n");
  CHECK(w.s.waiting_for() == ClientSession::Wait::kMail);
  w.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <nobody@b.test>: User unknown\r\n");
  CHECK(w.s.phase() == Phase::kTransaction);
  w.feed("354 go ahead\r\n");
  CHECK(w.s.phase() == Phase::kBody);
  CHECK_FALSE(w.s.use_bdat());
  w.body_sent();
  CHECK(w.s.waiting_for() == ClientSession::Wait::kDataDone);
  CHECK_FALSE(w.s.results_ready());
  w.feed("250 2.0.0 Ok: queued as X1\r\n");
  REQUIRE(w.s.results_ready());
  auto res = w.s.take_results();
  REQUIRE(res.size() == 2);
  CHECK(res[0].reply.code == 250);
  CHECK(res[0].reply.enhanced == "2.0.0");
  CHECK(res[0].stage == "end of DATA");
  CHECK(res[1].reply.code == 550);
  CHECK(res[1].reply.enhanced == "5.1.1");
  CHECK(res[1].stage == "RCPT TO");
  CHECK(w.s.phase() == Phase::kReady);
  CHECK(w.take().empty());  // the next transaction needs no RSET

  // Connection reuse: the next message on the same session.
  w.begin(tx());
  CHECK(w.take() == "MAIL FROM:<alice@a.test>\r\nRCPT TO:<bob@b.test>\r\nDATA\r\n");
}

TEST_CASE("a pipelined transaction with BDAT: one round trip") {
  Wire w = ready(kEhloFull);
  Transaction t = tx();
  t.smtputf8 = true;
  t.ret = "HDRS";
  t.envid = "id+2B1";
  t.rcpts[0].notify = "SUCCESS,FAILURE";
  t.rcpts[0].orcpt = "rfc822;bob@b.test";
  w.begin(t);
  CHECK(w.take() ==
        "MAIL FROM:<alice@a.test> SIZE=123 SMTPUTF8 RET=HDRS ENVID=id+2B1\r\n"
        "RCPT TO:<bob@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@b.test\r\n"
        "BDAT 123 LAST\r\n");
  CHECK(w.s.phase() == Phase::kBody);
  CHECK(w.s.use_bdat());
  // Replies to MAIL and RCPT may come while the body is still going out.
  w.feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
  CHECK(w.s.phase() == Phase::kBody);
  w.body_sent();
  w.feed("250 2.0.0 Ok: 123 bytes queued as X2\r\n");
  auto res = w.s.take_results();
  REQUIRE(res.size() == 1);
  CHECK(res[0].reply.code == 250);
  CHECK(w.s.phase() == Phase::kReady);
}

TEST_CASE("a BDAT reply before the chunk was sent is a protocol error") {
  Wire w = ready(kEhloFull);
  w.begin(tx());
  w.take();
  w.feed("250 ok\r\n250 ok\r\n250 2.0.0 too early\r\n");
  CHECK(w.s.phase() == Phase::kFailed);
  REQUIRE(w.s.results_ready());
  auto res = w.s.take_results();
  CHECK(res[0].reply.code == 451);  // not delivered: the message was never complete
}

TEST_CASE("a transaction in lockstep without PIPELINING") {
  Wire w = ready(kEhloPlain);
  w.begin(tx({"a@b.test", "b@b.test"}));
  CHECK(w.take() == "MAIL FROM:<alice@a.test>\r\n");
  w.feed("250 ok\r\n");
  CHECK(w.take() == "RCPT TO:<a@b.test>\r\n");
  CHECK(w.s.waiting_for() == ClientSession::Wait::kRcpt);
  w.feed("451 4.7.1 try later\r\n");
  CHECK(w.take() == "RCPT TO:<b@b.test>\r\n");
  w.feed("250 ok\r\n");
  CHECK(w.take() == "DATA\r\n");
  CHECK(w.s.waiting_for() == ClientSession::Wait::kData);
  w.feed("354 go\r\n");
  CHECK(w.s.phase() == Phase::kBody);
  w.body_sent();
  w.feed("250 ok queued\r\n");
  auto res = w.s.take_results();
  CHECK(res[0].reply.code == 451);
  CHECK(res[0].stage == "RCPT TO");
  CHECK(res[1].reply.code == 250);
}

TEST_CASE("failed transactions") {
  SECTION("MAIL refused (pipelined): every recipient gets its reply, no RSET needed") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx({"a@b.test", "b@b.test"}));
    w.take();
    w.feed("552 5.3.4 too big\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n554 5.5.1 no valid recipients\r\n");
    auto res = w.s.take_results();
    for (auto& r : res) {
      CHECK(r.reply.code == 552);
      CHECK(r.stage == "MAIL FROM");
    }
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.take().empty());
  }
  SECTION("every RCPT refused: RSET before the connection is used again") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.take();
    w.feed("250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n");
    CHECK(w.s.results_ready());
    CHECK(w.take() == "RSET\r\n");
    CHECK(w.s.phase() == Phase::kReset);
    w.feed("250 2.0.0 Ok\r\n");
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.s.take_results()[0].reply.code == 550);
  }
  SECTION("RSET refused: the session is done") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.feed("250 ok\r\n550 no\r\n554 no\r\n500 what\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.failure().kind == ClientSession::FailureKind::kReset);
  }
  SECTION("DATA refused: the accepted recipients get that reply") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.feed("250 ok\r\n250 ok\r\n451 4.3.0 no DATA now\r\n");
    auto res = w.s.take_results();
    CHECK(res[0].reply.code == 451);
    CHECK(res[0].stage == "DATA");
  }
  SECTION("354 with nobody accepted: an empty message whose outcome means nothing") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.take();
    w.feed("250 ok\r\n550 5.1.1 no\r\n354 go on\r\n");
    CHECK(w.take() == ".\r\n");
    w.feed("250 ok\r\n");
    auto res = w.s.take_results();
    CHECK(res[0].reply.code == 550);
  }
  SECTION("the message refused after the end of DATA") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.feed("250 ok\r\n250 ok\r\n354 go\r\n");
    w.body_sent();
    w.feed("554 5.7.1 spam\r\n");
    auto res = w.s.take_results();
    CHECK(res[0].reply.code == 554);
    CHECK(res[0].stage == "end of DATA");
    CHECK(w.s.phase() == Phase::kReady);
  }
  SECTION("a reply in the middle of the body") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx());
    w.feed("250 ok\r\n250 ok\r\n354 go\r\n250 early\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
    CHECK(w.s.take_results()[0].reply.code == 451);
  }
  SECTION("the connection breaks in the middle of the body") {
    Wire w = ready(kEhloPipelining);
    w.begin(tx({"a@b.test", "b@b.test"}));
    w.feed("250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n");
    CHECK(w.s.stage_text() == "while sending message body");
    w.s.connection_lost(Reply(421, "4.4.2", "lost connection with mx.b.test[127.0.0.3]:25 while sending message body"));
    auto res = w.s.take_results();
    CHECK(res[0].reply.code == 550);  // its own outcome stands
    CHECK(res[1].reply.code == 421);
    CHECK(res[1].reply.enhanced == "4.4.2");
    CHECK(w.s.phase() == Phase::kFailed);
  }
  SECTION("a server speaking while idle") {
    Wire w = ready(kEhloPlain);
    w.feed("421 4.4.2 idle timeout\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
  }
}

TEST_CASE("nothing from the queue can add a command") {
  Wire w = ready(kEhloPipelining);
  Transaction t = tx({"bob@b.test>\r\nRCPT TO:<evil@x.test"});
  w.begin(t);
  CHECK(w.take().empty());
  REQUIRE(w.s.results_ready());
  CHECK(w.s.take_results()[0].reply.code == 550);
  Transaction t2 = tx();
  t2.sender = std::string("a@b\0c", 5);
  w.begin(t2);
  CHECK(w.take().empty());
}

TEST_CASE("the whole dialogue one byte at a time") {
  const std::string tail = "250 2.0.0 Ok: queued\r\n";
  for (int bytewise = 0; bytewise < 2; ++bytewise) {
    Wire w(config());
    auto feed = [&](const std::string& s) {
      if (bytewise) {
        for (char c : s) w.feed(std::string_view(&c, 1));
      } else {
        w.feed(s);
      }
    };
    feed(std::string("220 mx.b.test ESMTP\r\n") + kEhloFull);
    REQUIRE(w.s.phase() == Phase::kReady);
    w.begin(tx());
    feed("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
    w.body_sent();
    feed(tail);
    auto res = w.s.take_results();
    CHECK(res[0].reply.code == 250);
    CHECK(res[0].reply.enhanced == "2.0.0");
  }
}

TEST_CASE("hostile servers") {
  SECTION("an overlong line") {
    Wire w(config());
    w.feed("220 " + std::string(5000, 'x') + "\r\n");
    CHECK(w.error == "too long");
  }
  SECTION("endless continuation lines") {
    Wire w(config());
    for (int i = 0; i < 300 && w.error.empty(); ++i) w.feed("220-more\r\n");
    CHECK_FALSE(w.error.empty());
    CHECK(w.s.phase() == Phase::kGreeting);
  }
  SECTION("a reply that is not one") {
    Wire w(config());
    w.feed("hello there\r\n");
    CHECK_FALSE(w.error.empty());
    Wire w2(config());
    w2.feed("99 x\r\n");
    CHECK_FALSE(w2.error.empty());
  }
  SECTION("codes changing inside a multi-line reply") {
    Wire w(config());
    w.feed("220-x\r\n250 y\r\n");
    CHECK_FALSE(w.error.empty());
  }
  SECTION("NUL and 8-bit bytes in a reply are only text: nothing of it reaches our commands") {
    Wire w(config());
    w.feed(std::string("220 x\0\xff\r\n", 9));
    CHECK(w.take() == "EHLO mx.a.test\r\n");
    w.feed(std::string("250-mx.b.test\0EVIL\r\n250 PIPELINING\0\r\n", 37));
    CHECK(w.s.phase() == Phase::kReady);
    CHECK(w.take().empty());
  }
  SECTION("a reply during the TLS handshake") {
    Wire w(config(TlsPolicy::kMay));
    w.feed("220 x\r\n250-y\r\n250 STARTTLS\r\n220 go\r\n");
    CHECK(w.s.phase() == Phase::kHandshake);
    w.feed("250 sneaky\r\n");
    CHECK(w.s.phase() == Phase::kFailed);
  }
}

TEST_CASE("stage texts for lost connections") {
  Wire w(config());
  CHECK(w.s.stage_text() == "while receiving the initial server greeting");
  w.feed("220 x\r\n");
  CHECK(w.s.stage_text() == "while performing the EHLO handshake");
  w.feed(kEhloPipelining);
  w.begin(tx());
  CHECK(w.s.stage_text() == "while sending MAIL FROM");
  w.feed("250 ok\r\n");
  CHECK(w.s.stage_text() == "while sending RCPT TO");
  w.feed("250 ok\r\n");
  CHECK(w.s.stage_text() == "while sending DATA command");
  w.feed("354 go\r\n");
  CHECK(w.s.stage_text() == "while sending message body");
  w.body_sent();
  CHECK(w.s.stage_text() == "while sending end of data -- message may be sent more than once");
}
