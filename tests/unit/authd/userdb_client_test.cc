// UserdbClient against the real UserdbServer over a real UNIX socket, in one process.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "authd/auth_core.h"
#include "authd/userdb_server.h"
#include "common/auth_client.h"
#include "common/sockets.h"

using namespace tern;

namespace {

struct Fixture {
  std::string dir;
  common::ev::Loop loop;
  std::unique_ptr<authd::AuthCore> core;
  std::unique_ptr<authd::UserdbServer> server;
  std::string path;

  Fixture() {
    char t[] = "/tmp/tern-udbc-XXXXXX";
    dir = ::mkdtemp(t);
    auto db = authd::UserDb::open(dir + "/users.lmdb", true);
    REQUIRE(db);
    authd::UserRecord u;
    u.name = "demo@example.test";
    u.password = "$y$unused";
    u.quota_rule = "*:storage=1G";
    REQUIRE((*db)->put_user(u, true));
    u.name = "off@example.test";
    u.enabled = false;
    REQUIRE((*db)->put_user(u, true));
    authd::AuthSettings s;
    s.defaults = {"5000", "5001", dir + "/mail/%d/%n", "maildir:~/Maildir", ""};
    core = std::make_unique<authd::AuthCore>(loop, s, std::move(db).value(), nullptr);
    server = std::make_unique<authd::UserdbServer>(*core);
    path = dir + "/auth-userdb";
    auto fd = common::net::bind_unix(path, 0600);
    REQUIRE(fd);
    server->listen(fd->get());
  }
  ~Fixture() {
    server.reset();
    core.reset();
    std::filesystem::remove_all(dir);
  }

  // Runs the loop until done() or a 10 s deadline.
  void run_until(const std::function<bool()>& done) {
    common::ev::Timer check(loop), deadline(loop);
    bool timed_out = false;
    check.start(1, [&] {
      if (done()) loop.stop();
    }, 2);
    deadline.start(10000, [&] {
      timed_out = true;
      loop.stop();
    });
    loop.run();
    REQUIRE_FALSE(timed_out);
  }

