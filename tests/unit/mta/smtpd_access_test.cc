// check_*_access, DNS lists and reject_unauth_pipelining: lookup keys in access(5)'s
// order, table actions, and reply texts, against real texthash: tables on disk.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "common/smtp_address.h"
#include "mta/smtpd_check.h"

using namespace tern;
using mta::AddressClass;
using mta::CheckCodes;
using mta::CheckFacts;
using mta::CheckStage;
using mta::DnsxlAnswer;
using mta::DnsxlCache;
using mta::Effects;
using mta::Restrictions;
using mta::Verdict;
using V = std::vector<std::string>;
namespace smtp = common::smtp;

namespace {

smtp::Path path(const std::string& text) {
  smtp::PathOptions o;
  o.allow_null = true;
  o.smtputf8 = true;
  auto p = smtp::parse_path(text, o);
  REQUIRE(p.ok());
  return *p;
}

// A texthash: table in a temporary file, removed at the end of the test.
struct Table {
  std::string file;
  explicit Table(const std::string& text) {
    char tmpl[] = "/tmp/tern-access-test-XXXXXX";
    int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    file = tmpl;
    std::ofstream(file) << text;
  }
  ~Table() { std::remove(file.c_str()); }
  std::string spec() const { return "texthash:" + file; }
};

Restrictions list(V items) {
  auto r = Restrictions::parse(items, "test");
  if (!r.ok()) FAIL(r.error().message);
  return *r;
}

std::string text(const Verdict& v) {
  if (!v.refused()) return v.kind == Verdict::Kind::kPermit ? "permit" : "dunno";
  return std::to_string(v.reply.code) + " " + v.reply.enhanced + " " + v.reply.lines[0];
}

CheckFacts client(const std::string& name = "mail.example.com", const std::string& addr = "192.0.2.10") {
  CheckFacts f;
  f.client_addr = addr;
  f.client_name = name;
  f.reverse_name = name;
  return f;
}

}  // namespace

TEST_CASE("access(5) host name keys: the name, then parent domains in either style") {
  CHECK(mta::access_domain_keys("a.b.example.com", true) == V{"a.b.example.com", "b.example.com", "example.com", "com"});
  CHECK(mta::access_domain_keys("a.b.example.com", false) == V{"a.b.example.com", ".b.example.com", ".example.com", ".com"});
  CHECK(mta::access_domain_keys("localhost", true) == V{"localhost"});
  CHECK(mta::access_domain_keys("", true).empty());
  // Numeric names get no subdomain treatment.
  CHECK(mta::access_domain_keys("192.0.2.1", true) == V{"192.0.2.1"});
  CHECK(mta::access_domain_keys("2001:db8::1", false) == V{"2001:db8::1"});
  // A trailing dot (HELO names may have one) is not looked up as an empty key.
  CHECK(mta::access_domain_keys("host.example.", true) == V{"host.example.", "example."});
}

TEST_CASE("access(5) address keys: the address, then shorter prefixes") {
  CHECK(mta::access_address_keys("1.2.3.4") == V{"1.2.3.4", "1.2.3", "1.2", "1"});
  CHECK(mta::access_address_keys("2001:db8::1") == V{"2001:db8::1", "2001:db8:", "2001:db8", "2001"});
  CHECK(mta::access_address_keys("") == V{});
  // IPv4-mapped IPv6 clients are looked up as IPv4.
  CHECK(mta::access_address_keys("::ffff:192.0.2.1") == V{"192.0.2.1", "192.0.2", "192.0", "192"});
}

TEST_CASE("access(5) email keys: user@domain, domain and parents, user@; extensions first") {
  CHECK(mta::access_mail_keys("user", "sub.example.com", "+", true) ==
        V{"user@sub.example.com", "sub.example.com", "example.com", "com", "user@"});
  CHECK(mta::access_mail_keys("user+tag", "example.com", "+", true) ==
        V{"user+tag@example.com", "user@example.com", "example.com", "com", "user+tag@", "user@"});
  CHECK(mta::access_mail_keys("user+tag", "example.com", "", false) ==
        V{"user+tag@example.com", "example.com", ".com", "user+tag@"});
  // A local part that starts with the delimiter has no "bare" form.
  CHECK(mta::access_mail_keys("+x", "example.com", "+", true) == V{"+x@example.com", "example.com", "com", "+x@"});
}

