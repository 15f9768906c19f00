// connection.h + tls.h over real sockets on a real event loop: a plaintext
// exchange; STARTTLS on a live connection (and the pipelined-command injection it
// must not allow); failed handshakes; write back-pressure; idle and absolute
// timeouts; peer close; connect errors.
//
// Nothing here waits for time to pass: every wait is for a condition, with a
// deadline that only a hung test reaches.
#include "common/connection.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/line_reader.h"
#include "common/loop.h"
#include "common/sockets.h"
#include "common/tls.h"

using namespace tern::common;
using net::CloseReason;
using net::Connection;

namespace {

// Runs the loop until done() or a 20 s safety deadline; true when done() held.
bool run_until(ev::Loop& loop, const std::function<bool()>& done, uint64_t deadline_ms = 20000) {
  if (done()) return true;
  bool expired = false;
  ev::Timer deadline(loop), tick(loop);
  deadline.start(deadline_ms, [&] { expired = true; });
  // The predicate may depend on a plain socket the test drives by hand: look again
  // every few milliseconds even when the loop has nothing to do.
  tick.start(5, [] {}, 5);
  while (!done() && !expired) uv_run(loop.get(), UV_RUN_ONCE);
  return done();
}

// Lets the loop handle everything that is ready now, without waiting.
void run_ready(ev::Loop& loop) {
  for (int i = 0; i < 20; ++i) uv_run(loop.get(), UV_RUN_NOWAIT);
}

// A self-signed certificate for "localhost", made once per test run with the same
// code the development default uses.
struct Cert {
  std::string dir, cert, key;
  Cert() {
    char tmpl[] = "/tmp/tern-tls-test-XXXXXX";
    if (!::mkdtemp(tmpl)) std::abort();
    dir = tmpl;
    cert = dir + "/cert.pem";
    key = dir + "/key.pem";
    Status s = tls::make_self_signed(cert, key, "mail.example.test");
    if (!s) FAIL(s.error().message);
  }
  ~Cert() { std::filesystem::remove_all(dir); }
};
const Cert& cert() {
  static Cert c;
  return c;
}

std::shared_ptr<tls::Context> server_ctx() {
  Result<std::shared_ptr<tls::Context>> c = tls::Context::server(cert().cert, cert().key);
  if (!c) FAIL(c.error().message);
  return *c;
}

// A listener on 127.0.0.1:<ephemeral> that adopts each connection with `opt`.
struct Server {
  ev::Loop& loop;
  std::unique_ptr<net::Listener> listener;
  uint16_t port = 0;
  Connection::Options opt;
  std::vector<std::shared_ptr<Connection>> accepted;

  Server(ev::Loop& l, Connection::Options o = {}) : loop(l), opt(o) {
    Result<UniqueFd> fd = net::bind_inet("127.0.0.1", 0);
    REQUIRE(fd);
    port = net::local_port(fd->get());
    listener = std::make_unique<net::Listener>(loop, std::move(fd).value(), "test");
    listener->start([this](UniqueFd c) { accepted.push_back(Connection::adopt(loop, std::move(c), opt)); });
  }
  std::shared_ptr<Connection> accept_one() {
    REQUIRE(run_until(loop, [&] { return !accepted.empty(); }));
    return accepted.front();
  }
};

// A connection's close, as seen by on_close.
struct Closed {
  bool called = false;
  CloseReason reason = CloseReason::kLocal;
  std::string detail;
  std::function<void(CloseReason, const std::string&)> cb() {
    return [this](CloseReason r, const std::string& d) {
      REQUIRE_FALSE(called);  // exactly once
      called = true;
      reason = r;
      detail = d;
    };
  }
};

std::shared_ptr<Connection> connect_to(ev::Loop& loop, uint16_t port, Connection::Options opt = {}) {
  std::shared_ptr<Connection> out;
  std::string error;
  bool done = false;
  Connection::connect_tcp(loop, "127.0.0.1", port, "", 5000, opt, [&](Result<std::shared_ptr<Connection>> r) {
    done = true;
    if (r) out = *r; else error = r.error().message;
  });
  REQUIRE(run_until(loop, [&] { return done; }));
  if (!out) FAIL(error);
  return out;
}

// A plain blocking-free socket for tests that need a peer that misbehaves.
UniqueFd raw_connect(uint16_t port, int rcvbuf = 0) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd);
  if (rcvbuf) ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  return fd;
}

