// Restriction lists: Postfix's names, order and reply texts, table-driven.
#include "mta/smtpd_check.h"

#include <catch2/catch.hpp>

#include "common/smtp_address.h"

using namespace tern;
using mta::AddressClass;
using mta::CheckCodes;
using mta::CheckFacts;
using mta::CheckStage;
using mta::Known;
using mta::Restrictions;
using mta::Verdict;
namespace smtp = common::smtp;

namespace {

smtp::Path path(const std::string& text, bool postmaster = false) {
  smtp::PathOptions o;
  o.allow_null = true;
  o.allow_postmaster = postmaster;
  o.smtputf8 = true;
  auto p = smtp::parse_path(text, o);
  REQUIRE(p.ok());
  return *p;
}

Restrictions list(std::vector<std::string> items) {
  auto r = Restrictions::parse(items, "test");
  REQUIRE(r.ok());
  return *r;
}

std::string text(const Verdict& v) { return std::to_string(v.reply.code) + " " + v.reply.enhanced + " " + v.reply.lines[0]; }

}  // namespace

TEST_CASE("unknown restriction names are configuration errors") {
  auto r = Restrictions::parse({"permit_mynetworks", "reject_unauth_destinatoin"}, "smtpd_relay_restrictions");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "smtpd_relay_restrictions: unknown restriction 'reject_unauth_destinatoin'");
}

TEST_CASE("relay control: reject_unauth_destination") {
  const Restrictions relay = list({"permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination"});
  CheckCodes c;
  struct Case {
    const char* rcpt;
    AddressClass cls;
    bool mynet, sasl;
    const char* expect;  // "" = dunno/permit
  } cases[] = {
      {"<u@example.org>", AddressClass::kLocal, false, false, ""},
      {"<u@example.org>", AddressClass::kVirtualMailbox, false, false, ""},
      {"<u@relay.example>", AddressClass::kRelay, false, false, ""},
      {"<u@remote.example>", AddressClass::kDefault, false, false, "554 5.7.1 <u@remote.example>: Relay access denied"},
      {"<u@remote.example>", AddressClass::kDefault, true, false, ""},
      {"<u@remote.example>", AddressClass::kDefault, false, true, ""},
      // Sender-specified routing in our own domain is never an authorised destination.
      {"<u%remote.example@example.org>", AddressClass::kLocal, false, false,
       "554 5.7.1 <u%remote.example@example.org>: Relay access denied"},
      {"<remote.example!u@example.org>", AddressClass::kLocal, false, false,
       "554 5.7.1 <remote.example!u@example.org>: Relay access denied"},
      {"<\"u@remote.example\"@example.org>", AddressClass::kLocal, false, false,
       "554 5.7.1 <\"u@remote.example\"@example.org>: Relay access denied"},
      {"<u@[192.0.2.1]>", AddressClass::kLocal, false, false, "554 5.7.1 <u@[192.0.2.1]>: Relay access denied"},
  };
  for (const Case& k : cases) {
    smtp::Path p = path(k.rcpt);
    CheckFacts f;
    f.client_addr = "198.51.100.7";
    f.in_mynetworks = k.mynet;
    f.sasl_authenticated = k.sasl;
    f.recipient = &p;
    f.recipient_class = k.cls;
    Verdict v = relay.evaluate(CheckStage::kRelay, f, c);
    INFO(k.rcpt);
    if (std::string(k.expect).empty()) {
      CHECK_FALSE(v.refused());
    } else {
      REQUIRE(v.refused());
      CHECK(text(v) == k.expect);
    }
  }
  // defer_unauth_destination answers 454 4.7.1.
  smtp::Path p = path("<u@remote.example>");
  CheckFacts f;
  f.recipient = &p;
  Verdict v = list({"defer_unauth_destination"}).evaluate(CheckStage::kRelay, f, c);
  CHECK(v.kind == Verdict::Kind::kDefer);
  CHECK(text(v) == "454 4.7.1 <u@remote.example>: Relay access denied");
}

