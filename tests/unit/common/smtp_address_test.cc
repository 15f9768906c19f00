// RFC 5321 path parsing: what the grammar accepts, what it rejects, and the relay
// tricks that must stay visible.
#include <catch2/catch.hpp>

#include <string>

#include "common/smtp_address.h"

using namespace tern::common::smtp;
using tern::common::Result;

TEST_CASE("valid paths", "[smtp_address]") {
  struct Case {
    std::string in;
    std::string local, domain;
    bool quoted, literal;
  };
  const Case cases[] = {
      {"<user@example.org>", "user", "example.org", false, false},
      {"<first.last+tag@sub.example.org>", "first.last+tag", "sub.example.org", false, false},
      {"<!#$%&'*+-/=?^_`{|}~@x.example>", "!#$%&'*+-/=?^_`{|}~", "x.example", false, false},
      {"<\"john doe\"@example.org>", "john doe", "example.org", true, false},
      {"<\"a\\\"b\\\\c\"@example.org>", "a\"b\\c", "example.org", true, false},
      {"<\"\"@example.org>", "", "example.org", true, false},
      {"<user@[192.0.2.1]>", "user", "[192.0.2.1]", false, true},
      {"<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]", false, true},
      {"<user@[x-tag:some-thing]>", "user", "[x-tag:some-thing]", false, true},
      {"<@relay.example,@b.example:user@c.example>", "user", "c.example", false, false},
      {"<USER@EXAMPLE.ORG>", "USER", "EXAMPLE.ORG", false, false},
      {"<a@b-c.d1>", "a", "b-c.d1", false, false},
  };
  for (const Case& c : cases) {
    INFO(c.in);
    Result<Path> p = parse_path(c.in, PathOptions{});
    REQUIRE(p.ok());
    CHECK(p->mailbox.local_part == c.local);
    CHECK(p->mailbox.domain == c.domain);
    CHECK(p->mailbox.quoted == c.quoted);
    CHECK(p->mailbox.domain_is_literal == c.literal);
    CHECK(!p->null);
  }
  Result<Path> sr = parse_path("<@relay.example,@b.example:user@c.example>", PathOptions{});
  REQUIRE(sr.ok());
  CHECK(sr->source_route == std::vector<std::string>{"relay.example", "b.example"});
  CHECK(sr->wire() == "<user@c.example>");
}

TEST_CASE("invalid paths are rejected", "[smtp_address]") {
  const std::string bad[] = {
      "", "user@example.org", "<user@example.org", "user@example.org>", "<>",  // <> without allow_null
      "<user>", "<@example.org>", "<user@>", "<user@@example.org>", "<user@other@example.org>",
      "<a..b@example.org>", "<.a@example.org>", "<a.@example.org>", "<a b@example.org>",
      "<user@exa mple.org>", "<user@-example.org>", "<user@example-.org>", "<user@example..org>",
      "<user@example.org.>", "<user@.example.org>", "<user@exa_mple.org>", "<user@[192.0.2.256]>",
      "<user@[192.0.2.1>", "<user@[IPv6:zz::1]>", "<user@[1.2.3]>", "<user@[:x]>", "<\"unterminated@x.org>",
      "<\"bad\x01ctl\"@x.org>", "<user@x.org> junk", "<us\x00er@x.org>", "<jürgen@example.org>",
      "<user@bücher.example>", "<@a.example:@b.example:u@c.example>", "<@:u@c.example>",
      "<postmaster>", "<user@example.org>>", "<<user@example.org>>", "<user\r@example.org>",
      "<\"q\\\x7f\"@x.org>", std::string("<u@[IPv6:2001:db8::\0\xfd]>", 23), std::string("<u@[1.2.3.4\0]>", 14), "<user@" + std::string(64, 'a') + ".org>",
      "<" + std::string(300, 'a') + "@x.org>", "<u@[x:" + std::string(300, 'a') + "]>", "<u@" + std::string(250, 'a') + ".example>",
  };
  for (const std::string& in : bad) {
    INFO(in);
    CHECK(!parse_path(in, PathOptions{}).ok());
  }
}

