// The resolver against a real DNS server (dnsmasq on a loopback port, started here).
#include "common/dns.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

extern char** environ;

using namespace tern::common;

namespace {

uint16_t free_udp_port() {
  int s = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

struct Dnsmasq {
  pid_t pid = 0;
  uint16_t port = 0;
  Dnsmasq() {
    port = free_udp_port();
    std::vector<std::string> args = {
        "/usr/sbin/dnsmasq", "-k", "--port=" + std::to_string(port), "--listen-address=127.0.0.1",
        "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=" + std::string(::geteuid() == 0 ? "root" : ""),
        "--local=/example.test/",
        "--mx-host=example.test,mx2.example.test,20", "--mx-host=example.test,mx1.example.test,10",
        "--host-record=mx1.example.test,127.0.0.2", "--host-record=mx2.example.test,127.0.0.3,::1",
        "--txt-record=example.test,v=spf1 ip4:127.0.0.0/8 -all",
        "--cname=alias.example.test,mx1.example.test", "--mx-host=nullmx.example.test,.,0",
        "--ptr-record=2.0.0.127.in-addr.arpa,mx1.example.test",
        "--log-facility=/dev/null"};
    if (::geteuid() != 0) args.erase(args.begin() + 8);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~Dnsmasq() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
};

// Runs the loop until the callback has fired.
dns::Answer run(ev::Loop& loop, const std::function<void(dns::Resolver::Callback)>& start) {
  dns::Answer out;
  bool done = false;
  start([&](const dns::Answer& a) {
    out = a;
    done = true;
  });
  for (int i = 0; i < 100000 && !done; ++i) uv_run(loop.get(), UV_RUN_ONCE);
  REQUIRE(done);
  return out;
}

}  // namespace

TEST_CASE("DNS lookups against a real server") {
  if (::access("/usr/sbin/dnsmasq", X_OK) != 0) {
    FAIL("dnsmasq is not installed: scripts/setup installs dnsmasq-base");
  }
  auto server = std::make_unique<Dnsmasq>();
  ev::Loop loop;
  dns::Resolver::Options o;
  o.servers = "127.0.0.1:" + std::to_string(server->port);
  o.timeout_ms = 500;
  o.tries = 1;
  auto r = dns::Resolver::create(loop, o);
  REQUIRE(r.ok());
  // dnsmasq needs a moment to bind: retry the first lookup until it answers. If its
  // port was taken meanwhile (a parallel test), it exits: start it again elsewhere.
  dns::Answer mx;
  for (int i = 0; i < 100; ++i) {
    mx = run(loop, [&](auto cb) { (*r)->mx("example.test", cb); });
    if (mx.status != dns::Status::kTempFail) break;
    if (::waitpid(server->pid, nullptr, WNOHANG) == server->pid) {
      server->pid = 0;
      server = std::make_unique<Dnsmasq>();
      o.servers = "127.0.0.1:" + std::to_string(server->port);
      r = dns::Resolver::create(loop, o);
      REQUIRE(r.ok());
    }
    ::usleep(100000);
  }

  SECTION("MX in preference order") {
    REQUIRE(mx.status == dns::Status::kOk);
    REQUIRE(mx.mx.size() == 2);
    CHECK(mx.mx[0].host == "mx1.example.test");
    CHECK(mx.mx[0].preference == 10);
    CHECK(mx.mx[1].host == "mx2.example.test");
    CHECK_FALSE(mx.null_mx());
  }
  SECTION("null MX (RFC 7505)") {
    auto a = run(loop, [&](auto cb) { (*r)->mx("nullmx.example.test", cb); });
    REQUIRE(a.status == dns::Status::kOk);
    CHECK(a.null_mx());
  }
  SECTION("NXDOMAIN is permanent, NODATA is not an error") {
    auto a = run(loop, [&](auto cb) { (*r)->mx("nope.example.test", cb); });
    CHECK(a.status == dns::Status::kNxDomain);
    auto b = run(loop, [&](auto cb) { (*r)->mx("mx1.example.test", cb); });
    CHECK(b.status == dns::Status::kNoData);
  }
  SECTION("addresses, both families, through a CNAME") {
    auto a = run(loop, [&](auto cb) { (*r)->addresses("mx2.example.test", true, true, cb); });
    REQUIRE(a.status == dns::Status::kOk);
    CHECK(a.addresses == std::vector<std::string>{"127.0.0.3", "::1"});
    auto c = run(loop, [&](auto cb) { (*r)->addresses("alias.example.test", true, false, cb); });
    REQUIRE(c.status == dns::Status::kOk);
    CHECK(c.addresses == std::vector<std::string>{"127.0.0.2"});
    auto n = run(loop, [&](auto cb) { (*r)->addresses("nope.example.test", true, true, cb); });
    CHECK(n.status == dns::Status::kNxDomain);
  }
  SECTION("TXT and PTR") {
    auto t = run(loop, [&](auto cb) { (*r)->txt("example.test", cb); });
    REQUIRE(t.status == dns::Status::kOk);
    CHECK(t.texts == std::vector<std::string>{"v=spf1 ip4:127.0.0.0/8 -all"});
    auto p = run(loop, [&](auto cb) { (*r)->ptr("127.0.0.2", cb); });
    REQUIRE(p.status == dns::Status::kOk);
    CHECK(p.names[0] == "mx1.example.test");
  }
  SECTION("refusals and bad names") {
    // Outside the local zone, with no upstream: REFUSED, which is temporary.
    auto a = run(loop, [&](auto cb) { (*r)->mx("example.org", cb); });
    CHECK(a.status == dns::Status::kTempFail);
    auto b = run(loop, [&](auto cb) { (*r)->mx("bad..name", cb); });
    CHECK(b.status == dns::Status::kBadName);
    auto c = run(loop, [&](auto cb) { (*r)->ptr("not-an-ip", cb); });
    CHECK(c.status == dns::Status::kBadName);
  }
}

TEST_CASE("a server that does not answer is a temporary failure") {
  ev::Loop loop;
  dns::Resolver::Options o;
  o.servers = "127.0.0.1:" + std::to_string(free_udp_port());  // nobody listens
  o.timeout_ms = 200;
  o.tries = 1;
  auto r = dns::Resolver::create(loop, o);
  REQUIRE(r.ok());
  auto a = run(loop, [&](auto cb) { (*r)->mx("example.test", cb); });
  CHECK(a.status == dns::Status::kTempFail);
  CHECK_FALSE(a.error.empty());
}

TEST_CASE("hostname syntax") {
  CHECK(dns::valid_hostname("mail.example.org"));
  CHECK(dns::valid_hostname("mail.example.org."));
  CHECK(dns::valid_hostname("xn--bcher-kva.example"));
  CHECK_FALSE(dns::valid_hostname(""));
  CHECK_FALSE(dns::valid_hostname("a..b"));
  CHECK_FALSE(dns::valid_hostname("-a.b"));
  CHECK_FALSE(dns::valid_hostname("a-.b"));
  CHECK_FALSE(dns::valid_hostname(std::string(64, 'a') + ".b"));
  CHECK_FALSE(dns::valid_hostname("a b.c"));
  CHECK_FALSE(dns::valid_hostname("[127.0.0.1]"));
}
