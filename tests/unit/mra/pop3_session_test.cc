#include "mra/pop3_session.h"

#include <catch2/catch.hpp>

#include "common/mime.h"
#include "memory_store_fixture.h"

using namespace tern::mra;
using namespace tern::mra::pop3;
using tern::mra::testing::MemoryStore;
using Action = Pop3Session::Action;

namespace {

struct Client {
  Pop3Session& s;
  Action last = Action::kNeedInput;
  std::string send(const std::string& in) {
    s.feed(in);
    std::string out;
    for (;;) {
      Pop3Session::Step st = s.step();
      out += st.out;
      last = st.action;
      if (st.action != Action::kContinue) break;
    }
    return out;
  }
};

const std::string kA = "From: a@example.org\nSubject: one\n\nfirst\n.hidden dot\n..two dots\nend\n";
const std::string kB = "From: b@example.org\r\nSubject: two\r\n\r\nno final newline";

SessionConfig tls_config() {
  SessionConfig c;
  c.tls = true;
  return c;
}

// A session in TRANSACTION state on `store` (logged in through USER/PASS).
struct Logged {
  Pop3Session s{tls_config()};
  Client c{s};
  std::string opened;
  explicit Logged(MemoryStore& store) {
    c.send("USER bob\r\nPASS secret\r\n");
    REQUIRE(c.last == Action::kAuthenticate);
    REQUIRE(s.auth_result(true, "bob").action == Action::kLoggedIn);
    opened = s.open_maildrop(store, "bob").out;
  }
};

}  // namespace