TEST_CASE("DNS list query names") {
  CHECK(mta::dnsxl_reverse("127.0.0.2") == "2.0.0.127");
  CHECK(mta::dnsxl_reverse("192.0.2.99") == "99.2.0.192");
  CHECK(mta::dnsxl_reverse("2001:db8::1") ==
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2");
  CHECK(mta::dnsxl_reverse("not-an-address") == "");
  CHECK(mta::dnsxl_reverse("::ffff:192.0.2.99") == "99.2.0.192");
  auto l = list({"reject_rbl_client", "zen.example", "reject_rhsbl_sender", "dbl.example=127.0.1.[2..99]",
                 "reject_rhsbl_helo", "dbl.example", "reject_rhsbl_client", "dbl.example"});
  CheckFacts f = client("unknown", "192.0.2.10");
  smtp::Path s = path("<a@spam.example.org>");
  f.sender = &s;
  f.helo = "1.2.3.4";  // a numeric last label is never an RHSBL query
  CHECK(l.dnsxl_queries(f) == V{"10.2.0.192.zen.example", "spam.example.org.dbl.example"});
}

TEST_CASE("restriction arguments are checked at start-up") {
  auto r = Restrictions::parse({"check_sender_access"}, "main.cf:7: smtpd_sender_restrictions");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "main.cf:7: smtpd_sender_restrictions: check_sender_access needs a type:table argument");
  r = Restrictions::parse({"check_sender_access", "/etc/x"}, "k");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("expected type:table") != std::string::npos);
  r = Restrictions::parse({"check_sender_access", "hash:/nonexistent/sender_access"}, "k");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("ternctl postmap") != std::string::npos);
  r = Restrictions::parse({"reject_rbl_client", "zen.example=127.0.0.[2..]"}, "k");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("expected a DNS domain") != std::string::npos);
  CHECK(Restrictions::parse({"reject_rbl_client", "zen.example=127.0.[0;1].[2..11]"}, "k").ok());
  r = Restrictions::parse({"check_sender_acess", "hash:/x"}, "main.cf:3: smtpd_sender_restrictions");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "main.cf:3: smtpd_sender_restrictions: unknown restriction 'check_sender_acess'");
}

TEST_CASE("check_sender_access: the first key found decides, in access(5) order") {
  Table t(
      "user@example.com OK\n"
      "example.com REJECT\n"
      "user@ 550 5.7.0 no users\n"
      "blocked.example.net DUNNO\n"
      "example.net REJECT parent\n"
      "<> 451 4.7.0 no bounces now\n"
      "numeric@example.org 12345\n"
      "tagged+x@example.org REJECT tagged\n"
      "tagged@example.org OK\n");
  auto l = list({"check_sender_access", t.spec()});
  CheckCodes c;
  auto run = [&](const std::string& sender) {
    CheckFacts f = client();
    smtp::Path p = path(sender);
    f.sender = &p;
    return text(l.evaluate(CheckStage::kSender, f, c));
  };
  CHECK(run("<user@example.com>") == "permit");  // user@domain before domain and user@
  CHECK(run("<other@example.com>") == "554 5.7.1 <other@example.com>: Sender address rejected: Access denied");
  CHECK(run("<user@sub.example.com>") == "554 5.7.1 <user@sub.example.com>: Sender address rejected: Access denied");
  CHECK(run("<user@elsewhere.org>") == "550 5.7.0 <user@elsewhere.org>: Sender address rejected: no users");
  CHECK(run("<x@blocked.example.net>") == "dunno");  // DUNNO stops the search: the parent is not tried
  CHECK(run("<x@other.example.net>") == "554 5.7.1 <x@other.example.net>: Sender address rejected: parent");
  CHECK(run("<>") == "451 4.7.0 <>: Sender address rejected: no bounces now");
  CHECK(run("<numeric@example.org>") == "permit");
  CHECK(run("<tagged+x@example.org>") == "554 5.7.1 <tagged+x@example.org>: Sender address rejected: tagged");
  CHECK(run("<tagged+y@example.org>") == "permit");
  CHECK(run("<nobody@nowhere.test>") == "dunno");

  // Without smtpd_access_maps in parent_domain_matches_subdomains, a subdomain
  // needs a ".domain" entry.
  c.parent_matches_subdomains = false;
  CHECK(run("<x@sub.example.com>") == "dunno");
  CHECK(run("<x@example.com>") == "554 5.7.1 <x@example.com>: Sender address rejected: Access denied");
  c.parent_matches_subdomains = true;
  c.null_access_key = "<null>";
  CHECK(run("<>") == "dunno");
}

