// The LMTP state machine with a fake Host: replies as values, pipelining order,
// per-recipient DATA replies, BDAT, limits, bare LF/CR, smuggling, byte-at-a-time.
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "mda/delivery_ids.h"
#include "mda/lmtp_session.h"

using namespace tern;
using namespace tern::mda;

namespace {

struct FakeHost : LmtpSession::Host {
  std::string out;
  bool closed = false;
  int pauses = 0;
  bool paused = false;
  bool async = false;  // hold lookups until release()
  std::vector<std::pair<std::string, LookupDone>> pending;
  std::map<std::string, std::string> users = {{"demo@example.test", "demo@example.test"}, {"sys", "sys"}};
  std::vector<std::string> lookups;
  std::vector<std::string> bodies;
  std::vector<DeliveryJob> delivered;
  bool fail_second = false;
  bool ids = false;                               // XTERN-DELIVERY-ID support
  std::set<std::pair<std::string, std::string>> recorded;
  bool keys_in_delivery = false;                  // deliveries record their delivery_key (a Maildir's index)
  std::set<std::string> delivery_keys;            // recorded that way

  bool delivery_ids() const override { return ids; }
  bool delivered_before(const std::string& id, const MailUser&, const std::string& r) override {
    return recorded.count({id, r}) > 0 || delivery_keys.count(delivery_key(id, r)) > 0;
  }
  void record_delivered(const std::string& id, const std::vector<std::string>& rs, RecordDone done) override {
    for (const std::string& r : rs) recorded.insert({id, r});
    done({});
  }

  void write(std::string_view b) override { out += b; }
  void close() override { closed = true; }
  void pause(bool p) override {
    if (p) ++pauses;
    paused = p;
  }
  void lookup(const std::string& user, LookupDone done) override {
    lookups.push_back(user);
    if (async) {
      pending.emplace_back(user, std::move(done));
      return;
    }
    answer(user, std::move(done));
  }
  void answer(const std::string& user, LookupDone done) {
    if (user == "tempfail@example.test") return done(common::make_error(common::ErrorKind::kTemp, "authd down"));
    auto it = users.find(user);
    if (it == users.end()) return done(common::make_error(common::ErrorKind::kNotFound, "no"));
    MailUser u;
    u.name = it->second;
    done(u);
  }
  void release() {
    auto p = std::move(pending);
    pending.clear();
    for (auto& [u, d] : p) answer(u, std::move(d));
  }
  void deliver(std::shared_ptr<const MessageSpool> body, std::vector<DeliveryJob> jobs, DeliverDone done) override {
    std::string b;
    (void)body->read([&](std::string_view c) {
      b.append(c);
      return common::Status();
    });
    bodies.push_back(b);
    std::vector<Outcome> outs;
    for (size_t i = 0; i < jobs.size(); ++i) {
      Outcome o;
      o.reply = (fail_second && i == 1) ? common::smtp::Reply(452, "4.2.2", "Mailbox is full")
                                        : common::smtp::Reply(250, "2.0.0", "<" + jobs[i].envelope.recipient + "> Saved");
      if (keys_in_delivery && o.reply.positive() && !jobs[i].envelope.delivery_key.empty()) {
        delivery_keys.insert(jobs[i].envelope.delivery_key);
        o.key_recorded = true;
      }
      outs.push_back(o);
      delivered.push_back(jobs[i]);
    }
    done(outs);
  }
};

struct Fixture {
  FakeHost host;
  std::shared_ptr<LmtpSession> s;
  explicit Fixture(LmtpSession::Options o = {}) {
    o.hostname = "mda.example.test";
    o.local_domains = {"example.test"};
    s = std::make_shared<LmtpSession>(o, &host, "t-1");
    s->start();
    host.out.clear();
  }
  std::string send(const std::string& in) {
    host.out.clear();
    s->on_input(in);
    return host.out;
  }
  std::string send_bytes(const std::string& in) {
    host.out.clear();
    for (char c : in) s->on_input(std::string_view(&c, 1));
    return host.out;
  }
};

std::vector<std::string> codes(const std::string& out) {
  std::vector<std::string> v;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t nl = out.find("\r\n", pos);
    std::string line = out.substr(pos, nl - pos);
    if (line.size() > 3 && line[3] == ' ') v.push_back(line.substr(0, 3));
    pos = nl + 2;
  }
  return v;
}