TEST_CASE("options: null path, postmaster, SMTPUTF8", "[smtp_address]") {
  PathOptions o;
  o.allow_null = true;
  Result<Path> n = parse_path("<>", o);
  REQUIRE(n.ok());
  CHECK(n->null);
  CHECK(n->wire() == "<>");

  PathOptions pm;
  pm.allow_postmaster = true;
  Result<Path> p = parse_path("<PostMaster>", pm);
  REQUIRE(p.ok());
  CHECK(p->postmaster);
  CHECK(parse_path("<postmaster@example.org>", pm)->postmaster == false);

  PathOptions u;
  u.smtputf8 = true;
  Result<Path> j = parse_path("<jürgen@bücher.example>", u);
  REQUIRE(j.ok());
  CHECK(j->mailbox.utf8);
  CHECK(j->mailbox.local_part == "jürgen");
  CHECK(parse_path("<\"jü rgen\"@x.example>", u).ok());
  // Invalid UTF-8, overlong forms and surrogates stay invalid with SMTPUTF8.
  for (const std::string& in : {std::string("<j\xc3@x.example>"), std::string("<j\xc0\xaf@x.example>"),
                                 std::string("<j\xed\xa0\x80@x.example>"), std::string("<j\xf5\x80\x80\x80@x.example>"),
                                 std::string("<u@b\xc3.example>"), std::string("<j\x80@x.example>")}) {
    INFO(in);
    CHECK(!parse_path(in, u).ok());
  }
}

TEST_CASE("relay tricks stay visible", "[smtp_address]") {
  Result<Path> pct = parse_path("<user%other.example@example.org>", PathOptions{});
  REQUIRE(pct.ok());
  CHECK(pct->mailbox.has_percent_hack());
  CHECK(pct->mailbox.has_routing_characters());

  Result<Path> bang = parse_path("<other.example!user@example.org>", PathOptions{});
  REQUIRE(bang.ok());
  CHECK(bang->mailbox.has_bang_path());

  Result<Path> at = parse_path("<\"user@other.example\"@example.org>", PathOptions{});
  REQUIRE(at.ok());
  CHECK(at->mailbox.has_at_in_local_part());
  CHECK(at->mailbox.address() == "\"user@other.example\"@example.org");

  Result<Path> plain = parse_path("<user@example.org>", PathOptions{});
  CHECK(!plain->mailbox.has_routing_characters());

  Result<Path> two = parse_path("<user@other.example@example.org>", PathOptions{});
  REQUIRE(!two.ok());
  CHECK(two.error().message.find("more than one '@'") != std::string::npos);
}

TEST_CASE("consume_path leaves the parameters", "[smtp_address]") {
  std::string_view in = "<a@b.example> SIZE=10";
  Result<Path> p = consume_path(in, PathOptions{});
  REQUIRE(p.ok());
  CHECK(in == " SIZE=10");
}

TEST_CASE("wire form re-quotes local parts", "[smtp_address]") {
  Result<Path> p = parse_path("<\"a b\\\\c\"@x.example>", PathOptions{});
  REQUIRE(p.ok());
  CHECK(p->mailbox.wire_local_part() == "\"a b\\\\c\"");
  Result<Path> q = parse_path("<\"abc\"@x.example>", PathOptions{});
  CHECK(q->mailbox.address() == "abc@x.example");  // quoting not needed
  CHECK(parse_mailbox("a@b.example", false).ok());
  CHECK(!parse_mailbox("a@b@c.example", false).ok());
  CHECK(!parse_mailbox("a@b.example ", false).ok());
}

TEST_CASE("valid_utf8", "[smtp_address]") {
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain"));
  CHECK(valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  CHECK(!valid_utf8("\xc3"));
  CHECK(!valid_utf8("\xe0\x80\xaf"));
  CHECK(!valid_utf8("\xed\xbf\xbf"));
  CHECK(!valid_utf8("\xf4\x90\x80\x80"));
  CHECK(!valid_utf8("\xff"));
}
