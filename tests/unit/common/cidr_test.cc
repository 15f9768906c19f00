#include "common/cidr.h"

#include <catch2/catch.hpp>

using tern::common::NetworkList;

TEST_CASE("mynetworks matching") {
  auto l = NetworkList::parse({"127.0.0.0/8", "[::1]/128", "192.0.2.7", "2001:db8::/32", "[fe80::/10]"});
  REQUIRE(l.ok());
  struct {
    const char* addr;
    bool in;
  } cases[] = {
      {"127.0.0.1", true},        {"127.255.255.254", true}, {"128.0.0.1", false},  {"::1", true},
      {"::2", false},             {"192.0.2.7", true},       {"192.0.2.8", false},  {"2001:db8:1::5", true},
      {"2001:db9::1", false},     {"fe80::1", true},         {"::ffff:127.0.0.1", true},
      {"not an address", false},  {"", false},
  };
  for (auto& c : cases) {
    INFO(c.addr);
    CHECK(l->contains(c.addr) == c.in);
  }
}

TEST_CASE("bad networks are refused with the entry named") {
  for (const char* bad : {"192.0.2.1/24", "10.0.0.0/33", "::1/129", "example.com", "10.0.0.0/x", "1.2.3"}) {
    auto l = NetworkList::parse({bad});
    INFO(bad);
    REQUIRE_FALSE(l.ok());
    CHECK(l.error().message.find(bad) != std::string::npos);
  }
  auto zero = NetworkList::parse({"0.0.0.0/0"});
  REQUIRE(zero.ok());
  CHECK(zero->contains("203.0.113.9"));
  CHECK_FALSE(zero->contains("2001:db8::1"));
}
