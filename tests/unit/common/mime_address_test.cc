#include "common/mime_address.h"

#include <catch2/catch.hpp>

#include "common/mime_date.h"

using namespace tern::common::mime;
using K = Address::Kind;

namespace {

// "name|route|mailbox|host" per entry, groups as "group:NAME" and ";".
std::string render(const std::vector<Address>& v) {
  std::string out;
  for (const Address& a : v) {
    if (!out.empty()) out += " , ";
    if (a.kind == K::kGroupStart) {
      out += "group:" + a.mailbox;
    } else if (a.kind == K::kGroupEnd) {
      out += ";";
    } else {
      out += a.name + "|" + a.route + "|" + a.mailbox + "|" + a.host;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("parse_address_list reads RFC 5322 address lists", "[mime][address]") {
  struct Case {
    const char* raw;
    const char* want;
  };
  const Case cases[] = {
      {"user@example.org", "||user|example.org"},
      {"John Doe <jdoe@machine.example>", "John Doe||jdoe|machine.example"},
      {"\"Joe Q. Public\" <john.q.public@example.com>", "Joe Q. Public||john.q.public|example.com"},
      {"Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
       "Mary Smith||mary|x.test , ||jdoe|example.org , Who?||one|y.test"},
      {"\"Giant; \\\"Big\\\" Box\" <sysservices@example.net>", "Giant; \"Big\" Box||sysservices|example.net"},
      {"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
       "group:A Group , Ed Jones||c|a.test , ||joe|where.test , John||jdoe|one.test , ;"},
      {"Undisclosed recipients:;", "group:Undisclosed recipients , ;"},
      {"=?utf-8?q?J=C3=B6rg?= <joerg@example.de>", "=?utf-8?q?J=C3=B6rg?=||joerg|example.de"},
      // Obsolete forms of RFC 5322 4.4.
      {"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", "Pete||pete|silly.test"},
      {"<@route1,@route2:user@host.test>", "|@route1,@route2|user|host.test"},
      {"John Q. Public <jqp@example.com>", "John Q. Public||jqp|example.com"},
      {"\"quoted local\"@example.com", "||quoted local|example.com"},
      {"user@[192.0.2.1]", "||user|[192.0.2.1]"},
      // Broken ones.
      {"root", "||root|"},
      {"Name <user@example.org", "Name||user|example.org"},
      {"<>", ""},
      {"", ""},
      {",,, ,", ""},
      {"a@b c@d", "||a|b"},
      {"Open Group: x@y.test", "group:Open Group , ||x|y.test , ;"},
      {">>> <<< @@@", ""},
  };
  for (const Case& c : cases) {
    INFO(c.raw);
    CHECK(render(parse_address_list(c.raw)) == c.want);
  }
}

TEST_CASE("parse_address_list is bounded and linear on crafted input", "[mime][address]") {
  std::string many;
  for (int i = 0; i < 5000; ++i) many += "a@b, ";
  CHECK(parse_address_list(many, 100).size() == 100);
  std::string nested(50000, '(');
  CHECK(parse_address_list(nested + "x@y").empty());
  std::string colons(20000, ':');
  CHECK(parse_address_list(colons).size() <= 2);
}

TEST_CASE("addr_spec and address_display", "[mime][address]") {
  std::vector<Address> v = parse_address_list("=?iso-8859-1?q?Andr=E9?= <andre@example.org>, \"a b\"@c.test");
  REQUIRE(v.size() == 2);
  CHECK(v[0].addr_spec() == "andre@example.org");
  CHECK(address_display(v[0]) == "Andr\xc3\xa9 <andre@example.org>");
  CHECK(v[1].addr_spec() == "\"a b\"@c.test");
  CHECK(address_display(v[1]) == "\"a b\"@c.test");
}

TEST_CASE("parse_date reads RFC 5322 dates and the obsolete forms", "[mime][date]") {
  struct Case {
    const char* raw;
    int y, mo, d, h, mi, s, zone;
  };
  const Case cases[] = {
      {"Fri, 21 Nov 1997 09:55:06 -0600", 1997, 11, 21, 9, 55, 6, -360},
      {"Tue, 1 Jul 2003 10:52:37 +0200", 2003, 7, 1, 10, 52, 37, 120},
      {"21 Nov 97 09:55:06 GMT", 1997, 11, 21, 9, 55, 6, 0},
      {"Thu,\r\n 13\r\n   Feb\r\n 1969\r\n 23:32\r\n -0330 (Newfoundland Time)", 1969, 2, 13, 23, 32, 0, -210},
      {"1 Jan 05 1:02:03 EST", 2005, 1, 1, 1, 2, 3, -300},
      {"Mon, 02 Jan 2006 15:04:05 PDT", 2006, 1, 2, 15, 4, 5, -420},
      {"Sat, 24 Mar 2007 23:00:00 +0200 (EET)", 2007, 3, 24, 23, 0, 0, 120},
      {"Mon Jan  2 15:04:05 2006", 2006, 1, 2, 15, 4, 5, 0},        // asctime()
      {"Wednesday, 5 June 2024 08:00:00 +0000", 2024, 6, 5, 8, 0, 0, 0},
      {"5 Jun 2024", 2024, 6, 5, 0, 0, 0, 0},                        // no time
      {"29 Feb 2024 00:00:00 +0000", 2024, 2, 29, 0, 0, 0, 0},
      {"02-Jan-2006 15:04:05 +0100", 2006, 1, 2, 15, 4, 5, 60},
      {"1 Jan 2020 12:00:00 Z", 2020, 1, 1, 12, 0, 0, 0},
      {"1 Jan 2020 12:00:00 A", 2020, 1, 1, 12, 0, 0, 0},           // military: -0000
  };
  for (const Case& c : cases) {
    INFO(c.raw);
    std::optional<DateTime> d = parse_date(c.raw);
    REQUIRE(d);
    CHECK(d->year == c.y);
    CHECK(d->month == c.mo);
    CHECK(d->day == c.d);
    CHECK(d->hour == c.h);
    CHECK(d->minute == c.mi);
    CHECK(d->second == c.s);
    CHECK(d->zone == c.zone);
  }
  const char* bad[] = {"", "garbage", "32 Jan 2020", "30 Feb 2024", "1 Foo 2020", "1 Jan 20200",
                       "1 Jan 2020 25:00", "Mon, 1", "1 Jan 1800", "(((((("};
  for (const char* b : bad) {
    INFO(b);
    CHECK_FALSE(parse_date(b));
  }
}

TEST_CASE("date arithmetic", "[mime][date]") {
  CHECK(parse_date("Thu, 1 Jan 1970 00:00:00 +0000")->to_unix() == 0);
  CHECK(parse_date("Fri, 21 Nov 1997 09:55:06 -0600")->to_unix() == 880127706);
  CHECK(parse_date("Sun, 9 Sep 2001 01:46:40 +0000")->to_unix() == 1000000000);
  DateTime d = civil_from_unix(1000000000, 120);
  CHECK(d.year == 2001);
  CHECK(d.hour == 3);
  CHECK(d.zone == 120);
  DateTime neg = civil_from_unix(-1);
  CHECK(neg.year == 1969);
  CHECK(neg.month == 12);
  CHECK(neg.day == 31);
  CHECK(neg.second == 59);
  CHECK(std::string(weekday_name(2024, 6, 5)) == "Wed");
  CHECK(std::string(weekday_name(1970, 1, 1)) == "Thu");
  CHECK(days_in_month(2000, 2) == 29);
  CHECK(days_in_month(1900, 2) == 28);
  CHECK(parse_month_name("december") == 12);
  CHECK(parse_month_name("Ja") == 0);
}