TEST_CASE("POP3 greeting, CAPA and the plaintext policy", "[pop3][session]") {
  SessionConfig cfg;
  cfg.starttls = true;
  Pop3Session s(cfg);
  Client c{s};
  CHECK(s.greeting() == "+OK Tern ready.\r\n");
  CHECK(c.send("CAPA\r\n") ==
        "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\n"
        "IMPLEMENTATION Tern\r\n.\r\n");
  CHECK(c.send("USER bob\r\n") == "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n");
  CHECK(c.send("AUTH PLAIN\r\n") == "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections.\r\n");
  CHECK(c.send("STAT\r\n") == "-ERR Command not permitted before authentication.\r\n");
  // STLS drops what was pipelined behind it.
  CHECK(c.send("STLS\r\nUSER injected\r\n") == "+OK Begin TLS negotiation now.\r\n");
  CHECK(c.last == Action::kStartTls);
  s.tls_started();
  CHECK(c.send("CAPA\r\n") ==
        "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
        "SASL PLAIN LOGIN\r\nUSER\r\nIMPLEMENTATION Tern\r\n.\r\n");
  CHECK(c.send("STLS\r\n") == "-ERR TLS is already active.\r\n");
  CHECK(c.send("AUTH\r\n") == "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

TEST_CASE("POP3 USER/PASS and SASL AUTH", "[pop3][session][auth]") {
  Pop3Session s(tls_config());
  Client c{s};
  CHECK(c.send("PASS x\r\n") == "-ERR No username given.\r\n");
  CHECK(c.send("USER bob\r\n") == "+OK\r\n");
  CHECK(c.send("PASS two words\r\n").empty());
  CHECK(c.last == Action::kAuthenticate);
  CHECK(s.auth_request().initial_response == std::string("\0bob\0two words", 14));
  CHECK(s.auth_result(false, "").out == "-ERR [AUTH] Authentication failed.\r\n");
  CHECK(c.send("AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n").empty());
  CHECK(s.auth_request().initial_response == std::string("\0bob\0secret", 11));
  CHECK(s.auth_result(false, "", true).out == "-ERR [SYS/TEMP] Temporary authentication failure.\r\n");
  c.send("AUTH LOGIN\r\n");
  CHECK(s.auth_challenge("Username:") == "+ VXNlcm5hbWU6\r\n");
  CHECK(c.send("Ym9i\r\n").empty());
  CHECK(s.auth_response() == "bob");
  s.auth_challenge("Password:");
  CHECK(c.send("*\r\n") == "-ERR Authentication aborted.\r\n");
  CHECK(c.last == Action::kAuthCancel);
  CHECK(c.send("AUTH CRAM-MD5\r\n") == "-ERR Unsupported authentication mechanism.\r\n");
  c.send("USER bob\r\nPASS a\r\n");
  CHECK(s.auth_result(false, "").action == Action::kContinue);
  c.send("USER bob\r\nPASS b\r\n");
  Pop3Session::Step last = s.auth_result(false, "");
  CHECK(last.action == Action::kClose);
  CHECK(last.out == "-ERR [AUTH] Authentication failed.\r\n-ERR Too many invalid authentication attempts.\r\n");
}

TEST_CASE("POP3 transaction: STAT, LIST, UIDL, RETR, TOP", "[pop3][session]") {
  MemoryStore store;
  store.deliver("INBOX", kA);
  store.deliver("INBOX", kB);
  Logged l(store);
  CHECK(l.opened == "+OK Logged in.\r\n");
  size_t sa = tern::common::mime::to_crlf(kA).size(), sb = kB.size();
  CHECK(l.c.send("STAT\r\n") == "+OK 2 " + std::to_string(sa + sb) + "\r\n");
  CHECK(l.c.send("LIST\r\n") == "+OK\r\n1 " + std::to_string(sa) + "\r\n2 " + std::to_string(sb) + "\r\n.\r\n");
  CHECK(l.c.send("LIST 2\r\n") == "+OK 2 " + std::to_string(sb) + "\r\n");
  CHECK(l.c.send("LIST 3\r\n") == "-ERR No such message.\r\n");
  CHECK(l.c.send("UIDL\r\n") == "+OK\r\n1 000000016553F100\r\n2 000000026553F100\r\n.\r\n");
  CHECK(l.c.send("UIDL 1\r\n") == "+OK 1 000000016553F100\r\n");
  CHECK(l.c.send("RETR 1\r\n") ==
        "+OK " + std::to_string(sa) + " octets\r\n"
        "From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n..hidden dot\r\n...two dots\r\nend\r\n.\r\n");
  CHECK(l.c.send("RETR 2\r\n") ==
        "+OK " + std::to_string(sb) + " octets\r\nFrom: b@example.org\r\nSubject: two\r\n\r\nno final newline\r\n.\r\n");
  CHECK(l.c.send("TOP 1 0\r\n") == "+OK\r\nFrom: a@example.org\r\nSubject: one\r\n\r\n.\r\n");
  CHECK(l.c.send("TOP 1 2\r\n") == "+OK\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n..hidden dot\r\n.\r\n");
  CHECK(l.c.send("TOP 2 99\r\n") == "+OK\r\nFrom: b@example.org\r\nSubject: two\r\n\r\nno final newline\r\n.\r\n");
  CHECK(l.c.send("USER x\r\n") == "-ERR Command not permitted in this state.\r\n");
  CHECK(l.c.send("NOOP\r\n") == "+OK\r\n");
}

TEST_CASE("POP3 DELE takes effect only at QUIT", "[pop3][session]") {
  MemoryStore store;
  store.deliver("INBOX", kA);
  store.deliver("INBOX", kB);
  store.deliver("INBOX", kA);
  SECTION("RSET undoes, QUIT expunges") {
    Logged l(store);
    CHECK(l.c.send("DELE 1\r\n") == "+OK Marked to be deleted.\r\n");
    CHECK(l.c.send("DELE 1\r\n") == "-ERR No such message.\r\n");
    CHECK(l.c.send("RETR 1\r\n") == "-ERR No such message.\r\n");
    CHECK(l.c.send("STAT\r\n").substr(0, 6) == "+OK 2 ");
    CHECK(l.c.send("LIST\r\n").find("\r\n1 ") == std::string::npos);
    CHECK(l.c.send("RSET\r\n") == "+OK\r\n");
    CHECK(l.c.send("STAT\r\n").substr(0, 6) == "+OK 3 ");
    l.c.send("DELE 2\r\nRETR 3\r\n");
    CHECK(store.box("INBOX").msgs.size() == 3);  // nothing happens before QUIT
    CHECK(l.c.send("QUIT\r\n") == "+OK Logging out, messages deleted.\r\n");
    CHECK(l.c.last == Action::kClose);
    REQUIRE(store.box("INBOX").msgs.size() == 2);
    CHECK(store.box("INBOX").msgs[0].uid == 1);
    CHECK(store.box("INBOX").msgs[1].uid == 3);
    CHECK(store.box("INBOX").msgs[1].flags == std::vector<std::string>{"\\Seen"});  // RETR'd
    CHECK(store.box("INBOX").msgs[0].flags.empty());
  }
  SECTION("QUIT without DELE says nothing was deleted") {
    Logged l(store);
    CHECK(l.c.send("RETR 1\r\nRSET\r\n").find("-ERR") == std::string::npos);
    CHECK(l.c.send("QUIT\r\n") == "+OK Logging out.\r\n");
    CHECK(store.box("INBOX").msgs.size() == 3);
  }
  SECTION("a dropped connection deletes nothing and releases the lock") {
    {
      Logged l(store);
      l.c.send("DELE 1\r\nDELE 2\r\n");
    }
    CHECK(store.box("INBOX").msgs.size() == 3);
    Logged again(store);
    CHECK(again.opened == "+OK Logged in.\r\n");
    // UIDLs are the same in the new session.
    CHECK(again.c.send("UIDL 3\r\n") == "+OK 3 000000036553F100\r\n");
  }
}

TEST_CASE("POP3: one session per mailbox", "[pop3][session]") {
  MemoryStore store;
  store.deliver("INBOX", kA);
  Logged first(store);
  CHECK(first.opened == "+OK Logged in.\r\n");
  Pop3Session second(tls_config());
  Client c2{second};
  c2.send("USER bob\r\nPASS secret\r\n");
  second.auth_result(true, "bob");
  Pop3Session::Step st = second.open_maildrop(store, "bob");
  CHECK(st.out == "-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n");
  CHECK(st.action == Action::kClose);
  first.c.send("QUIT\r\n");
  Logged third(store);
  CHECK(third.opened == "+OK Logged in.\r\n");
}

TEST_CASE("POP3: input waits between authentication and open_maildrop", "[pop3][session]") {
  MemoryStore store;
  store.deliver("INBOX", kA);
  Pop3Session s(tls_config());
  Client c{s};
  c.send("USER bob\r\nPASS x\r\nSTAT\r\n");
  CHECK(s.auth_result(true, "bob").action == Action::kLoggedIn);
  CHECK(c.send("").empty());  // STAT stays buffered
  CHECK(s.take_buffered() == "STAT\r\n");
  Pop3Session worker(tls_config());
  Client w{worker};
  CHECK(worker.open_maildrop(store, "bob").out == "+OK Logged in.\r\n");
  CHECK(w.send("STAT\r\n").substr(0, 6) == "+OK 1 ");
}

TEST_CASE("POP3 garbage and overlong lines", "[pop3][session][limits]") {
  Pop3Session s(SessionConfig{});
  Client c{s};
  std::string out = c.send("GET / HTTP/1.1\r\nHost: x\r\n\x16\x03\x01\r\n" + std::string(300, 'A') +
                           "\r\nA\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\n");
  CHECK(c.last == Action::kClose);
  CHECK(out.find("-ERR Too many invalid commands.\r\n") != std::string::npos);
  CHECK(s.state() == Pop3Session::State::kClosed);
  Pop3Session t(SessionConfig{});
  Client d{t};
  CHECK(d.send(std::string(10000, 'x') + "\r\nCAPA\r\n").substr(0, 25) == "-ERR Line too long.\r\n+OK ");
}

TEST_CASE("dot_stuff", "[pop3]") {
  CHECK(dot_stuff("") == ".\r\n");
  CHECK(dot_stuff(".") == "..\r\n.\r\n");
  CHECK(dot_stuff("a\n.\n.b\n") == "a\r\n..\r\n..b\r\n.\r\n");
  CHECK(dot_stuff("H: 1\n\nl1\nl2\nl3\n", 1) == "H: 1\r\n\r\nl1\r\n.\r\n");
  CHECK(dot_stuff("no header or blank", 5) == "no header or blank\r\n.\r\n");
  CHECK(dot_stuff("\nbody1\nbody2\n", 1) == "\r\nbody1\r\n.\r\n");
}