TEST_CASE("access actions") {
  Table t(
      "reject.test REJECT\n"
      "rejtext.test REJECT 5.7.9 go away\n"
      "defer.test DEFER\n"
      "defertext.test DEFER try later\n"
      "code4.test 421 4.1.1 busy\n"
      "code5.test 553 sorry\n"
      "nodsn.test 550 5.1.1 bad user\n"
      "onlycode.test 550\n"
      "ok.test OK\n"
      "relay.test RELAY\n"
      "dunno.test DUNNO\n"
      "nested.test permit_sasl_authenticated, reject\n"
      "nested2.test reject_unauth_pipelining permit\n"
      "bogus.test FROBNICATE\n"
      "maps.test check_client_access hash:/etc/x\n"
      "hold.test HOLD\n"
      "holdtext.test HOLD quarantined for review\n"
      "discard.test DISCARD\n"
      "warn.test WARN looks odd\n"
      "dip.test DEFER_IF_PERMIT maybe later\n"
      "dir.test DEFER_IF_REJECT\n"
      "filter.test FILTER smtp:[127.0.0.1]:10025\n");
  auto l = list({"check_sender_access", t.spec()});
  CheckCodes c;
  auto run = [&](const std::string& domain, Effects* e = nullptr, bool sasl = false) {
    CheckFacts f = client();
    f.sasl_authenticated = sasl;
    smtp::Path p = path("<u@" + domain + ">");
    f.sender = &p;
    return text(l.evaluate(CheckStage::kSender, f, c, e));
  };
  CHECK(run("reject.test") == "554 5.7.1 <u@reject.test>: Sender address rejected: Access denied");
  CHECK(run("rejtext.test") == "554 5.7.9 <u@rejtext.test>: Sender address rejected: go away");
  CHECK(run("defer.test") == "450 4.7.1 <u@defer.test>: Sender address rejected: Access denied");
  CHECK(run("defertext.test") == "450 4.7.1 <u@defertext.test>: Sender address rejected: try later");
  // The class digit follows the code; an address status is made the sender's.
  CHECK(run("code4.test") == "421 4.1.7 <u@code4.test>: Sender address rejected: busy");
  CHECK(run("code5.test") == "553 5.7.1 <u@code5.test>: Sender address rejected: sorry");
  CHECK(run("nodsn.test") == "550 5.1.7 <u@nodsn.test>: Sender address rejected: bad user");
  CHECK(run("onlycode.test") == "permit");  // all-numeric means OK, as in Postfix
  CHECK(run("ok.test") == "permit");
  CHECK(run("relay.test") == "permit");
  CHECK(run("dunno.test") == "dunno");
  CHECK(run("nested.test") == "554 5.7.1 <u@nested.test>: Sender address rejected: Access denied");
  CHECK(run("nested.test", nullptr, true) == "permit");
  CHECK(run("nested2.test") == "permit");
  CHECK(run("bogus.test") == "451 4.3.5 Server configuration error");
  CHECK(run("maps.test") == "451 4.3.5 Server configuration error");
  CHECK(run("filter.test") == "451 4.3.5 Server configuration error");
  c.access_map_reject = 550;
  c.access_map_defer = 421;
  CHECK(run("reject.test") == "550 5.7.1 <u@reject.test>: Sender address rejected: Access denied");
  CHECK(run("defer.test") == "421 4.7.1 <u@defer.test>: Sender address rejected: Access denied");

  Effects e;
  CHECK(run("hold.test", &e) == "dunno");
  CHECK(e.hold);
  CHECK_FALSE(e.discard);
  REQUIRE(e.whatsup.size() == 1);
  CHECK(e.whatsup[0] == std::pair<std::string, std::string>("hold", "<u@hold.test>: Sender address triggers HOLD action"));
  Effects e2;
  CHECK(run("holdtext.test", &e2) == "dunno");
  CHECK(e2.whatsup[0].second == "<u@holdtext.test>: Sender address quarantined for review");
  Effects e3;
  CHECK(run("discard.test", &e3) == "permit");
  CHECK(e3.discard);
  CHECK(e3.whatsup[0].second == "<u@discard.test>: Sender address triggers DISCARD action");
  Effects e4;
  CHECK(run("warn.test", &e4) == "dunno");
  CHECK(e4.whatsup[0] == std::pair<std::string, std::string>("warn", "looks odd"));
  Effects e5;
  CHECK(run("dip.test", &e5) == "dunno");
  REQUIRE(e5.defer_if_permit);
  CHECK(e5.defer_if_permit->code == 421);
  CHECK(e5.defer_if_permit->lines[0] == "<u@dip.test>: Sender address rejected: maybe later");
}

