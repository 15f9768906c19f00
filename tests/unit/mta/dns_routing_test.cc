// Next hops and routes: relayhost syntax, MX answers per RFC 5321 5.1 and RFC 7505,
// the mail loop cut, and how address answers become targets.
#include "mta/dns_routing.h"

#include <catch2/catch.hpp>
#include <set>

using namespace tern;
namespace dns = common::dns;
using mta::MxPlan;
using mta::Route;

namespace {

dns::Answer answer(dns::Status st) {
  dns::Answer a;
  a.status = st;
  return a;
}

dns::Answer mx(std::vector<dns::Mx> hosts) {
  dns::Answer a;
  a.status = dns::Status::kOk;
  a.mx = std::move(hosts);
  return a;
}

dns::Answer addrs(std::vector<std::string> v) {
  dns::Answer a;
  a.status = dns::Status::kOk;
  a.addresses = std::move(v);
  return a;
}

}  // namespace

TEST_CASE("parse_nexthop: relayhost syntax") {
  struct Case {
    const char* spec;
    const char* host;
    uint16_t port;
    bool no_mx, numeric;
    const char* key;
  };
  const Case good[] = {
      {"smtp.example.com", "smtp.example.com", 25, false, false, "smtp.example.com"},
      {"Smtp.Example.COM.", "smtp.example.com", 25, false, false, "smtp.example.com"},
      {"example.com:2525", "example.com", 2525, false, false, "example.com:2525"},
      {"[smtp.example.com]", "smtp.example.com", 25, true, false, "[smtp.example.com]:25"},
      {"[smtp.example.com]:465", "smtp.example.com", 465, true, false, "[smtp.example.com]:465"},
      {" [smtp.yandex.ru]:587 ", "smtp.yandex.ru", 587, true, false, "[smtp.yandex.ru]:587"},
      {"[192.0.2.7]", "192.0.2.7", 25, true, true, "[192.0.2.7]:25"},
      {"[192.0.2.7]:2525", "192.0.2.7", 2525, true, true, "[192.0.2.7]:2525"},
      {"[IPv6:2001:db8::1]:25", "2001:db8::1", 25, true, true, "[IPv6:2001:db8::1]:25"},
  };
  for (const Case& c : good) {
    INFO(c.spec);
    auto h = mta::parse_nexthop(c.spec);
    REQUIRE(h);
    CHECK(h->host == c.host);
    CHECK(h->port == c.port);
    CHECK(h->no_mx == c.no_mx);
    CHECK(h->numeric == c.numeric);
    CHECK(h->key() == c.key);
  }
  for (const char* bad : {"", "[smtp.example.com", "[x]:", "[x]:0", "[x]:70000", "[x]:25x", "host:abc", "bad host",
                          "[IPv6:nonsense]", "[x]junk", "a..b", "-x.example"}) {
    INFO(bad);
    CHECK_FALSE(mta::parse_nexthop(bad));
  }
}

TEST_CASE("nexthop_for_domain") {
  CHECK(mta::nexthop_for_domain("B.Test")->host == "b.test");
  CHECK_FALSE(mta::nexthop_for_domain("B.Test")->no_mx);
  auto lit = mta::nexthop_for_domain("[127.0.0.3]");
  REQUIRE(lit);
  CHECK(lit->numeric);
  CHECK(lit->port == 25);
  CHECK_FALSE(mta::nexthop_for_domain("[127.0.0.3]:2525"));  // a port is not part of an address literal
  CHECK_FALSE(mta::nexthop_for_domain("[mx.b.test]"));
  CHECK_FALSE(mta::nexthop_for_domain("b\xc3\xbc.test"));  // no IDNA here: reported, not looked up wrongly
  CHECK_FALSE(mta::nexthop_for_domain(""));
}

