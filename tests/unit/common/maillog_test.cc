// Mail log lines must be exactly Postfix's, or pflogsumm and fail2ban miss them.
#include "common/maillog.h"

#include <catch2/catch.hpp>
#include <regex>

#include "common/log.h"

using namespace tern::common;

TEST_CASE("mail log lines have Postfix's shapes") {
  std::string c = maillog::endpoint("mx.example.org", "192.0.2.7");
  CHECK(c == "mx.example.org[192.0.2.7]");
  CHECK(maillog::endpoint("", "192.0.2.7") == "unknown[192.0.2.7]");
  CHECK(maillog::connect(c) == "connect from mx.example.org[192.0.2.7]");
  CHECK(maillog::reject_connect("smtpd", "192.0.2.7", 41234, "too many connections") ==
        "NOQUEUE: reject: CONNECT from [192.0.2.7]:41234: too many connections");
  CHECK(maillog::client("4Xq9Kp2TyrzK1", c, "", "") == "4Xq9Kp2TyrzK1: client=mx.example.org[192.0.2.7]");
  CHECK(maillog::client("4Xq9Kp2TyrzK1", c, "PLAIN", "alice") ==
        "4Xq9Kp2TyrzK1: client=mx.example.org[192.0.2.7], sasl_method=PLAIN, sasl_username=alice");
  CHECK(maillog::message_id("4Xq9Kp2TyrzK1", "<abc@example.org>") == "4Xq9Kp2TyrzK1: message-id=<abc@example.org>");
  CHECK(maillog::queue_active("4Xq9Kp2TyrzK1", "a@example.org", 2140, 1) ==
        "4Xq9Kp2TyrzK1: from=<a@example.org>, size=2140, nrcpt=1 (queue active)");
  maillog::Delivery d;
  d.service = "lmtp";
  d.queue_id = "4Xq9Kp2TyrzK1";
  d.to = "b@example.net";
  d.relay = "tern-mda[private/lmtp]";
  d.delay = 0.4;
  d.delays[0] = 0.1;
  d.delays[1] = 0;
  d.delays[2] = 0.1;
  d.delays[3] = 0.2;
  d.dsn = "2.0.0";
  d.status = "sent";
  d.detail = "250 2.0.0 Ok";
  CHECK(maillog::delivery(d) ==
        "4Xq9Kp2TyrzK1: to=<b@example.net>, relay=tern-mda[private/lmtp], delay=0.4, delays=0.1/0/0.1/0.2, "
        "dsn=2.0.0, status=sent (250 2.0.0 Ok)");
  d.orig_to = "postmaster@example.net";
  d.delay = 12.3456;
  d.delays[3] = 0.004;
  CHECK(maillog::delivery(d) ==
        "4Xq9Kp2TyrzK1: to=<b@example.net>, orig_to=<postmaster@example.net>, relay=tern-mda[private/lmtp], "
        "delay=12, delays=0.1/0/0.1/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)");
  CHECK(maillog::removed("4Xq9Kp2TyrzK1") == "4Xq9Kp2TyrzK1: removed");
  CHECK(maillog::reject("", "RCPT", "x[198.51.100.3]", "554 5.7.1 <c@example.net>: Relay access denied", "a@b",
                        "c@example.net", "ESMTP", "x") ==
        "NOQUEUE: reject: RCPT from x[198.51.100.3]: 554 5.7.1 <c@example.net>: Relay access denied; from=<a@b> "
        "to=<c@example.net> proto=ESMTP helo=<x>");
  CHECK(maillog::sasl_failed("x[198.51.100.3]", "LOGIN", "authentication failure") ==
        "warning: x[198.51.100.3]: SASL LOGIN authentication failed: authentication failure");
}

TEST_CASE("client-chosen text is escaped and cannot forge a second line") {
  std::string line = maillog::reject("", "RCPT", "x[198.51.100.3]", "550 bad", "evil\r\nfake: line\x01", "to",
                                     "ESMTP", "helo\n");
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find('\r') == std::string::npos);
  CHECK(line.find("from=<evil\\015\\012fake: line\\001>") != std::string::npos);
}

TEST_CASE("pflogsumm's line pattern matches") {
  // pflogsumm: /^(?:postfix|SYSLOG_NAME)(?:\/\w+)*\/(\w+)\[\d+\]: (\S+): .../ with
  // --syslog_name=tern; a delivery line must carry to=, relay=, status=.
  maillog::Delivery d;
  d.service = "lmtp";
  d.queue_id = "4Xq9Kp2TyrzK1";
  d.to = "b@example.net";
  d.relay = "tern-mda[private/lmtp]";
  d.dsn = "2.0.0";
  d.status = "sent";
  d.detail = "250 2.0.0 Ok";
  std::string full = log::format_line(log::Level::kInfo, "lmtp", maillog::delivery(d));
  std::regex re(R"(^tern(?:/\w+)*/(\w+)\[\d+\]: (\w+): to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=(\S+), .*status=(\S+))");
  std::smatch m;
  REQUIRE(std::regex_search(full, m, re));
  CHECK(m[1] == "lmtp");
  CHECK(m[2] == "4Xq9Kp2TyrzK1");
  CHECK(m[5] == "sent");
}
