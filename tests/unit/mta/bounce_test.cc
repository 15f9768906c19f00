// RFC 3464 notifications: structure, per-recipient fields, RET=HDRS, size limit,
// and that nothing from the original can break out of a header line.
#include "mta/bounce.h"

#include <catch2/catch.hpp>

using namespace tern;
using mta::DsnInput;
using mta::Envelope;
using mta::Recipient;

namespace {

Envelope env() {
  Envelope e;
  e.queue_id = "4jbmtW5jRK000";
  e.sender = "sender@example.org";
  e.arrival_us = 1700000000000000;
  e.envid = "env-1";
  return e;
}

}  // namespace

TEST_CASE("a failure notice is multipart/report with one block per recipient") {
  Envelope e = env();
  Recipient a, b;
  a.address = "alice@example.net";
  a.last_reply = "550 5.1.1 <alice@example.net>: User unknown";
  a.dsn_status = "5.1.1";
  a.orcpt = "rfc822;Alice@example.net";
  b.kind = Recipient::Kind::kCommand;
  b.address = "/usr/bin/prog";
  b.orig_address = "prog@example.net";
  b.last_reply = "5.3.0 Command died with status 1: oops";
  b.dsn_status = "5.3.0";
  std::string original = "Subject: hello\r\nFrom: sender@example.org\r\n\r\nthe body\r\n";
  DsnInput in;
  in.myhostname = "mx.example.net";
  in.env = &e;
  in.rcpts = {&a, &b};
  in.original = original;
  in.now = 1700000100;
  in.queue_id = "4jbmtW5jRK001";
  std::string m = mta::make_dsn(in);
  CHECK(m.rfind("From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nTo: sender@example.org\r\n"
                "Subject: Undelivered Mail Returned to Sender\r\n", 0) == 0);
  CHECK(m.find("Content-Type: multipart/report; report-type=delivery-status;") != std::string::npos);
  CHECK(m.find("Auto-Submitted: auto-replied\r\n") != std::string::npos);
  CHECK(m.find("Reporting-MTA: dns; mx.example.net\r\n") != std::string::npos);
  CHECK(m.find("Original-Envelope-Id: env-1\r\n") != std::string::npos);
  CHECK(m.find("Final-Recipient: rfc822; alice@example.net\r\nOriginal-Recipient: rfc822;Alice@example.net\r\n"
               "Action: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <alice@example.net>: User unknown\r\n") !=
        std::string::npos);
  CHECK(m.find("Final-Recipient: rfc822; prog@example.net\r\nAction: failed\r\nStatus: 5.3.0\r\n"
               "Diagnostic-Code: x-unix; 5.3.0 Command died with status 1: oops\r\n") != std::string::npos);
  CHECK(m.find("Content-Type: message/rfc822\r\n") != std::string::npos);
  CHECK(m.find(original) != std::string::npos);
  // Three parts and the closing boundary.
  std::string boundary = "4jbmtW5jRK001.1700000100/mx.example.net";
  size_t parts = 0;
  for (size_t p = m.find("--" + boundary + "\r\n"); p != std::string::npos; p = m.find("--" + boundary + "\r\n", p + 1)) ++parts;
  CHECK(parts == 3);
  CHECK(m.size() >= boundary.size() + 6);
  CHECK(m.substr(m.size() - boundary.size() - 6) == "--" + boundary + "--\r\n");
}

TEST_CASE("RET=HDRS and success notices return only the headers") {
  Envelope e = env();
  e.ret = "HDRS";
  Recipient a;
  a.address = "alice@example.net";
  a.last_reply = "550 5.1.1 no";
  std::string original = "Subject: hello\r\n\r\nsecret body\r\n";
  DsnInput in;
  in.myhostname = "mx";
  in.env = &e;
  in.rcpts = {&a};
  in.original = original;
  in.queue_id = "Q";
  std::string m = mta::make_dsn(in);
  CHECK(m.find("Content-Type: text/rfc822-headers\r\n") != std::string::npos);
  CHECK(m.find("secret body") == std::string::npos);
  in.kind = DsnInput::Kind::kSuccess;
  e.ret = "";
  m = mta::make_dsn(in);
  CHECK(m.find("Subject: Successful Mail Delivery Report\r\n") != std::string::npos);
  CHECK(m.find("Action: delivered\r\nStatus: 2.0.0\r\n") != std::string::npos);
  CHECK(m.find("secret body") == std::string::npos);
}

TEST_CASE("bounce_size_limit cuts the returned message at a line end") {
  Envelope e = env();
  Recipient a;
  a.address = "x@y";
  a.last_reply = "550 no";
  std::string original = "Subject: big\r\n\r\n";
  for (int i = 0; i < 2000; ++i) original += "line " + std::to_string(i) + "\r\n";
  DsnInput in;
  in.myhostname = "mx";
  in.env = &e;
  in.rcpts = {&a};
  in.original = original;
  in.size_limit = 1000;
  in.queue_id = "Q";
  std::string m = mta::make_dsn(in);
  CHECK(m.size() < 4000);
  CHECK(m.find("line 1999") == std::string::npos);
  CHECK(m.find("line 10\r\n") != std::string::npos);
}

TEST_CASE("CR and LF in recipient data cannot inject headers") {
  Envelope e = env();
  e.sender = "a@b\r\nBcc: victim@example.org";
  Recipient a;
  a.address = "x@y\r\nX-Injected: 1";
  a.last_reply = "550 bad\r\nX-Injected: 2";
  DsnInput in;
  in.myhostname = "mx";
  in.env = &e;
  in.rcpts = {&a};
  in.original = "S: x\r\n\r\n";
  in.queue_id = "Q";
  std::string m = mta::make_dsn(in);
  CHECK(m.find("\r\nBcc:") == std::string::npos);
  CHECK(m.find("\r\nX-Injected") == std::string::npos);
}

TEST_CASE("header_section") {
  CHECK(mta::header_section("A: b\r\n\r\nbody") == "A: b\r\n\r\n");
  CHECK(mta::header_section("A: b\n\nbody") == "A: b\n\n");
  CHECK(mta::header_section("A: b\r\n") == "A: b\r\n");
}