const std::string kTxn = "LHLO mx.example.test\r\nMAIL FROM:<a@example.org>\r\n";

}  // namespace

TEST_CASE("greeting and LHLO capabilities", "[lmtp_session]") {
  FakeHost host;
  auto s = std::make_shared<LmtpSession>(LmtpSession::Options{}, &host, "x");
  s->start();
  CHECK(host.out.rfind("220 ", 0) == 0);
  Fixture f;
  std::string r = f.send("LHLO mx.example.test\r\n");
  CHECK(r.find("250-PIPELINING\r\n") != std::string::npos);
  CHECK(r.find("250-ENHANCEDSTATUSCODES\r\n") != std::string::npos);
  CHECK(r.find("250-CHUNKING\r\n") != std::string::npos);
  CHECK(r.find("250-8BITMIME\r\n") != std::string::npos);
  CHECK(r.find("250-SMTPUTF8\r\n") != std::string::npos);
  CHECK(r.find("250 SIZE 104857600\r\n") != std::string::npos);
  CHECK(codes(f.send("EHLO x\r\n")) == std::vector<std::string>{"500"});
}

TEST_CASE("a transaction with mixed recipients, pipelined", "[lmtp_session]") {
  Fixture f;
  std::string r = f.send(kTxn +
                         "RCPT TO:<demo@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<demo+Sent@example.test>\r\n"
                         "RCPT TO:<tempfail@example.test>\r\nRCPT TO:<sys@example.test>\r\nDATA\r\n"
                         "Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n");
  // 250 LHLO, 250 MAIL, 250, 550, 250, 451, 250 (sys by local part), 354, then one
  // reply per accepted recipient (3), 221.
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "550", "250", "451", "250", "354", "250", "250", "250",
                                             "221"});
  CHECK(r.find("550 5.1.1 <nobody@example.test> User doesn't exist") != std::string::npos);
  CHECK(r.find("451 4.3.0") != std::string::npos);
  REQUIRE(f.host.delivered.size() == 3);
  CHECK(f.host.delivered[0].envelope.recipient == "demo@example.test");
  CHECK(f.host.delivered[1].envelope.folder == "Sent");
  CHECK(f.host.delivered[1].user.name == "demo@example.test");
  CHECK(f.host.delivered[2].user.name == "sys");
  CHECK(f.host.delivered[0].envelope.sender == "a@example.org");
  CHECK(f.host.delivered[0].envelope.received.find("for <demo@example.test>") != std::string::npos);
  REQUIRE(f.host.bodies.size() == 1);
  CHECK(f.host.bodies[0] == "Subject: x\n\n.dot\nbody\n");
  CHECK(f.host.closed);
  // Lookups were by address without +detail, then by local part for a local domain.
  CHECK(f.host.lookups == std::vector<std::string>{"demo@example.test", "nobody@example.test", "nobody",
                                                   "demo@example.test", "tempfail@example.test", "sys@example.test", "sys"});
}

TEST_CASE("pipelined input waits for asynchronous lookups; replies stay in order", "[lmtp_session]") {
  Fixture f;
  f.host.async = true;
  std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nRCPT TO:<x@other.test>\r\nNOOP\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250"});
  CHECK(f.host.paused);
  f.host.out.clear();
  f.host.release();  // first RCPT answered; the second lookup starts
  CHECK(codes(f.host.out) == std::vector<std::string>{"250"});
  f.host.out.clear();
  f.host.release();
  CHECK(codes(f.host.out) == std::vector<std::string>{"550", "250"});
  CHECK(!f.host.paused);
}