TEST_CASE("first match wins; an exhausted list is dunno") {
  CheckCodes c;
  CheckFacts f;
  f.client_addr = "192.0.2.1";
  f.in_mynetworks = true;
  CHECK(list({"permit_mynetworks", "reject"}).evaluate(CheckStage::kClient, f, c).kind == Verdict::Kind::kPermit);
  f.in_mynetworks = false;
  Verdict v = list({"permit_mynetworks", "reject"}).evaluate(CheckStage::kClient, f, c);
  CHECK(text(v) == "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied");
  CHECK(list({"permit_mynetworks"}).evaluate(CheckStage::kClient, f, c).kind == Verdict::Kind::kDunno);
  CHECK(list({}).evaluate(CheckStage::kClient, f, c).kind == Verdict::Kind::kDunno);
  CHECK(text(list({"defer"}).evaluate(CheckStage::kClient, f, c)) ==
        "450 4.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied");
}

TEST_CASE("HELO restrictions") {
  CheckCodes c;
  const Restrictions helo = list({"reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname"});
  struct Case {
    const char* helo;
    const char* expect;
  } cases[] = {
      {"mail.example.org", ""},
      {"[192.0.2.1]", ""},
      {"mail.example.org.", ""},
      {"localhost", "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"},
      {"bad_name.example", "501 5.5.2 <bad_name.example>: Helo command rejected: Invalid name"},
      {"-x.example", "501 5.5.2 <-x.example>: Helo command rejected: Invalid name"},
      {"[300.1.1.1]", "501 5.5.2 <[300.1.1.1]>: Helo command rejected: Invalid name"},
      {"a..b", "501 5.5.2 <a..b>: Helo command rejected: Invalid name"},
  };
  for (const Case& k : cases) {
    CheckFacts f;
    f.helo = k.helo;
    Verdict v = helo.evaluate(CheckStage::kHelo, f, c);
    INFO(k.helo);
    if (std::string(k.expect).empty()) {
      CHECK_FALSE(v.refused());
    } else {
      CHECK(text(v) == k.expect);
    }
  }
  // No HELO yet: nothing to judge.
  CheckFacts f;
  CHECK_FALSE(helo.evaluate(CheckStage::kHelo, f, c).refused());
}

TEST_CASE("non-FQDN sender and recipient") {
  CheckCodes c;
  smtp::Path s1 = path("<a@localhost>"), s2 = path("<a@x.example>"), null = path("<>");
  smtp::Path r1 = path("<b@host>"), pm = path("<Postmaster>", true);
  CheckFacts f;
  f.sender = &s1;
  CHECK(text(list({"reject_non_fqdn_sender"}).evaluate(CheckStage::kSender, f, c)) ==
        "504 5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address");
  f.sender = &s2;
  CHECK_FALSE(list({"reject_non_fqdn_sender"}).evaluate(CheckStage::kSender, f, c).refused());
  f.sender = &null;
  CHECK_FALSE(list({"reject_non_fqdn_sender"}).evaluate(CheckStage::kSender, f, c).refused());
  f.recipient = &r1;
  CHECK(text(list({"reject_non_fqdn_recipient"}).evaluate(CheckStage::kRecipient, f, c)) ==
        "504 5.5.2 <b@host>: Recipient address rejected: need fully-qualified address");
  f.recipient = &pm;
  CHECK_FALSE(list({"reject_non_fqdn_recipient"}).evaluate(CheckStage::kRecipient, f, c).refused());
}

