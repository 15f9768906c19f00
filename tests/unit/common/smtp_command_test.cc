// SMTP/LMTP command lines: verbs, MAIL/RCPT with every ESMTP parameter, BDAT, and the
// replies for bad input.
#include <catch2/catch.hpp>

#include <string>

#include "common/smtp_command.h"

using namespace tern::common::smtp;

namespace {

CommandOptions all_on() {
  CommandOptions o;
  o.binarymime = true;
  o.dsn = true;
  o.auth = true;
  return o;
}

Command ok(std::string_view line, CommandOptions o = all_on()) {
  CommandResult r = parse_command(line, o);
  if (auto* rep = std::get_if<Reply>(&r)) FAIL("unexpected reply " << rep->summary() << " for " << std::string(line));
  return std::get<Command>(r);
}

Reply err(std::string_view line, CommandOptions o = all_on()) {
  CommandResult r = parse_command(line, o);
  if (std::holds_alternative<Command>(r)) FAIL("accepted: " << std::string(line));
  return std::get<Reply>(r);
}

}  // namespace

TEST_CASE("verbs", "[smtp_command]") {
  CHECK(ok("EHLO client.example").verb == Verb::kEhlo);
  CHECK(ok("ehlo client.example").argument == "client.example");
  CHECK(ok("HELO x").verb == Verb::kHelo);
  CHECK(ok("DATA").verb == Verb::kData);
  CHECK(ok("RSET").verb == Verb::kRset);
  CHECK(ok("QUIT").verb == Verb::kQuit);
  CHECK(ok("NOOP").verb == Verb::kNoop);
  CHECK(ok("NOOP anything").argument == "anything");
  CHECK(ok("STARTTLS").verb == Verb::kStartTls);
  CHECK(ok("AUTH PLAIN AGFAYg==").argument == "PLAIN AGFAYg==");
  CHECK(ok("VRFY user").verb == Verb::kVrfy);
  CHECK(err("FOO").code == 500);
  CHECK(err("").code == 500);
  CHECK(err("DATA x").code == 501);
  CHECK(err("EHLO").code == 501);
  CHECK(err("EHLO   ").code == 501);
  CHECK(err("AUTH").code == 501);
  CHECK(err(std::string("NOOP a\0b", 8)).code == 500);
  CHECK(err("NOOP a\rb").code == 500);
  CHECK(err("MAILFROM:<a@b.example>").code == 500);
}

TEST_CASE("LMTP uses LHLO only", "[smtp_command]") {
  CommandOptions l = all_on();
  l.lmtp = true;
  CHECK(ok("LHLO mta.example", l).verb == Verb::kLhlo);
  CHECK(err("EHLO mta.example", l).code == 500);
  CHECK(err("HELO mta.example", l).code == 500);
  CHECK(err("LHLO mta.example").code == 500);  // not in SMTP
}

TEST_CASE("MAIL FROM with parameters", "[smtp_command]") {
  Command c = ok("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>");
  CHECK(c.verb == Verb::kMail);
  CHECK(c.path.mailbox.address() == "a@b.example");
  CHECK(c.mail.size == 1000u);
  CHECK(c.mail.body == Body::k8BitMime);
  CHECK(c.mail.smtputf8);
  CHECK(c.mail.ret == Ret::kHdrs);
  CHECK(c.mail.envid == "QQ+1");
  CHECK(c.mail.auth == std::string("<>"));
  CHECK(ok("mail from: <a@b.example>").path.mailbox.local_part == "a");
  CHECK(ok("MAIL FROM:<>").path.null);
  CHECK(ok("MAIL FROM:<> BODY=BINARYMIME").mail.body == Body::kBinaryMime);
  CHECK(ok("MAIL FROM:<a@b.example>  SIZE=5").mail.size == 5u);
  CHECK(ok("MAIL FROM:<jü@b.example> SMTPUTF8").path.mailbox.utf8);
}

TEST_CASE("MAIL FROM errors", "[smtp_command]") {
  CHECK(err("MAIL FROM:a@b.example").code == 501);
  CHECK(err("MAIL FROM:<a@b.example").code == 501);
  CHECK(err("MAIL TO:<a@b.example>").code == 501);
  CHECK(err("MAIL FROM:<a@b@c.example>").enhanced == "5.1.7");
  CHECK(err("MAIL FROM:<a@b.example> SIZE=").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> SIZE=12x").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> SIZE=999999999999999999999").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> BODY=9BIT").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> FOO=bar").code == 555);
  CHECK(err("MAIL FROM:<a@b.example> SIZE=1 SIZE=2").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> SMTPUTF8=yes").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> RET=ALL").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> ENVID=a+zz").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> ENVID=" + std::string(101, 'x')).code == 501);
  CHECK(err("MAIL FROM:<a@b.example>SIZE=1").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> =x").code == 501);
  CHECK(err("MAIL FROM:<a@b.example> SIZE==1").code == 501);
  // Non-ASCII sender needs the SMTPUTF8 parameter (RFC 6531 3.7.4.1).
  Reply u = err("MAIL FROM:<jü@b.example>");
  CHECK(u.code == 553);
  CHECK(u.enhanced == "5.6.7");
  // Parameters of extensions that were not advertised.
  CommandOptions off;
  CHECK(err("MAIL FROM:<a@b.example> RET=FULL", off).code == 555);
  CHECK(err("MAIL FROM:<a@b.example> BODY=BINARYMIME", off).code == 501);
  CHECK(err("MAIL FROM:<a@b.example> AUTH=<>", off).code == 555);
  CommandOptions nosize;
  nosize.size = false;
  CHECK(err("MAIL FROM:<a@b.example> SIZE=1", nosize).code == 555);
  std::string many = "MAIL FROM:<a@b.example>";
  for (int i = 0; i < 20; ++i) many += " X" + std::to_string(i) + "=1";
  CHECK(err(many).code >= 500);
}