TEST_CASE("per-recipient DATA outcomes", "[lmtp_session]") {
  Fixture f;
  f.host.fail_second = true;
  std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nRCPT TO:<sys@example.test>\r\nDATA\r\nx\r\n.\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "250", "354", "250", "452"});
  // The transaction is over: a new MAIL is allowed.
  CHECK(codes(f.send("MAIL FROM:<>\r\n")) == std::vector<std::string>{"250"});
}

TEST_CASE("sequencing errors", "[lmtp_session]") {
  Fixture f;
  CHECK(codes(f.send("MAIL FROM:<a@b.example>\r\n")) == std::vector<std::string>{"503"});
  CHECK(codes(f.send("LHLO x\r\nRCPT TO:<demo@example.test>\r\n")) == std::vector<std::string>{"250", "503"});
  CHECK(codes(f.send("DATA\r\n")) == std::vector<std::string>{"503"});
  CHECK(codes(f.send("MAIL FROM:<a@b.example>\r\nMAIL FROM:<a@b.example>\r\n")) == std::vector<std::string>{"250", "503"});
  CHECK(codes(f.send("DATA\r\n")) == std::vector<std::string>{"503"});  // no valid recipients
  CHECK(codes(f.send("RSET\r\nRCPT TO:<demo@example.test>\r\n")) == std::vector<std::string>{"250", "503"});
  CHECK(codes(f.send("VRFY x\r\nSTARTTLS\r\nFOO\r\n")) == std::vector<std::string>{"502", "502", "500"});
}

TEST_CASE("size limit: SIZE= refused early, oversized DATA read then refused", "[lmtp_session]") {
  LmtpSession::Options o;
  o.size_limit = 100;
  Fixture f(o);
  CHECK(codes(f.send("LHLO x\r\nMAIL FROM:<a@b.example> SIZE=101\r\n")) == std::vector<std::string>{"250", "552"});
  std::string big(300, 'x');
  std::string r = f.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n" + big + "\r\n.\r\nNOOP\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "354", "552", "250"});
  CHECK(f.host.delivered.empty());
}

TEST_CASE("recipient limit and error limit", "[lmtp_session]") {
  LmtpSession::Options o;
  o.recipient_limit = 2;
  o.hard_error_limit = 3;
  Fixture f(o);
  std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nRCPT TO:<demo@example.test>\r\nRCPT TO:<demo@example.test>\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "250", "452"});
  r = f.send("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n");
  CHECK(codes(r) == std::vector<std::string>{"500", "500", "500", "421"});
  CHECK(f.host.closed);
}

TEST_CASE("bare LF in a command line disconnects", "[lmtp_session]") {
  Fixture f;
  std::string r = f.send("LHLO x\nMAIL FROM:<a@b.example>\r\n");
  CHECK(codes(r) == std::vector<std::string>{"550"});
  CHECK(r.find("bare <LF>") != std::string::npos);
  CHECK(f.host.closed);
}

TEST_CASE("SMTP smuggling: a bare-LF end marker neither ends DATA nor runs commands", "[lmtp_session]") {
  for (const std::string marker : {"\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"}) {
    Fixture f;
    std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nDATA\r\nSubject: real\r\n\r\nbody" + marker +
                           "MAIL FROM:<evil@x.example>\r\nRCPT TO:<sys@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n");
    INFO("marker size " << marker.size());
    // One message, refused as a whole with 550 5.5.2, and the connection closed: the
    // smuggled MAIL/RCPT never ran (no second lookup of sys@...).
    CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "354", "550"});
    CHECK(f.host.delivered.empty());
    CHECK(f.host.closed);
    CHECK(f.host.lookups == std::vector<std::string>{"demo@example.test"});
  }
}

TEST_CASE("with forbid_bare_newline off, bare LF is content", "[lmtp_session]") {
  LmtpSession::Options o;
  o.forbid_bare_newline = false;
  Fixture f(o);
  std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nDATA\r\na\n.\nb\r\n.\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "354", "250"});
  REQUIRE(f.host.bodies.size() == 1);
  CHECK(f.host.bodies[0] == "a\n.\nb\n");
}