TEST_CASE("plan_mx: what each kind of MX answer means") {
  std::mt19937 rng(1);
  SECTION("NXDOMAIN is permanent") {
    MxPlan p = mta::plan_mx("nx.test", answer(dns::Status::kNxDomain), "mx.a.test", rng);
    CHECK(p.kind == Route::Kind::kPerm);
    CHECK(p.dsn == "5.4.4");
    CHECK(p.text == "Host or domain name not found. Name service error for name=nx.test type=MX: Host not found");
  }
  SECTION("SERVFAIL or a timeout is temporary") {
    MxPlan p = mta::plan_mx("sf.test", answer(dns::Status::kTempFail), "mx.a.test", rng);
    CHECK(p.kind == Route::Kind::kTemp);
    CHECK(p.dsn == "4.4.3");
    CHECK(p.text.find("try again") != std::string::npos);
  }
  SECTION("no MX records: the domain is its own mail host") {
    MxPlan p = mta::plan_mx("b.test", answer(dns::Status::kNoData), "mx.a.test", rng);
    CHECK(p.kind == Route::Kind::kOk);
    CHECK(p.implicit);
    REQUIRE(p.hosts.size() == 1);
    CHECK(p.hosts[0].host == "b.test");
  }
  SECTION("null MX") {
    MxPlan p = mta::plan_mx("null.test", mx({{0, ""}}), "mx.a.test", rng);
    CHECK(p.kind == Route::Kind::kPerm);
    CHECK(p.dsn == "5.1.10");
    CHECK(p.text == "Domain null.test does not accept mail (nullMX)");
  }
  SECTION("a '.' among real MX records is skipped") {
    MxPlan p = mta::plan_mx("b.test", mx({{0, ""}, {10, "mx.b.test"}}), "mx.a.test", rng);
    CHECK(p.kind == Route::Kind::kOk);
    REQUIRE(p.hosts.size() == 1);
  }
  SECTION("preference order, equal preferences shuffled") {
    std::set<std::string> firsts;
    for (int i = 0; i < 50; ++i) {
      MxPlan p = mta::plan_mx("b.test", mx({{20, "backup.b.test"}, {10, "MX2.b.test."}, {10, "mx1.b.test"}}),
                              "mx.a.test", rng);
      REQUIRE(p.hosts.size() == 3);
      CHECK(p.hosts[2].host == "backup.b.test");
      firsts.insert(p.hosts[0].host);
    }
    CHECK(firsts == std::set<std::string>{"mx1.b.test", "mx2.b.test"});
  }
  SECTION("ourselves in the list: only better hosts") {
    MxPlan p = mta::plan_mx("b.test", mx({{10, "mx.b.test"}, {20, "mx.a.test"}, {30, "last.b.test"}}), "MX.A.TEST", rng);
    REQUIRE(p.hosts.size() == 1);
    CHECK(p.hosts[0].host == "mx.b.test");
    MxPlan loop = mta::plan_mx("a.test", mx({{10, "mx.a.test"}, {20, "other.test"}}), "mx.a.test", rng);
    CHECK(loop.kind == Route::Kind::kPerm);
    CHECK(loop.dsn == "5.4.6");
    CHECK(loop.text == "mail for a.test loops back to myself");
  }
}

TEST_CASE("assemble_route") {
  std::mt19937 rng(1);
  MxPlan p = mta::plan_mx("b.test", mx({{10, "mx1.b.test"}, {20, "mx2.b.test"}, {30, "mx3.b.test"}}), "x", rng);
  SECTION("addresses in MX order, duplicates once, the limit respected") {
    Route r = mta::assemble_route(p, {addrs({"127.0.0.3", "::1"}), addrs({"127.0.0.3"}), addrs({"127.0.0.4"})}, 25, 5);
    CHECK(r.kind == Route::Kind::kOk);
    REQUIRE(r.targets.size() == 3);
    CHECK(r.targets[0].host == "mx1.b.test");
    CHECK(r.targets[0].address == "127.0.0.3");
    CHECK(r.targets[1].address == "::1");
    CHECK(r.targets[2].host == "mx3.b.test");
    Route lim = mta::assemble_route(p, {addrs({"127.0.0.3", "::1"}), addrs({"127.0.0.5"}), addrs({"127.0.0.4"})}, 25, 2);
    CHECK(lim.targets.size() == 2);
  }
  SECTION("a host that does not resolve is skipped") {
    Route r = mta::assemble_route(p, {answer(dns::Status::kNxDomain), answer(dns::Status::kTempFail), addrs({"127.0.0.4"})},
                                  25, 5);
    CHECK(r.kind == Route::Kind::kOk);
    REQUIRE(r.targets.size() == 1);
    CHECK(r.targets[0].host == "mx3.b.test");
  }
  SECTION("none resolves: temporary if any lookup was, else permanent") {
    Route t = mta::assemble_route(p, {answer(dns::Status::kNxDomain), answer(dns::Status::kTempFail),
                                      answer(dns::Status::kNoData)}, 25, 5);
    CHECK(t.kind == Route::Kind::kTemp);
    CHECK(t.dsn == "4.4.3");
    Route pe = mta::assemble_route(p, {answer(dns::Status::kNxDomain), answer(dns::Status::kNoData),
                                       answer(dns::Status::kNxDomain)}, 25, 5);
    CHECK(pe.kind == Route::Kind::kPerm);
    CHECK(pe.dsn == "5.4.4");
    CHECK(pe.text.find("name=mx3.b.test") != std::string::npos);
  }
  SECTION("a failed plan passes through") {
    MxPlan nx = mta::plan_mx("nx.test", answer(dns::Status::kNxDomain), "x", rng);
    Route r = mta::assemble_route(nx, {}, 25, 5);
    CHECK(r.kind == Route::Kind::kPerm);
    CHECK(r.text == nx.text);
  }
}