TEST_CASE("XTERN-DELIVERY-ID on MAIL only when offered", "[smtp_command]") {
  CommandOptions o;
  o.lmtp = true;
  o.delivery_id = true;
  CHECK(ok("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=4jbp3w1yRF00D", o).mail.delivery_id == "4jbp3w1yRF00D");
  CHECK(ok("MAIL FROM:<> xtern-delivery-id=abc", o).mail.delivery_id == "abc");
  CHECK(ok("MAIL FROM:<a@b.example>", o).mail.delivery_id.empty());
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=", o).code == 501);
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID", o).code == 501);
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=a/b", o).code == 501);
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=a+2Bb", o).code == 501);
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=" + std::string(65, 'x'), o).code == 501);
  o.delivery_id = false;
  CHECK(err("MAIL FROM:<a@b.example> XTERN-DELIVERY-ID=abc", o).code == 555);
}

TEST_CASE("RCPT TO with DSN parameters", "[smtp_command]") {
  Command c = ok("RCPT TO:<u@x.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40x.example");
  CHECK(c.verb == Verb::kRcpt);
  CHECK(c.rcpt.notify == (kNotifySuccess | kNotifyFailure));
  CHECK(c.rcpt.orcpt_type == "rfc822");
  CHECK(c.rcpt.orcpt == "u@x.example");
  CHECK(ok("RCPT TO:<Postmaster>").path.postmaster);
  CHECK(ok("RCPT TO:<u@x.example> NOTIFY=NEVER").rcpt.notify == kNotifyNever);
  CHECK(ok("RCPT TO:<u@x.example> ORCPT=utf-8;jü@x.example").rcpt.orcpt == "jü@x.example");
  CHECK(err("RCPT TO:<>").enhanced == "5.1.3");
  CHECK(err("RCPT TO:<u@x.example> NOTIFY=NEVER,SUCCESS").code == 501);
  CHECK(err("RCPT TO:<u@x.example> NOTIFY=SOMETIMES").code == 501);
  CHECK(err("RCPT TO:<u@x.example> ORCPT=rfc822").code == 501);
  CHECK(err("RCPT TO:<u@x.example> ORCPT=;x").code == 501);
  CHECK(err("RCPT TO:<u@x.example> SIZE=1").code == 555);
  CHECK(err("RCPT TO:u@x.example").code == 501);
}

TEST_CASE("RCPT keeps relay tricks for the policy layer", "[smtp_command]") {
  Command c = ok("RCPT TO:<user%other.example@x.example>");
  CHECK(c.path.mailbox.has_percent_hack());
  CHECK(err("RCPT TO:<user@other.example@x.example>").code == 501);
}

TEST_CASE("BDAT", "[smtp_command]") {
  Command c = ok("BDAT 1000");
  CHECK(c.bdat_size == 1000u);
  CHECK(!c.bdat_last);
  Command l = ok("BDAT 0 LAST");
  CHECK(l.bdat_size == 0u);
  CHECK(l.bdat_last);
  CHECK(ok("bdat 5 last").bdat_last);
  CHECK(err("BDAT").code == 501);
  CHECK(err("BDAT x").code == 501);
  CHECK(err("BDAT -1").code == 501);
  CHECK(err("BDAT 1 FIRST").code == 501);
  CHECK(err("BDAT 1 LAST x").code == 501);
  CHECK(err("BDAT 123456789012345678901").code == 501);
  CommandOptions nochunk;
  nochunk.chunking = false;
  CHECK(err("BDAT 1", nochunk).code == 502);
}

TEST_CASE("xtext", "[smtp_command]") {
  CHECK(xtext_decode("abc") == std::string("abc"));
  CHECK(xtext_decode("a+2Bb+3D") == std::string("a+b="));
  CHECK(!xtext_decode("a+2b"));
  CHECK(!xtext_decode("a+2"));
  CHECK(!xtext_decode("a+"));
  CHECK(!xtext_decode("a b"));
  CHECK(!xtext_decode("a=b"));
  CHECK(xtext_encode("a+b= c") == "a+2Bb+3D+20c");
  CHECK(xtext_decode(xtext_encode(std::string("\x01\xff+x", 4))) == std::string("\x01\xff+x", 4));
}