  // A raw client: sends `text`, returns everything the server wrote before closing
  // or before `until` appeared.
  std::string raw(const std::string& text, const std::string& until) {
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path.c_str());
    REQUIRE(::connect(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::write(s, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    std::string got;
    common::ev::FdWatch w(loop, s);
    bool closed = false;
    w.start(UV_READABLE, [&](int, int) {
      char buf[4096];
      ssize_t n = ::read(s, buf, sizeof buf);
      if (n <= 0) closed = true;
      else got.append(buf, static_cast<size_t>(n));
    });
    run_until([&] { return closed || (!until.empty() && got.find(until) != std::string::npos); });
    w.stop();
    ::close(s);
    return got;
  }
};

}  // namespace

TEST_CASE("USER lookups: found, not found, disabled, defaults applied") {
  Fixture f;
  common::auth::UserdbClient c(f.loop, {f.path});
  std::optional<common::Result<common::auth::UserInfo>> a, b, d, e;
  c.user("Demo@Example.test", "lmtp", [&](auto r) { a = std::move(r); });
  c.user("nobody@example.test", "lmtp", [&](auto r) { b = std::move(r); });
  c.user("off@example.test", "lmtp", [&](auto r) { d = std::move(r); });
  c.user("bad name", "lmtp", [&](auto r) { e = std::move(r); });
  f.run_until([&] { return a && b && d && e; });
  REQUIRE(a->ok());
  CHECK(a->value().user == "demo@example.test");
  CHECK(a->value().uid == 5000u);
  CHECK(a->value().gid == 5001u);
  CHECK(a->value().home == f.dir + "/mail/example.test/demo");
  CHECK(a->value().mail == "maildir:~/Maildir");
  CHECK(a->value().quota_rule == "*:storage=1G");
  CHECK(b->error().kind == common::ErrorKind::kNotFound);
  CHECK(d->error().kind == common::ErrorKind::kNotFound);
  // A name no database can hold is not found (550 at RCPT), not a temporary failure.
  CHECK(e->error().kind == common::ErrorKind::kNotFound);
}

TEST_CASE("PASS and LIST") {
  Fixture f;
  common::auth::UserdbClient c(f.loop, {f.path});
  std::optional<common::Result<std::string>> p, q;
  std::optional<common::Result<std::vector<std::string>>> l, m;
  c.pass("demo@example.test", "imap", [&](auto r) { p = std::move(r); });
  c.pass("nobody@example.test", "imap", [&](auto r) { q = std::move(r); });
  c.list("", [&](auto r) { l = std::move(r); });
  c.list("off@*", [&](auto r) { m = std::move(r); });
  f.run_until([&] { return p && q && l && m; });
  CHECK(p->value() == "demo@example.test");
  CHECK(q->error().kind == common::ErrorKind::kNotFound);
  CHECK(l->value() == std::vector<std::string>{"demo@example.test", "off@example.test"});
  CHECK(m->value() == std::vector<std::string>{"off@example.test"});
}

TEST_CASE("REQUEST: right cookie once, wrong cookie never") {
  Fixture f;
  const std::string cookie(32, 'a'), wrong(32, 'b');
  f.core->remember_success(cookie, 4242, 7, "demo@example.test");
  common::auth::UserdbClient c(f.loop, {f.path});
  std::optional<common::Result<common::auth::UserInfo>> bad, good, again;
  c.request(4242, 7, wrong, [&](auto r) { bad = std::move(r); });
  f.run_until([&] { return bad.has_value(); });
  c.request(4242, 7, cookie, [&](auto r) { good = std::move(r); });
  f.run_until([&] { return good.has_value(); });
  c.request(4242, 7, cookie, [&](auto r) { again = std::move(r); });
  f.run_until([&] { return again.has_value(); });
  CHECK(bad->error().kind == common::ErrorKind::kNotFound);
  REQUIRE(good->ok());
  CHECK(good->value().user == "demo@example.test");
  CHECK(good->value().uid == 5000u);
  CHECK(again->error().kind == common::ErrorKind::kNotFound);
}

TEST_CASE("garbage closes only that connection") {
  Fixture f;
  common::auth::UserdbClient c(f.loop, {f.path});
  std::optional<common::Result<common::auth::UserInfo>> before, after;
  c.user("demo@example.test", "lmtp", [&](auto r) { before = std::move(r); });
  f.run_until([&] { return before.has_value(); });
  REQUIRE(before->ok());
  // No VERSION first; a second VERSION; an unknown command; an overlong line; a NUL.
  CHECK(f.raw("USER\t1\tdemo@example.test\n", "").find("USER\t1") == std::string::npos);
  CHECK(f.raw("VERSION\t1\t0\nVERSION\t1\t0\nUSER\t1\tdemo@example.test\n", "").find("USER\t1") == std::string::npos);
  CHECK(f.raw("VERSION\t1\t0\nFROB\t1\n", "").find("FROB") == std::string::npos);
  CHECK(f.raw("VERSION\t1\t0\n" + std::string(70000, 'x') + "\n", "").find("SPID") != std::string::npos);
  CHECK(f.raw(std::string("VERSION\t1\t0\nUSER\t1\tde\0mo\n", 26), "").find("USER\t1") == std::string::npos);
  // A well-formed raw session works, pipelined.
  std::string ok = f.raw("VERSION\t1\t0\nUSER\t1\tdemo@example.test\tservice=x\nUSER\t2\tnone@x.test\n", "NOTFOUND\t2\n");
  CHECK(ok.find("USER\t1\tdemo@example.test\tuid=5000") != std::string::npos);
  // The first client never noticed.
  c.user("demo@example.test", "lmtp", [&](auto r) { after = std::move(r); });
  f.run_until([&] { return after.has_value(); });
  CHECK(after->ok());
}

TEST_CASE("the client reconnects after the server drops it, and fails fast when it is gone") {
  Fixture f;
  common::auth::UserdbClient c(f.loop, {f.path});
  std::optional<common::Result<common::auth::UserInfo>> r1, r2, r3;
  c.user("demo@example.test", "lmtp", [&](auto r) { r1 = std::move(r); });
  f.run_until([&] { return r1.has_value(); });
  REQUIRE(r1->ok());
  // Restart the server: the old connection dies with it.
  f.server = std::make_unique<authd::UserdbServer>(*f.core);
  ::unlink(f.path.c_str());
  auto fd = common::net::bind_unix(f.path, 0600);
  REQUIRE(fd);
  f.server->listen(fd->get());
  f.run_until([&] { return !c.connected(); });
  c.user("demo@example.test", "lmtp", [&](auto r) { r2 = std::move(r); });
  f.run_until([&] { return r2.has_value(); });
  CHECK(r2->ok());
  f.server.reset();
  ::unlink(f.path.c_str());
  c.user("demo@example.test", "lmtp", [&](auto r) { r3 = std::move(r); });
  f.run_until([&] { return r3.has_value(); });
  CHECK(r3->error().kind == common::ErrorKind::kTemp);
}