TEST_CASE("BDAT chunks, BINARYMIME, and BDAT errors still consume the chunk", "[lmtp_session]") {
  Fixture f;
  std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\nBDAT 10\r\nSubject: x" + "BDAT 10 LAST\r\n\r\n\r\nbody\r\n" +
                         "NOOP\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "250", "250", "250"});
  CHECK(r.find("10 octets received") != std::string::npos);
  REQUIRE(f.host.bodies.size() == 1);
  CHECK(f.host.bodies[0] == "Subject: x\n\nbody\n");

  Fixture g;
  r = g.send("LHLO x\r\nBDAT 5\r\nRSET\r\nNOOP\r\n");
  // The 5 bytes "RSET\r" are chunk data, not a command; then "\nNOOP" is a bare-LF line.
  CHECK(codes(r).at(1) == "503");

  Fixture h;
  r = h.send("LHLO x\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "503"});
  r = h.send("BDAT 4 LAST\r\na\nb\r");
  CHECK(codes(r) == std::vector<std::string>{"250"});  // binary: bare LF/CR are content
  CHECK(h.host.bodies.at(0) == "a\nb\r");

  Fixture k;
  r = k.send(kTxn + "RCPT TO:<demo@example.test>\r\nBDAT 4 LAST\r\na\nb\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "550"});  // not BINARYMIME: bare LF refused
}

TEST_CASE("BDAT refuses a bare CR or LF as DATA does, wherever the chunks split", "[lmtp_session]") {
  // RFC 5321 2.3.8 and RFC 3030 3: without BODY=BINARYMIME a chunk is text, and a
  // bare CR or LF in it is refused like one in DATA (550 5.5.2, then disconnect).
  struct Case {
    std::string chunks;
    std::string reply;  // "" when the message is taken
  } cases[] = {
      {"BDAT 4 LAST\r\na\rbc", "bare <CR>"},
      {"BDAT 2\r\na\rBDAT 2 LAST\r\nbc", "bare <CR>"},
      {"BDAT 2\r\na\rBDAT 0 LAST\r\n", "bare <CR>"},
      {"BDAT 2\r\na\rBDAT 2 LAST\r\n\nb", ""},  // CR, then its LF in the next chunk
      {"BDAT 3 LAST\r\na\nb", "bare <LF>"},
      {"DATA\r\nx\r\n.\r\n" + std::string("MAIL FROM:<a@example.org>\r\n") +
           "RCPT TO:<demo@example.test>\r\nBDAT 4 LAST\r\na\rbc",
       "bare <CR>"},  // a DATA message first: its reader's state must not hide the chunk's CR
  };
  for (const Case& c : cases) {
    INFO(c.chunks);
    Fixture f;
    std::string r = f.send(kTxn + "RCPT TO:<demo@example.test>\r\n" + c.chunks);
    if (c.reply.empty()) {
      CHECK(r.find("bare") == std::string::npos);
      CHECK(f.host.bodies.size() == 1);
    } else {
      CHECK(r.find(c.reply) != std::string::npos);
      CHECK(f.host.closed);
    }
  }
}

TEST_CASE("the whole dialogue fed one byte at a time", "[lmtp_session]") {
  Fixture f;
  std::string r = f.send_bytes(kTxn + "RCPT TO:<demo@example.test>\r\nRCPT TO:<sys@example.test>\r\nDATA\r\n"
                                      "Subject: y\r\n\r\n.\r\n" /* not the end: ".\r\n" after a header CRLF? */);
  // "Subject: y\r\n\r\n.\r\n" does end the message (CRLF . CRLF after the blank line).
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "250", "354", "250", "250"});
  CHECK(f.host.bodies.at(0) == "Subject: y\n\n");
}

TEST_CASE("long lines and UTF-8 addresses", "[lmtp_session]") {
  Fixture f;
  std::string r = f.send("LHLO x\r\n" + std::string(5000, 'A') + "\r\nNOOP\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "500", "250"});
  r = f.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<jü@example.test>\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "553"});
  r = f.send("RSET\r\nMAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<jü@example.test>\r\n");
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "550"});
}

