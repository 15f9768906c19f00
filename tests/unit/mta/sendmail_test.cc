// sendmail's command line, the -t header scan, the maildrop file format, the
// LMTP dot-stuffer, the command exit status table, and the mailq format.
#include <sys/wait.h>
#include <sysexits.h>

#include <catch2/catch.hpp>

#include "mta/lmtp_client.h"
#include "mta/local_delivery.h"
#include "mta/maildrop.h"
#include "mta/sendmail_args.h"
#include "mta/showq.h"

using namespace tern;
using mta::SendmailArgs;
using V = std::vector<std::string>;

TEST_CASE("sendmail options") {
  auto a = mta::parse_sendmail_args({"/usr/sbin/sendmail", "-t", "-i", "-f", "me@example.org", "-Fme too", "-odi",
                                     "-oem", "-v", "--", "a@x", "b@y, c@z"});
  REQUIRE(a.ok());
  CHECK(a->mode == SendmailArgs::Mode::kDeliver);
  CHECK(a->extract_recipients);
  CHECK(a->ignore_dots);
  CHECK(a->verbose);
  CHECK(*a->sender == "me@example.org");
  CHECK(a->full_name == "me too");
  CHECK(a->recipients == V{"a@x", "b@y", "c@z"});
  auto b = mta::parse_sendmail_args({"sendmail", "-oi", "-f<>", "-r", "x@y", "u"});
  REQUIRE(b.ok());
  CHECK(*b->sender == "x@y");  // the last one wins, as in sendmail
  CHECK(mta::parse_sendmail_args({"sendmail", "-f<>", "u"})->sender->empty());
  CHECK(mta::parse_sendmail_args({"mailq"})->mode == SendmailArgs::Mode::kPrintQueue);
  CHECK(mta::parse_sendmail_args({"/usr/bin/newaliases"})->mode == SendmailArgs::Mode::kNewAliases);
  // The alternatives(8) names cmake --install uses.
  CHECK(mta::parse_sendmail_args({"/usr/bin/mailq.tern"})->mode == SendmailArgs::Mode::kPrintQueue);
  CHECK(mta::parse_sendmail_args({"newaliases.tern"})->mode == SendmailArgs::Mode::kNewAliases);
  CHECK(mta::parse_sendmail_args({"/usr/sbin/sendmail.tern"})->mode != SendmailArgs::Mode::kPrintQueue);
  CHECK(mta::parse_sendmail_args({"sendmail", "-bp"})->mode == SendmailArgs::Mode::kPrintQueue);
  CHECK(mta::parse_sendmail_args({"sendmail", "-bs"})->mode == SendmailArgs::Mode::kSmtp);
  CHECK(mta::parse_sendmail_args({"sendmail", "-bi"})->mode == SendmailArgs::Mode::kNewAliases);
  CHECK(mta::parse_sendmail_args({"sendmail", "-q"})->mode == SendmailArgs::Mode::kFlush);
  CHECK_FALSE(mta::parse_sendmail_args({"sendmail", "-f"}).ok());
  CHECK_FALSE(mta::parse_sendmail_args({"sendmail", "-Z"}).ok());
  CHECK_FALSE(mta::parse_sendmail_args({"sendmail", "-bd"}).ok());
}

TEST_CASE("-t: recipients from To, Cc and Bcc") {
  std::string h =
      "From: me@example.org\r\n"
      "To: \"Smith, Alice\" <alice@example.org>, bob@example.org (Bob),\r\n"
      "  carol\r\n"
      "Cc: undisclosed-recipients:;\r\n"
      "Bcc: team: dan@example.org, erin@example.org;\r\n"
      "Subject: To: nobody@example.org\r\n\r\n";
  CHECK(mta::header_recipients(h) == V{"alice@example.org", "bob@example.org", "carol", "dan@example.org", "erin@example.org"});
  // Resent-* headers replace the originals (RFC 5322 3.6.6).
  CHECK(mta::header_recipients("To: a@x\nResent-To: b@y\n\n") == V{"b@y"});
  CHECK(mta::header_recipients("Subject: none\n\n").empty());
}