TEST_CASE("DEFER_IF_REJECT turns a later reject into the deferral") {
  Table t("dir.test DEFER_IF_REJECT\n");
  auto l = list({"check_sender_access", t.spec(), "reject"});
  CheckCodes c;
  CheckFacts f = client();
  smtp::Path p = path("<u@dir.test>");
  f.sender = &p;
  Effects e;
  CHECK(text(l.evaluate(CheckStage::kSender, f, c, &e)) ==
        "450 4.7.1 <u@dir.test>: Sender address rejected: Service unavailable");
  smtp::Path q = path("<u@other.test>");
  f.sender = &q;
  Effects e2;
  CHECK(text(l.evaluate(CheckStage::kSender, f, c, &e2)) == "554 5.7.1 <u@other.test>: Sender address rejected: Access denied");
}

TEST_CASE("check_client_access: name and parents, then the address and its prefixes") {
  Table t(
      "mail.example.com DUNNO\n"
      "example.com REJECT by name\n"
      "192.0.2 REJECT by network\n"
      "198.51 OK\n"
      "unknown REJECT no name\n");
  auto l = list({"check_client_access", t.spec(), "reject"});
  CheckCodes c;
  auto run = [&](const std::string& name, const std::string& addr) {
    CheckFacts f = client(name, addr);
    return text(l.evaluate(CheckStage::kClient, f, c));
  };
  // A name entry (even DUNNO) ends the lookup before any address key.
  CHECK(run("mail.example.com", "192.0.2.10") == "554 5.7.1 <mail.example.com[192.0.2.10]>: Client host rejected: Access denied");
  CHECK(run("other.example.com", "203.0.113.1") ==
        "554 5.7.1 <other.example.com[203.0.113.1]>: Client host rejected: by name");
  CHECK(run("host.example.org", "192.0.2.77") == "554 5.7.1 <host.example.org[192.0.2.77]>: Client host rejected: by network");
  CHECK(run("host.example.org", "198.51.100.7") == "permit");
  CHECK(run("unknown", "203.0.113.9") == "554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: no name");
}

TEST_CASE("check_helo_access, check_recipient_access and the reply class of the check") {
  Table t(
      "bad.helo.test REJECT\n"
      "spamtrap@example.org REJECT\n"
      "friend.test OK\n");
  CheckCodes c;
  CheckFacts f = client();
  f.helo = "x.bad.helo.test";
  smtp::Path s = path("<a@friend.test>");
  smtp::Path r = path("<spamtrap@example.org>");
  f.sender = &s;
  f.recipient = &r;
  f.recipient_class = AddressClass::kLocal;
  // In smtpd_recipient_restrictions, but the reply names the HELO.
  auto l = list({"check_helo_access", t.spec()});
  CHECK(text(l.evaluate(CheckStage::kRecipient, f, c)) == "554 5.7.1 <x.bad.helo.test>: Helo command rejected: Access denied");
  auto l2 = list({"check_recipient_access", t.spec()});
  CHECK(text(l2.evaluate(CheckStage::kRecipient, f, c)) ==
        "554 5.7.1 <spamtrap@example.org>: Recipient address rejected: Access denied");
  auto l3 = list({"check_sender_access", t.spec(), "reject"});
  CHECK(text(l3.evaluate(CheckStage::kRecipient, f, c)) == "permit");
  // An OK for a source-routed recipient is too suspicious (Postfix).
  Table t2("example.org OK\n");
  auto l4 = list({"check_recipient_access", t2.spec()});
  smtp::Path routed = path("<a%b@example.org>");
  f.recipient = &routed;
  CHECK(text(l4.evaluate(CheckStage::kRecipient, f, c)) == "dunno");
}