TEST_CASE("closing mid-DATA delivers nothing and writes nothing more", "[lmtp_session]") {
  Fixture f;
  f.send(kTxn + "RCPT TO:<demo@example.test>\r\nDATA\r\npartial body\r\n");
  f.s->on_closed();
  std::string r = f.send("\r\n.\r\n");
  CHECK(r.empty());
  CHECK(f.host.delivered.empty());
}

TEST_CASE("timeout says 421", "[lmtp_session]") {
  Fixture f;
  f.s->on_timeout();
  CHECK(codes(f.host.out) == std::vector<std::string>{"421"});
  CHECK(f.host.closed);
}

TEST_CASE("XTERN-DELIVERY-ID: a repeated delivery id is answered without a second copy", "[lmtp_session]") {
  Fixture f;
  CHECK(f.send("LHLO mx\r\n").find("250-XTERN-DELIVERY-ID") == std::string::npos);
  CHECK(codes(f.send("MAIL FROM:<a@example.org> XTERN-DELIVERY-ID=Q1\r\n")) == std::vector<std::string>{"555"});
  f.host.ids = true;
  f.send("RSET\r\n");
  CHECK(f.send("LHLO mx\r\n").find("XTERN-DELIVERY-ID") != std::string::npos);
  const std::string txn =
      "MAIL FROM:<a@example.org> XTERN-DELIVERY-ID=Q1\r\nRCPT TO:<demo@example.test>\r\nRCPT TO:<sys@example.test>\r\n"
      "DATA\r\nSubject: once\r\n\r\nx\r\n.\r\n";
  f.host.fail_second = true;  // sys gets 452 the first time
  CHECK(codes(f.send(txn)) == std::vector<std::string>{"250", "250", "250", "354", "250", "452"});
  CHECK(f.host.delivered.size() == 2);
  CHECK(f.host.recorded.size() == 1);  // only the successful one is remembered
  // tern-mta sends it again (it did not record our 250): demo is not written twice,
  // sys (which failed) is delivered now.
  f.host.fail_second = false;
  std::string r = f.send(txn);
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "354", "250", "250"});
  CHECK(r.find("250 2.0.0 <demo@example.test> Ok: already delivered") != std::string::npos);
  REQUIRE(f.host.delivered.size() == 3);
  CHECK(f.host.delivered[2].envelope.recipient == "sys@example.test");
  // Another id is another delivery.
  std::string other = txn;
  other.replace(other.find("Q1"), 2, "Q2");
  f.send(other);
  CHECK(f.host.delivered.size() == 5);
}

TEST_CASE("XTERN-DELIVERY-ID: pairs a delivery recorded with its UID are not recorded again", "[lmtp_session]") {
  Fixture f;
  f.host.ids = true;
  f.host.keys_in_delivery = true;
  f.send("LHLO mx\r\n");
  const std::string txn =
      "MAIL FROM:<a@example.org> XTERN-DELIVERY-ID=Q7\r\nRCPT TO:<demo@example.test>\r\nRCPT TO:<sys@example.test>\r\n"
      "DATA\r\nSubject: once\r\n\r\nx\r\n.\r\n";
  CHECK(codes(f.send(txn)) == std::vector<std::string>{"250", "250", "250", "354", "250", "250"});
  REQUIRE(f.host.delivered.size() == 2);
  CHECK(f.host.delivered[0].envelope.delivery_key == delivery_key("Q7", "demo@example.test"));
  CHECK(f.host.delivery_keys.size() == 2);
  CHECK(f.host.recorded.empty());  // no separate record: no extra commit
  std::string r = f.send(txn);
  CHECK(codes(r) == std::vector<std::string>{"250", "250", "250", "354", "250", "250"});
  CHECK(r.find("<sys@example.test> Ok: already delivered") != std::string::npos);
  CHECK(f.host.delivered.size() == 2);
  // Without a delivery id there is no key to record.
  f.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n");
  REQUIRE(f.host.delivered.size() == 3);
  CHECK(f.host.delivered[2].envelope.delivery_key.empty());
}