// Reads what is available on a non-blocking socket; false at EOF.
bool read_available(int fd, std::string& into) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    return n != 0;  // EAGAIN: still open
  }
}

}  // namespace

TEST_CASE("plaintext exchange over TCP, peer info and byte counts", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  std::shared_ptr<Connection> client = connect_to(loop, srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();

  LineReader server_reader(512);
  std::vector<std::string> server_lines;
  Closed server_closed, client_closed;
  server->start({.on_data =
                     [&](std::string_view d) {
                       server_reader.feed(d);
                       LineReader::Line l;
                       while (server_reader.next(l) == LineReader::Status::kLine) {
                         server_lines.emplace_back(l.text);
                         server->write("250 " + std::string(l.text) + "\r\n");
                       }
                     },
                 .on_close = server_closed.cb()});
  std::string client_got;
  client->start({.on_data = [&](std::string_view d) { client_got += d; }, .on_close = client_closed.cb()});

  client->write("HELO a\r\n");
  client->write("NOOP\r\n");
  REQUIRE(run_until(loop, [&] { return client_got == "250 HELO a\r\n250 NOOP\r\n"; }));
  CHECK(server_lines == std::vector<std::string>{"HELO a", "NOOP"});

  CHECK(server->peer().address == "127.0.0.1");
  CHECK(server->peer().port == client->peer().local_port);
  CHECK(server->peer().local_port == srv.port);
  CHECK_FALSE(server->peer().is_unix);
  CHECK(server->bytes_in() == 14);
  CHECK(server->bytes_out() == 22);
  CHECK_FALSE(server->tls_active());

  client->close();
  REQUIRE(run_until(loop, [&] { return server_closed.called && client_closed.called; }));
  CHECK(client_closed.reason == CloseReason::kLocal);
  CHECK(server_closed.reason == CloseReason::kPeerClosed);
}

TEST_CASE("UNIX socket connection reports the peer's credentials", "[connection]") {
  ev::Loop loop;
  char tmpl[] = "/tmp/tern-conn-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string path = std::string(tmpl) + "/s";
  Result<UniqueFd> lfd = net::bind_unix(path, 0600);
  REQUIRE(lfd);
  std::shared_ptr<Connection> server;
  net::Listener listener(loop, std::move(lfd).value(), "unix");
  listener.start([&](UniqueFd c) { server = Connection::adopt(loop, std::move(c)); });

  std::shared_ptr<Connection> client;
  Connection::connect_unix(loop, path, {}, [&](Result<std::shared_ptr<Connection>> r) {
    REQUIRE(r);
    client = *r;
  });
  REQUIRE(run_until(loop, [&] { return server && client; }));
  CHECK(server->peer().is_unix);
  REQUIRE(server->peer().has_creds);
  CHECK(server->peer().uid == ::geteuid());
  CHECK(server->peer().pid == ::getpid());
  std::string got;
  Closed sc;
  server->start({.on_data = [&](std::string_view d) { got += d; }, .on_close = sc.cb()});
  client->start({});
  client->write("over unix\n");
  client->close();
  REQUIRE(run_until(loop, [&] { return sc.called; }));
  CHECK(got == "over unix\n");
  CHECK(sc.reason == CloseReason::kPeerClosed);
  std::filesystem::remove_all(tmpl);
}

namespace {

// A tiny STARTTLS server and client on top of Connection, to test the upgrade of a
// live connection the way SMTP, IMAP and POP3 do it.
struct StartTlsRun {
  std::vector<std::pair<std::string, bool>> server_lines;  // line, and whether it came under TLS
  std::string client_plain, client_tls;
  std::string tls_description, verify_error;
  bool client_ready = false, server_ready = false;
  Closed server_closed, client_closed;
};

StartTlsRun run_starttls(bool clear_reader_on_starttls) {
  StartTlsRun run;
  ev::Loop loop;
  auto sctx = server_ctx();
  Result<std::shared_ptr<tls::Context>> cctx = tls::Context::client(true, cert().cert);
  REQUIRE(cctx);
  Server srv(loop);
  std::shared_ptr<Connection> client = connect_to(loop, srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();

  LineReader sreader(512), creader(512);
  server->start({.on_data =
                     [&](std::string_view d) {
                       sreader.feed(d);
                       LineReader::Line l;
                       while (sreader.next(l) == LineReader::Status::kLine) {
                         std::string line(l.text);
                         run.server_lines.emplace_back(line, server->tls_ready());
                         if (line == "STARTTLS") {
                           server->write("220 go ahead\r\n");  // the last plaintext byte we send
                           if (clear_reader_on_starttls) sreader.clear();
                           server->start_tls(tls::server_filter(*sctx));
                           return;
                         }
                         if (line == "QUIT") {
                           server->write("221 bye\r\n");
                           server->close();
                           return;
                         }
                         server->write("250 ok\r\n");
                       }
                     },
                 .on_close = run.server_closed.cb(),
                 .on_tls_ready = [&] { run.server_ready = true; }});
  client->start({.on_data =
                     [&](std::string_view d) {
                       if (client->tls_active()) {
                         run.client_tls += d;
                         return;
                       }
                       run.client_plain += d;
                       creader.feed(d);
                       LineReader::Line l;
                       while (creader.next(l) == LineReader::Status::kLine) {
                         if (l.text == "220 go ahead") {
                           client->start_tls(tls::client_filter(**cctx, "localhost"));
                           return;
                         }
                       }
                     },
                 .on_close = run.client_closed.cb(),
                 .on_tls_ready =
                     [&] {
                       run.client_ready = true;
                       run.tls_description = client->filter()->description();
                       run.verify_error = tls::verify_error(*client->filter());
                       client->write("EHLO again\r\nQUIT\r\n");
                     }});
  // One packet: the STARTTLS command and a command pipelined after it (CVE-2011-0411).
  client->write("EHLO a\r\nSTARTTLS\r\nRCPT TO:<injected@example.test>\r\n");
  REQUIRE(run_until(loop, [&] { return run.server_closed.called && run.client_closed.called; }));
  return run;
}

}  // namespace

TEST_CASE("STARTTLS upgrades a live connection; pipelined plaintext is not executed", "[connection][tls]") {
  StartTlsRun run = run_starttls(true);
  using P = std::pair<std::string, bool>;
  CHECK(run.server_lines == std::vector<P>{{"EHLO a", false}, {"STARTTLS", false}, {"EHLO again", true}, {"QUIT", true}});
  CHECK(run.client_plain == "250 ok\r\n220 go ahead\r\n");
  CHECK(run.client_tls == "250 ok\r\n221 bye\r\n");
  CHECK(run.client_ready);
  CHECK(run.server_ready);
  CHECK(run.verify_error == "");  // the client checked the chain and the name
  CHECK(run.tls_description.rfind("TLSv1.3 with cipher TLS_", 0) == 0);
  CHECK(run.server_closed.reason == CloseReason::kLocal);
  CHECK(run.client_closed.reason == CloseReason::kPeerClosed);  // close_notify, then EOF
}

TEST_CASE("without LineReader::clear() the pipelined command would run under TLS", "[connection][tls]") {
  // The control for the test above: it shows that the injected line really reaches
  // the server's reader, so the test above would fail if clear() did nothing.
  StartTlsRun run = run_starttls(false);
  using P = std::pair<std::string, bool>;
  CHECK(run.server_lines == std::vector<P>{{"EHLO a", false},
                                           {"STARTTLS", false},
                                           {"RCPT TO:<injected@example.test>", true},
                                           {"EHLO again", true},
                                           {"QUIT", true}});
}

TEST_CASE("implicit TLS, both ends Connection, with output written before the handshake", "[connection][tls]") {
  ev::Loop loop;
  auto sctx = server_ctx();
  Result<std::shared_ptr<tls::Context>> cctx = tls::Context::client(false);
  REQUIRE(cctx);
  Server srv(loop);
  std::shared_ptr<Connection> client = connect_to(loop, srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();
  std::string server_got, client_got;
  Closed sc, cc;
  server->start({.on_data = [&](std::string_view d) { server_got += d; }, .on_close = sc.cb()});
  server->start_tls(tls::server_filter(*sctx));
  server->write("* OK IMAP ready\r\n");  // held until the handshake is done
  client->start({.on_data = [&](std::string_view d) { client_got += d; }, .on_close = cc.cb()});
  client->start_tls(tls::client_filter(**cctx, "mail.example.test"));
  client->write("a LOGOUT\r\n");
  REQUIRE(run_until(loop, [&] { return server_got == "a LOGOUT\r\n" && client_got == "* OK IMAP ready\r\n"; }));
  CHECK(server->tls_ready());
  CHECK(client->tls_ready());
  // A large write goes through in TLS records and arrives whole.
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  server->write(big);
  REQUIRE(run_until(loop, [&] { return client_got.size() == 17 + big.size(); }));
  CHECK(client_got.substr(17) == big);
  server->close();
  REQUIRE(run_until(loop, [&] { return sc.called && cc.called; }));
  CHECK(cc.reason == CloseReason::kPeerClosed);
}

TEST_CASE("a failed handshake: plaintext to a TLS server", "[connection][tls]") {
  ev::Loop loop;
  auto sctx = server_ctx();
  Server srv(loop);
  UniqueFd raw = raw_connect(srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();
  Closed sc;
  bool data_seen = false;
  server->start({.on_data = [&](std::string_view) { data_seen = true; }, .on_close = sc.cb()});
  server->start_tls(tls::server_filter(*sctx));
  const char garbage[] = "EHLO plaintext.example\r\n";
  REQUIRE(::send(raw.get(), garbage, sizeof garbage - 1, 0) == static_cast<ssize_t>(sizeof garbage - 1));
  REQUIRE(run_until(loop, [&] { return sc.called; }));
  CHECK(sc.reason == CloseReason::kError);
  CHECK(sc.detail.rfind("TLS handshake failed: ", 0) == 0);
  CHECK(sc.detail.find("WRONG_VERSION_NUMBER") != std::string::npos);
  CHECK_FALSE(data_seen);
  // The client gets an alert or EOF, never a plaintext answer.
  std::string got;
  REQUIRE(run_until(loop, [&] { return !read_available(raw.get(), got); }));
  CHECK(got.find("EHLO") == std::string::npos);
}

TEST_CASE("a failed handshake: the client rejects a certificate it cannot verify", "[connection][tls]") {
  struct Case {
    const char* name;
    std::string ca_file;  // "" for the system store
    std::string sni;
    std::string reason;
  };
  const Case cases[] = {
      {"self-signed, not in the system store", "", "localhost", "self signed certificate"},
      {"trusted chain, wrong name", cert().cert, "other.example", "Hostname mismatch"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    ev::Loop loop;
    auto sctx = server_ctx();
    Result<std::shared_ptr<tls::Context>> cctx = tls::Context::client(true, c.ca_file);
    REQUIRE(cctx);
    Server srv(loop);
    std::shared_ptr<Connection> client = connect_to(loop, srv.port);
    std::shared_ptr<Connection> server = srv.accept_one();
    Closed sc, cc;
    bool client_ready = false;
    server->start({.on_close = sc.cb()});
    server->start_tls(tls::server_filter(*sctx));
    client->start({.on_close = cc.cb(), .on_tls_ready = [&] { client_ready = true; }});
    client->start_tls(tls::client_filter(**cctx, c.sni));
    client->write("secret that must not leave\r\n");
    REQUIRE(run_until(loop, [&] { return sc.called && cc.called; }));
    CHECK_FALSE(client_ready);
    CHECK(cc.reason == CloseReason::kError);
    CHECK(cc.detail.rfind("TLS handshake failed: certificate verification failed: " + c.reason, 0) == 0);
    // The server learns why from the client's alert.
    CHECK(sc.reason == CloseReason::kError);
    CHECK(sc.detail.rfind("TLS handshake failed: ", 0) == 0);
  }
}

TEST_CASE("TLS contexts: unreadable or mismatched files are configuration errors", "[tls]") {
  Result<std::shared_ptr<tls::Context>> missing = tls::Context::server("/nonexistent/cert.pem", "/nonexistent/key.pem");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().kind == ErrorKind::kConfig);
  CHECK(missing.error().message.rfind("cannot load TLS certificate /nonexistent/cert.pem: ", 0) == 0);

  char tmpl[] = "/tmp/tern-tls-other-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  REQUIRE(tls::make_self_signed(dir + "/c.pem", dir + "/k.pem", "other.test"));
  Result<std::shared_ptr<tls::Context>> mismatch = tls::Context::server(cert().cert, dir + "/k.pem");
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().kind == ErrorKind::kConfig);
  CHECK(mismatch.error().message.find("cannot load TLS key " + dir + "/k.pem") != std::string::npos);

  // The key file is private; the context reloads and keeps its subject.
  CHECK((std::filesystem::status(dir + "/k.pem").permissions() & std::filesystem::perms::group_all) ==
        std::filesystem::perms::none);
  Result<std::shared_ptr<tls::Context>> ok = tls::Context::server(dir + "/c.pem", dir + "/k.pem");
  REQUIRE(ok);
  CHECK((*ok)->subject() == "other.test");
  CHECK((*ok)->reload());
  CHECK((*ok)->subject() == "other.test");
  std::filesystem::remove_all(dir);
}

TEST_CASE("write back-pressure: a peer that does not read stops our reading", "[connection]") {
  ev::Loop loop;
  Connection::Options opt;
  opt.high_water = 256 << 10;
  opt.low_water = 64 << 10;
  Server srv(loop, opt);
  UniqueFd peer = raw_connect(srv.port, 4096);
  std::shared_ptr<Connection> server = srv.accept_one();
  int sndbuf = 4096;
  ::setsockopt(server->fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

  std::string server_got;
  int drains = 0;
  bool got_after_drain = false;
  Closed sc;
  server->start({.on_data =
                     [&](std::string_view d) {
                       server_got += d;
                       if (drains > 0) got_after_drain = true;
                     },
                 .on_close = sc.cb(),
                 .on_drain = [&] { ++drains; }});
  REQUIRE(server->reading());

  // A producer that writes far more than the peer takes.
  const size_t total = 4 << 20;
  std::string chunk(64 << 10, 'm');
  for (size_t sent = 0; sent < total; sent += chunk.size()) server->write(chunk);
  run_ready(loop);
  CHECK(server->pending_output() > opt.high_water);
  CHECK_FALSE(server->reading());

  // The peer pipelines a command: it stays in the kernel, not in our buffers.
  REQUIRE(::send(peer.get(), "NOOP\r\n", 6, 0) == 6);
  run_ready(loop);
  CHECK(server_got.empty());
  CHECK(server->bytes_in() == 0);

  // The peer catches up: output drains, on_drain fires, reading resumes.
  std::string received;
  REQUIRE(run_until(loop, [&] {
    read_available(peer.get(), received);
    return received.size() == total && server_got == "NOOP\r\n";
  }));
  CHECK(drains >= 1);
  CHECK(got_after_drain);
  CHECK(server->reading());
  CHECK(received == std::string(total, 'm'));
  CHECK(server->pending_output() == 0);
  server->close();
  REQUIRE(run_until(loop, [&] { return sc.called; }));
  CHECK(sc.reason == CloseReason::kLocal);
}

TEST_CASE("pause_reading is independent of back-pressure", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  UniqueFd peer = raw_connect(srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();
  std::string got;
  server->start({.on_data = [&](std::string_view d) { got += d; }});
  server->pause_reading();
  CHECK_FALSE(server->reading());
  REQUIRE(::send(peer.get(), "x", 1, 0) == 1);
  run_ready(loop);
  CHECK(got.empty());
  server->resume_reading();
  REQUIRE(run_until(loop, [&] { return got == "x"; }));
  server->abort();
  run_ready(loop);
}

TEST_CASE("timeouts end the connection with the right reason", "[connection]") {
  SECTION("idle") {
    ev::Loop loop;
    Connection::Options opt;
    opt.idle_timeout_ms = 30;
    Server srv(loop, opt);
    UniqueFd peer = raw_connect(srv.port);
    std::shared_ptr<Connection> server = srv.accept_one();
    Closed sc;
    server->start({.on_close = sc.cb()});
    REQUIRE(run_until(loop, [&] { return sc.called; }));
    CHECK(sc.reason == CloseReason::kIdleTimeout);
    CHECK(std::string(net::close_reason_name(sc.reason)) == "timeout");
    std::string got;
    REQUIRE(run_until(loop, [&] { return !read_available(peer.get(), got); }));  // the peer sees EOF
  }
  SECTION("absolute, while the client keeps the connection busy") {
    ev::Loop loop;
    Connection::Options opt;
    opt.idle_timeout_ms = 60000;
    opt.absolute_timeout_ms = 50;
    Server srv(loop, opt);
    UniqueFd peer = raw_connect(srv.port);
    std::shared_ptr<Connection> server = srv.accept_one();
    Closed sc;
    std::string got;
    server->start({.on_data = [&](std::string_view d) { got += d; }, .on_close = sc.cb()});
    REQUIRE(run_until(loop, [&] {
      (void)::send(peer.get(), "x", 1, MSG_NOSIGNAL);  // activity resets only the idle timer
      return sc.called;
    }));
    CHECK(sc.reason == CloseReason::kAbsoluteTimeout);
    CHECK_FALSE(got.empty());
  }
  SECTION("on_timeout may say goodbye and close") {
    ev::Loop loop;
    Connection::Options opt;
    opt.idle_timeout_ms = 30;
    Server srv(loop, opt);
    UniqueFd peer = raw_connect(srv.port);
    std::shared_ptr<Connection> server = srv.accept_one();
    Closed sc;
    std::vector<net::TimeoutKind> kinds;
    server->start({.on_close = sc.cb(), .on_timeout = [&](net::TimeoutKind k) {
                     kinds.push_back(k);
                     server->write("421 4.4.2 Error: timeout exceeded\r\n");
                     server->close();
                   }});
    std::string got;
    REQUIRE(run_until(loop, [&] { return !read_available(peer.get(), got) && sc.called; }));
    CHECK(got == "421 4.4.2 Error: timeout exceeded\r\n");
    CHECK(kinds == std::vector<net::TimeoutKind>{net::TimeoutKind::kIdle});
    CHECK(sc.reason == CloseReason::kLocal);
  }
  SECTION("set_idle_timeout on a running connection") {
    ev::Loop loop;
    Server srv(loop);
    UniqueFd peer = raw_connect(srv.port);
    std::shared_ptr<Connection> server = srv.accept_one();
    Closed sc;
    server->start({.on_close = sc.cb()});
    server->set_idle_timeout(20);
    REQUIRE(run_until(loop, [&] { return sc.called; }));
    CHECK(sc.reason == CloseReason::kIdleTimeout);
  }
}

TEST_CASE("close() sends everything written before it", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  UniqueFd peer = raw_connect(srv.port, 4096);
  std::shared_ptr<Connection> server = srv.accept_one();
  Closed sc;
  server->start({.on_close = sc.cb()});
  std::string big(2 << 20, 'q');
  server->write(big);
  server->close();
  server->write("ignored after close");
  std::string got;
  REQUIRE(run_until(loop, [&] { return !read_available(peer.get(), got) && sc.called; }));
  CHECK(got == big);
  CHECK(sc.reason == CloseReason::kLocal);
  CHECK(sc.detail == "");
}

TEST_CASE("abort() drops unsent output; on_close runs once, outside the call", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  UniqueFd peer = raw_connect(srv.port, 4096);
  std::shared_ptr<Connection> server = srv.accept_one();
  int sndbuf = 4096;  // so that most of the output waits in our buffer, not the kernel's
  ::setsockopt(server->fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  Closed sc;
  server->start({.on_close = sc.cb()});
  server->write(std::string(2 << 20, 'q'));
  CHECK(server->pending_output() > 0);
  server->abort();
  CHECK_FALSE(sc.called);
  server->abort();
  server->close();
  REQUIRE(run_until(loop, [&] { return sc.called; }));
  CHECK(server->closed());
  std::string got;
  REQUIRE(run_until(loop, [&] { return !read_available(peer.get(), got); }));
  CHECK(got.size() < (2u << 20));
}

TEST_CASE("a callback may drop the last reference to its connection", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  UniqueFd peer = raw_connect(srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();
  srv.accepted.clear();
  bool closed = false;
  std::weak_ptr<Connection> weak = server;
  server->start({.on_data = [&](std::string_view) { server.reset(); },  // last reference gone
                 .on_close = [&](CloseReason, const std::string&) { closed = true; }});
  REQUIRE(::send(peer.get(), "x", 1, 0) == 1);
  REQUIRE(run_until(loop, [&] { return !server; }));
  run_ready(loop);
  CHECK(weak.expired());
  CHECK_FALSE(closed);  // destroyed, not closed: no callback into a dead session
  std::string got;
  REQUIRE(run_until(loop, [&] { return !read_available(peer.get(), got); }));  // fd closed
}

TEST_CASE("peer close is reported as such", "[connection]") {
  ev::Loop loop;
  Server srv(loop);
  UniqueFd peer = raw_connect(srv.port);
  std::shared_ptr<Connection> server = srv.accept_one();
  Closed sc;
  std::string got;
  server->start({.on_data = [&](std::string_view d) { got += d; }, .on_close = sc.cb()});
  REQUIRE(::send(peer.get(), "last words", 10, 0) == 10);
  peer.reset();
  REQUIRE(run_until(loop, [&] { return sc.called; }));
  CHECK(got == "last words");
  CHECK(sc.reason == CloseReason::kPeerClosed);
  CHECK(std::string(net::close_reason_name(sc.reason)) == "disconnected");
}

TEST_CASE("connect errors are clear", "[connection]") {
  ev::Loop loop;
  // A port that was just free: nothing listens there.
  uint16_t port;
  {
    Result<UniqueFd> fd = net::bind_inet("127.0.0.1", 0);
    REQUIRE(fd);
    port = net::local_port(fd->get());
  }
  struct Case {
    std::string address;
    uint16_t port;
    std::string source;
    std::string error;
  };
  const Case cases[] = {
      {"127.0.0.1", port, "", "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused"},
      {"not-an-address", 25, "", "connect not-an-address:25: Invalid argument"},
      {"127.0.0.1", port, "192.0.2.200", "connect 127.0.0.1:" + std::to_string(port) + " from 192.0.2.200: Cannot assign requested address"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.error);
    bool done = false;
    std::string error;
    bool called_inline = true;
    Connection::connect_tcp(loop, c.address, c.port, c.source, 5000, {}, [&](Result<std::shared_ptr<Connection>> r) {
      done = true;
      REQUIRE_FALSE(r);
      error = r.error().message;
    });
    called_inline = done;
    REQUIRE(run_until(loop, [&] { return done; }));
    CHECK_FALSE(called_inline);  // the callback never runs inside connect_tcp()
    CHECK(error == c.error);
  }
  bool done = false;
  std::string error;
  Connection::connect_unix(loop, "/nonexistent/tern/socket", {}, [&](Result<std::shared_ptr<Connection>> r) {
    done = true;
    REQUIRE_FALSE(r);
    error = r.error().message;
  });
  REQUIRE(run_until(loop, [&] { return done; }));
  CHECK(error == "connect /nonexistent/tern/socket: No such file or directory");
}

TEST_CASE("TLS contexts: the cipher list is applied strictly", "[tls]") {
  const std::string high =
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  auto names = [](const tls::Context& c) {
    std::vector<std::string> out;
    STACK_OF(SSL_CIPHER)* list = SSL_CTX_get_ciphers(c.get());
    for (size_t i = 0; i < sk_SSL_CIPHER_num(list); ++i) out.push_back(SSL_CIPHER_standard_name(sk_SSL_CIPHER_value(list, i)));
    return out;
  };
  auto has = [](const std::vector<std::string>& v, std::string_view part) {
    for (const std::string& n : v) {
      if (n.find(part) != std::string::npos) return true;
    }
    return false;
  };
  // BoringSSL's default (what an empty list keeps) still has 3DES and static RSA.
  Result<std::shared_ptr<tls::Context>> def = tls::Context::server(cert().cert, cert().key);
  REQUIRE(def);
  CHECK(has(names(**def), "3DES"));

  Result<std::shared_ptr<tls::Context>> strong = tls::Context::server(cert().cert, cert().key, "TLSv1.2", high);
  REQUIRE(strong);
  std::vector<std::string> n = names(**strong);
  CHECK_FALSE(n.empty());
  for (const std::string& c : n) {
    INFO(c);
    CHECK(c.rfind("TLS_ECDHE_", 0) == 0);  // forward secrecy: no static RSA
    CHECK((c.find("_GCM_") != std::string::npos || c.find("CHACHA20_POLY1305") != std::string::npos));
  }

  // A typo is a configuration error naming the list, not a silently shorter list.
  Result<std::shared_ptr<tls::Context>> typo =
      tls::Context::server(cert().cert, cert().key, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256:NO-SUCH-CIPHER");
  REQUIRE_FALSE(typo);
  CHECK(typo.error().kind == ErrorKind::kConfig);
  CHECK(typo.error().message.rfind("invalid TLS cipher list 'ECDHE-RSA-AES128-GCM-SHA256:NO-SUCH-CIPHER': ", 0) == 0);
}