TEST_CASE("DNS lists: reply text, =pattern filter, DNSWL safety") {
  DnsxlCache cache;
  DnsxlAnswer listed;
  listed.status = common::dns::Status::kOk;
  listed.addresses = {"127.0.0.2"};
  listed.txt = "https://zen.example/query/ip/192.0.2.10";
  cache["10.2.0.192.zen.example"] = listed;
  DnsxlAnswer failed;
  failed.status = common::dns::Status::kTempFail;
  cache["10.2.0.192.down.example"] = failed;
  DnsxlAnswer notxt = listed;
  notxt.txt = "";
  cache["spam.example.org.dbl.example"] = notxt;
  CheckCodes c;
  CheckFacts f = client();
  f.dnsxl = &cache;
  smtp::Path s = path("<a@spam.example.org>");
  f.sender = &s;
  CHECK(text(list({"reject_rbl_client", "zen.example"}).evaluate(CheckStage::kClient, f, c)) ==
        "554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.example; "
        "https://zen.example/query/ip/192.0.2.10");
  CHECK(text(list({"reject_rbl_client", "zen.example=127.0.0.2"}).evaluate(CheckStage::kClient, f, c)) != "dunno");
  CHECK(text(list({"reject_rbl_client", "zen.example=127.0.0.[3..11]"}).evaluate(CheckStage::kClient, f, c)) == "dunno");
  CHECK(text(list({"reject_rbl_client", "down.example"}).evaluate(CheckStage::kClient, f, c)) == "dunno");
  CHECK(text(list({"reject_rbl_client", "other.example"}).evaluate(CheckStage::kClient, f, c)) == "dunno");
  CHECK(text(list({"reject_rhsbl_sender", "dbl.example"}).evaluate(CheckStage::kSender, f, c)) ==
        "554 5.7.1 Service unavailable; Sender address [a@spam.example.org] blocked using dbl.example");
  c.maps_rbl = 450;
  c.default_rbl_reply = "$rbl_code 5.7.9 $rbl_domain says ${rbl_reason:no reason} for $client_address";
  CHECK(text(list({"reject_rhsbl_sender", "dbl.example"}).evaluate(CheckStage::kSender, f, c)) ==
        "450 4.7.9 dbl.example says no reason for 192.0.2.10");
  c.default_rbl_reply = "Service unavailable";  // no code: Postfix's fallback
  CHECK(text(list({"reject_rhsbl_sender", "dbl.example"}).evaluate(CheckStage::kSender, f, c)) ==
        "450 4.7.1 Service unavailable");

  // permit_dnswl_client permits, but never an unauthorised destination.
  auto wl = list({"permit_dnswl_client", "zen.example", "reject"});
  smtp::Path ours = path("<u@example.test>");
  smtp::Path theirs = path("<u@remote.test>");
  f.recipient = &ours;
  f.recipient_class = AddressClass::kLocal;
  CHECK(text(wl.evaluate(CheckStage::kRecipient, f, c)) == "permit");
  f.recipient = &theirs;
  f.recipient_class = AddressClass::kDefault;
  CHECK(text(wl.evaluate(CheckStage::kRecipient, f, c)).substr(0, 3) == "554");
  CHECK(text(wl.evaluate(CheckStage::kClient, f, c)) == "permit");
}