TEST_CASE("-t removes Bcc, with its continuation lines, from the headers only") {
  std::string m = "To: a@x\nBcc: b@y,\n  c@z\nSubject: s\n\nBcc: in the body stays\n";
  CHECK(mta::remove_bcc(m) == "To: a@x\nSubject: s\n\nBcc: in the body stays\n");
  CHECK(mta::has_header("To: a\r\nfrom: b\r\n\r\n", "From"));
  CHECK_FALSE(mta::has_header("To: a\r\n\r\nFrom: b\r\n", "From"));
}

TEST_CASE("maildrop files") {
  mta::MaildropEnvelope e;
  e.sender = "me@example.org";
  e.rcpts = {"a@x", "b@y"};
  std::string file = mta::maildrop_header(e) + "Subject: x\n\nbody\n";
  size_t off = 0;
  auto p = mta::parse_maildrop(file, off);
  REQUIRE(p.ok());
  CHECK(p->sender == "me@example.org");
  CHECK(p->rcpts == V{"a@x", "b@y"});
  CHECK(file.substr(off) == "Subject: x\n\nbody\n");
  // Bad input is refused, never half-read.
  for (const char* bad : {"", "TERN-MAILDROP 2\nS a\n\n", "TERN-MAILDROP 1\nR a@x\n\n", "TERN-MAILDROP 1\nS a\nS b\n\n",
                          "TERN-MAILDROP 1\nS a\nX y\n\n", "TERN-MAILDROP 1\nS a\r\n\n", "TERN-MAILDROP 1\nS a\nR b"}) {
    INFO(bad);
    CHECK_FALSE(mta::parse_maildrop(bad, off).ok());
  }
  std::string many = "TERN-MAILDROP 1\nS a\n";
  for (size_t i = 0; i <= mta::kMaildropMaxRcpts; ++i) many += "R x@y\n";
  CHECK_FALSE(mta::parse_maildrop(many + "\n", off).ok());
  CHECK_FALSE(mta::parse_maildrop("TERN-MAILDROP 1\nS " + std::string(5000, 'a') + "\n\n", off).ok());
}

TEST_CASE("maildrop addresses go through the SMTP grammar: nothing can ride along into MAIL FROM or RCPT TO") {
  // RFC 5321 4.1.2: a Path is "<" Mailbox ">", and ESMTP parameters follow it on
  // the command line; a maildrop record that closes the path early, or carries a
  // line end or a NUL, would put its own parameters or commands after it.
  const std::string nul("a\0b@example.org", 15);
  struct Case {
    std::string record;
    bool ok;
  } cases[] = {
      {"S me@example.org", true},
      {"S <me@example.org>", true},
      {"S me", true},  // a bare user name gets @$myorigin at pickup
      {"S <>", true},
      {"S ", true},  // the submitting user
      {"S \"john doe\"@example.org", true},
      {"S j\xc3\xbcrgen@example.org", true},  // RFC 6531 UTF-8
      {"S a@b> AUTH=<x>", false},
      {"S <a@b> AUTH=<x>", false},
      {"S a@b> SIZE=1", false},
      {"S a@b@c", false},
      {"S a b@c", false},
      {"S <a@b", false},
      {"S a@b\x01", false},
      {"S a@b\t", false},
      {"S " + nul, false},
      {"S me\nR x@y", true},  // two records, both fine
      {"S me\nR a@b> NOTIFY=NEVER", false},
      {"S me\nR <a@b> ORCPT=rfc822;x@y", false},
      {"S me\nR a@b>\rRCPT TO:<c@d>", false},
      {"S me\nR " + nul, false},
      {"S me\nR ", false},
      {"S me\nR <>", false},
      {"S me\nR a@-b", false},
  };
  for (const Case& c : cases) {
    INFO(c.record);
    size_t off = 0;
    auto p = mta::parse_maildrop("TERN-MAILDROP 1\n" + c.record + "\n\nbody\n", off);
    CHECK(p.ok() == c.ok);
  }
}