TEST_CASE("unknown sender and recipient domains from DNS answers") {
  CheckCodes c;
  using S = common::dns::Status;
  smtp::Path s = path("<a@nx.example>"), r = path("<b@nx.example>");
  struct Case {
    S status;
    bool null_mx;
    const char* sender_expect;
    const char* rcpt_expect;
  } cases[] = {
      {S::kOk, false, "", ""},
      {S::kNxDomain, false, "450 4.1.8 <a@nx.example>: Sender address rejected: Domain not found",
       "450 4.1.2 <b@nx.example>: Recipient address rejected: Domain not found"},
      {S::kNoData, false, "450 4.1.8 <a@nx.example>: Sender address rejected: Domain not found",
       "450 4.1.2 <b@nx.example>: Recipient address rejected: Domain not found"},
      {S::kTempFail, false, "450 4.4.3 <a@nx.example>: Sender address rejected: Domain not found",
       "450 4.4.3 <b@nx.example>: Recipient address rejected: Domain not found"},
      {S::kOk, true, "550 5.7.27 <a@nx.example>: Sender address rejected: Domain does not accept mail",
       "556 5.1.10 <b@nx.example>: Recipient address rejected: Domain does not accept mail"},
  };
  for (const Case& k : cases) {
    CheckFacts f;
    f.sender = &s;
    f.sender_dns = {true, k.status, k.null_mx};
    f.recipient = &r;
    f.recipient_dns = {true, k.status, k.null_mx};
    Verdict vs = list({"reject_unknown_sender_domain"}).evaluate(CheckStage::kSender, f, c);
    Verdict vr = list({"reject_unknown_recipient_domain"}).evaluate(CheckStage::kRecipient, f, c);
    INFO(static_cast<int>(k.status));
    CHECK((vs.refused() ? text(vs) : "") == std::string(k.sender_expect));
    CHECK((vr.refused() ? text(vr) : "") == std::string(k.rcpt_expect));
  }
  // Our own domains are not looked up (Postfix: "when Postfix is not final destination").
  CheckFacts f;
  f.sender = &s;
  f.sender_class = AddressClass::kLocal;
  f.sender_dns = {true, S::kNxDomain, false};
  CHECK_FALSE(list({"reject_unknown_sender_domain"}).evaluate(CheckStage::kSender, f, c).refused());
  // 550 with unknown_address_reject_code = 550.
  c.unknown_address = 550;
  f.sender_class = AddressClass::kDefault;
  CHECK(text(list({"reject_unknown_sender_domain"}).evaluate(CheckStage::kSender, f, c)) ==
        "550 5.1.8 <a@nx.example>: Sender address rejected: Domain not found");
}

TEST_CASE("unlisted recipients per address class") {
  CheckCodes c;
  smtp::Path r = path("<u@example.org>");
  struct Case {
    AddressClass cls;
    Known known;
    const char* expect;
  } cases[] = {
      {AddressClass::kLocal, Known::kYes, ""},
      {AddressClass::kLocal, Known::kNo,
       "550 5.1.1 <u@example.org>: Recipient address rejected: User unknown in local recipient table"},
      {AddressClass::kVirtualMailbox, Known::kNo,
       "550 5.1.1 <u@example.org>: Recipient address rejected: User unknown in virtual mailbox table"},
      {AddressClass::kVirtualAlias, Known::kNo,
       "550 5.1.1 <u@example.org>: Recipient address rejected: User unknown in virtual alias table"},
      {AddressClass::kLocal, Known::kTempFail, "451 4.3.0 <u@example.org>: Temporary lookup failure"},
      {AddressClass::kDefault, Known::kNo, ""},
  };
  for (const Case& k : cases) {
    CheckFacts f;
    f.recipient = &r;
    f.recipient_class = k.cls;
    f.recipient_known = k.known;
    Verdict v = mta::unlisted_recipient(f, c);
    CHECK((v.refused() ? text(v) : "") == std::string(k.expect));
  }
}

TEST_CASE("client hostname restrictions") {
  CheckCodes c;
  CheckFacts f;
  f.client_addr = "192.0.2.9";
  CHECK(text(list({"reject_unknown_client_hostname"}).evaluate(CheckStage::kClient, f, c)) ==
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.9]");
  f.reverse_name = "host.example";
  CHECK_FALSE(list({"reject_unknown_reverse_client_hostname"}).evaluate(CheckStage::kClient, f, c).refused());
  f.client_name = "host.example";
  CHECK_FALSE(list({"reject_unknown_client_hostname"}).evaluate(CheckStage::kClient, f, c).refused());
  Restrictions needs = list({"reject_unknown_client_hostname", "reject_unknown_sender_domain", "reject_unlisted_recipient"});
  CHECK(needs.needs().client_name);
  CHECK(needs.needs().sender_dns);
  CHECK(needs.needs().recipient_known);
  CHECK_FALSE(needs.needs().recipient_dns);
}

TEST_CASE("multi-recipient bounces") {
  CheckCodes c;
  smtp::Path null = path("<>"), r = path("<u@example.org>");
  CheckFacts f;
  f.sender = &null;
  f.recipients_accepted = 2;
  CHECK(text(list({"reject_multi_recipient_bounce"}).evaluate(CheckStage::kData, f, c)) ==
        "550 5.5.3 <DATA>: Data command rejected: Multi-recipient bounce");
  f.recipients_accepted = 1;
  CHECK_FALSE(list({"reject_multi_recipient_bounce"}).evaluate(CheckStage::kData, f, c).refused());
}