TEST_CASE("reject_unauth_pipelining") {
  auto l = list({"reject_unauth_pipelining"});
  CheckCodes c;
  CheckFacts f = client();
  CHECK(text(l.evaluate(CheckStage::kData, f, c)) == "dunno");
  f.ill_pipelining = true;
  CHECK(text(l.evaluate(CheckStage::kData, f, c)) ==
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining");
}

TEST_CASE("cidr: tables: the first network containing the client address decides") {
  Table t(
      "# comment\n"
      "192.0.2.128/25 OK\n"
      "192.0.2.0/24 REJECT whole net\n"
      "[2001:db8::]/32 REJECT v6 net\n"
      "198.51.100.7 DEFER one host\n");
  auto l = list({"check_client_access", "cidr:" + t.file, "permit"});
  CheckCodes c;
  auto run = [&](const std::string& addr, const std::string& name = "unknown") {
    CheckFacts f = client(name, addr);
    return text(l.evaluate(CheckStage::kClient, f, c));
  };
  CHECK(run("192.0.2.200") == "permit");
  CHECK(run("192.0.2.10") == "554 5.7.1 <unknown[192.0.2.10]>: Client host rejected: whole net");
  CHECK(run("2001:db8::5") == "554 5.7.1 <unknown[2001:db8::5]>: Client host rejected: v6 net");
  CHECK(run("198.51.100.7") == "450 4.7.1 <unknown[198.51.100.7]>: Client host rejected: one host");
  CHECK(run("198.51.100.8") == "permit");
  // Names are looked up first but never match a cidr: table; the address does.
  CHECK(run("192.0.2.10", "mail.example.com") == "554 5.7.1 <mail.example.com[192.0.2.10]>: Client host rejected: whole net");

  Table bad("192.0.2.0/24 OK\nnot-a-network REJECT\n");
  auto r = Restrictions::parse({"check_client_access", "cidr:" + bad.file}, "main.cf:4: smtpd_client_restrictions");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find(bad.file + ":2: ") != std::string::npos);
}

TEST_CASE("RHSBL client names and rbl_reply_maps") {
  DnsxlCache cache;
  DnsxlAnswer listed;
  listed.status = common::dns::Status::kOk;
  listed.addresses = {"127.0.1.2"};
  listed.txt = "bad host";
  cache["mail.example.com.dbl.example"] = listed;
  cache["ptr.example.net.dbl.example"] = listed;
  CheckCodes c;
  CheckFacts f = client("mail.example.com", "192.0.2.10");
  f.reverse_name = "ptr.example.net";
  f.dnsxl = &cache;
  CHECK(text(list({"reject_rhsbl_client", "dbl.example"}).evaluate(CheckStage::kClient, f, c)) ==
        "554 5.7.1 Service unavailable; Client host [mail.example.com] blocked using dbl.example; bad host");
  CHECK(text(list({"reject_rhsbl_reverse_client", "dbl.example"}).evaluate(CheckStage::kClient, f, c)) ==
        "554 5.7.1 Service unavailable; Unverified Client host [ptr.example.net] blocked using dbl.example; bad host");
  // An unknown client name is never an RHSBL query.
  f.client_name = "unknown";
  CHECK(text(list({"reject_rhsbl_client", "dbl.example"}).evaluate(CheckStage::kClient, f, c)) == "dunno");

  // rbl_reply_maps: a template per DNS list argument, $names as in default_rbl_reply.
  Table t("dbl.example 450 4.7.1 Try again later, $rbl_what is on $rbl_domain ($rbl_reason)\n");
  auto m = common::Map::open(t.spec(), common::MapSyntax::kPostmap);
  REQUIRE(m.ok());
  c.rbl_reply_maps = std::shared_ptr<common::Map>(std::move(m).value());
  CHECK(text(list({"reject_rhsbl_reverse_client", "dbl.example"}).evaluate(CheckStage::kClient, f, c)) ==
        "450 4.7.1 Try again later, ptr.example.net is on dbl.example (bad host)");
  // Another argument has no template: the default reply.
  cache["ptr.example.net.other.example"] = listed;
  CHECK(text(list({"reject_rhsbl_reverse_client", "other.example"}).evaluate(CheckStage::kClient, f, c)) ==
        "554 5.7.1 Service unavailable; Unverified Client host [ptr.example.net] blocked using other.example; bad host");
}