TEST_CASE("parse_local_address: sendmail's and pickup's address rule") {
  auto a = mta::parse_local_address("Me", "example.org");
  REQUIRE(a.ok());
  CHECK(a->address() == "Me@example.org");
  a = mta::parse_local_address("<x@Y.example>", "example.org");
  REQUIRE(a.ok());
  CHECK(a->address() == "x@Y.example");
  for (const char* bad : {"", "<>", "a@b> AUTH=<x>", "<a@b> NOTIFY=NEVER", "a\r@b", "a@b\r\nRSET", "@b", "a@"}) {
    INFO(bad);
    CHECK_FALSE(mta::parse_local_address(bad, "example.org").ok());
  }
}

TEST_CASE("stale maildrop temporary files") {
  const int64_t now = 1700000000;
  CHECK(mta::stale_maildrop_temp(".1699990000.12.ab", now - mta::kMaildropStaleTempSeconds, now));
  CHECK_FALSE(mta::stale_maildrop_temp(".1699990000.12.ab", now - mta::kMaildropStaleTempSeconds + 1, now));
  CHECK_FALSE(mta::stale_maildrop_temp("1699990000.12.ab", 0, now));  // a finished file is pickup's
  CHECK_FALSE(mta::stale_maildrop_temp(".", 0, now));
  CHECK_FALSE(mta::stale_maildrop_temp("..", 0, now));
  CHECK_FALSE(mta::stale_maildrop_temp("", 0, now));
}

TEST_CASE("streaming dot-stuffing gives the same bytes for any split") {
  std::string body = ".starts with a dot\r\nmiddle . dot\r\n..two\r\nlast";
  std::string whole;
  {
    mta::DotStuffer d;
    d.feed(body, whole);
    d.finish(whole);
  }
  CHECK(whole == "..starts with a dot\r\nmiddle . dot\r\n...two\r\nlast\r\n.\r\n");
  for (size_t piece : {1, 2, 5}) {
    mta::DotStuffer d;
    std::string out;
    for (size_t i = 0; i < body.size(); i += piece) d.feed(body.substr(i, piece), out);
    d.finish(out);
    CHECK(out == whole);
  }
  mta::DotStuffer d;
  std::string out;
  d.feed("x\r\n", out);
  d.finish(out);
  CHECK(out == "x\r\n.\r\n");
  // A bare LF does not start a line (a dot after it is not stuffed: it cannot end DATA).
  mta::DotStuffer d2;
  std::string o2;
  d2.feed("a\n.b\r\n", o2);
  d2.finish(o2);
  CHECK(o2 == "a\n.b\r\n.\r\n");
}

TEST_CASE("command exit status: sysexits that mean try again defer") {
  auto st = [](int code) { return code << 8; };  // a wait status with this exit code
  CHECK(mta::command_exit_outcome(st(0), "").status == 's');
  CHECK(mta::command_exit_outcome(st(EX_TEMPFAIL), "later").status == 'd');
  CHECK(mta::command_exit_outcome(st(EX_OSERR), "").status == 'd');
  CHECK(mta::command_exit_outcome(st(EX_NOUSER), "").dsn == "5.1.1");
  auto o = mta::command_exit_outcome(st(1), "boom\n");
  CHECK(o.status == 'b');
  CHECK(o.text == "Command died with status 1: boom");
  CHECK(mta::command_exit_outcome(9, "").status == 'd');  // killed by a signal
}

TEST_CASE("mailq format") {
  CHECK(mta::format_mailq({}, {}) == "Mail queue is empty\n");
  mta::Envelope e;
  e.queue_id = "4jbmtW5jRK000";
  e.size = 2048;
  e.sender = "s@example.org";
  mta::Recipient r;
  r.address = "alice@example.test";
  r.last_reply = "connect to tern-mda: refused";
  e.rcpts = {r};
  std::string q = mta::format_mailq({e}, {"4jbmtW5jRK000"});
  CHECK(q.rfind("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n4jbmtW5jRK000*     2048 ", 0) == 0);
  CHECK(q.find("(connect to tern-mda: refused)\n") != std::string::npos);
  CHECK(q.find("  alice@example.test\n") != std::string::npos);
  CHECK(q.find("-- 2 Kbytes in 1 Request.\n") != std::string::npos);
}
