#include <catch2/catch.hpp>

#include "common/auth_protocol.h"
#include "common/line_reader.h"

namespace ap = tern::common::auth_protocol;

TEST_CASE("tab escaping round-trips every special byte") {
  std::string s = std::string("a\tb\nc\rd\001e", 9);
  std::string e = ap::tab_escape(s);
  CHECK(e.find('\t') == std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  REQUIRE(ap::tab_unescape(e));
  CHECK(*ap::tab_unescape(e) == s);
  CHECK_FALSE(ap::tab_unescape("bad\001x"));
  CHECK_FALSE(ap::tab_unescape("trailing\001"));
}

TEST_CASE("parse_line splits fields and rejects bad lines") {
  auto p = ap::parse_line("AUTH\t1\tPLAIN\tservice=smtp\r");
  REQUIRE(p.ok);
  CHECK(p.line.command == "AUTH");
  REQUIRE(p.line.args.size() == 3);
  CHECK(p.line.args[2] == "service=smtp");
  CHECK(ap::parse_line("").error == ap::LineError::kEmpty);
  CHECK(ap::parse_line("\tx").error == ap::LineError::kEmpty);
  CHECK(ap::parse_line(std::string("AU\0TH", 5)).error == ap::LineError::kNul);
  CHECK(ap::parse_line("X\tbad\001z").error == ap::LineError::kBadEscape);
  std::string many = "X";
  for (int i = 0; i < 100; ++i) many += "\ta";
  CHECK(ap::parse_line(many).error == ap::LineError::kTooManyArgs);
  // Empty fields are kept (Dovecot sends "CONT\t1\t" for an empty challenge).
  auto e = ap::parse_line("CONT\t1\t");
  REQUIRE(e.ok);
  REQUIRE(e.line.args.size() == 2);
  CHECK(e.line.args[1].empty());
}

TEST_CASE("make_line escapes and terminates") {
  CHECK(ap::make_line({"OK", "1", "user=a\tb"}) == "OK\t1\tuser=a\001tb\n");
  CHECK(ap::make_line(std::vector<std::string>{"DONE"}) == "DONE\n");
}

TEST_CASE("request ids") {
  CHECK(ap::parse_request_id("1") == 1u);
  CHECK(ap::parse_request_id("4294967295") == 4294967295u);
  CHECK_FALSE(ap::parse_request_id("0"));
  CHECK_FALSE(ap::parse_request_id("4294967296"));
  CHECK_FALSE(ap::parse_request_id("-1"));
  CHECK_FALSE(ap::parse_request_id("1x"));
  CHECK_FALSE(ap::parse_request_id(""));
  CHECK_FALSE(ap::parse_request_id("99999999999999999999"));
}

TEST_CASE("AUTH parsing: the good and the bad") {
  auto parse = [](const std::string& l) { return ap::parse_auth(ap::parse_line(l).line); };
  auto ok = parse("AUTH\t7\tplain\tservice=smtp\tsecured\tlip=127.0.0.1\trip=192.0.2.7\tlport=25\trport=4000\tresp=AGRlbW8AcGFzcw==");
  REQUIRE(ok.error == ap::AuthParseError::kNone);
  CHECK(ok.cmd.id == 7);
  CHECK(ok.cmd.mech == "PLAIN");
  CHECK(ok.cmd.service == "smtp");
  CHECK(ok.cmd.secured);
  CHECK(ok.cmd.rip == "192.0.2.7");
  CHECK(ok.cmd.has_initial_response);
  CHECK(ok.cmd.initial_response == std::string("\0demo\0pass", 10));
  CHECK(parse("AUTH\t1\tPLAIN\tservice=imap\tresp=").cmd.has_initial_response);
  CHECK(parse("AUTH\t1\tPLAIN\tservice=imap\tresp=").cmd.initial_response.empty());
  CHECK(parse("AUTH\t1\tPLAIN\tservice=imap\tresp==").cmd.initial_response.empty());
  CHECK_FALSE(parse("AUTH\t1\tPLAIN\tservice=imap").cmd.has_initial_response);
  CHECK(parse("AUTH\t1\tPLAIN\tservice=imap\tnologin\tfinal-resp-ok").error == ap::AuthParseError::kNone);
  CHECK(parse("AUTH\t1").error == ap::AuthParseError::kMissingArgs);
  CHECK(parse("AUTH\tx\tPLAIN\tservice=smtp").error == ap::AuthParseError::kBadId);
  CHECK(parse("AUTH\t0\tPLAIN\tservice=smtp").error == ap::AuthParseError::kBadId);
  CHECK(parse("AUTH\t1\tPL AIN\tservice=smtp").error == ap::AuthParseError::kBadMech);
  CHECK(parse("AUTH\t1\tAVERYLONGMECHANISMNAMEOVER20\tservice=smtp").error == ap::AuthParseError::kBadMech);
  CHECK(parse("AUTH\t1\tPLAIN").error == ap::AuthParseError::kNoService);
  CHECK(parse("AUTH\t1\tPLAIN\tservice=smtp\tresp=!!!").error == ap::AuthParseError::kBadBase64);
  std::string big((ap::kMaxSaslMessage / 3 + 2) * 4, 'A');  // decodes to more than the limit
  CHECK(parse("AUTH\t1\tPLAIN\tservice=smtp\tresp=" + big).error == ap::AuthParseError::kTooLong);
}

TEST_CASE("CONT parsing") {
  auto parse = [](const std::string& l) { return ap::parse_cont(ap::parse_line(l).line); };
  auto c = parse("CONT\t3\tZGVtbw==");
  REQUIRE(c.ok);
  CHECK(c.id == 3);
  CHECK(c.response == "demo");
  CHECK(parse("CONT\t3").ok);
  CHECK(parse("CONT\t3").response.empty());
  CHECK_FALSE(parse("CONT").ok);
  CHECK_FALSE(parse("CONT\tz\tZGVtbw==").ok);
  CHECK_FALSE(parse("CONT\t3\t%%%").ok);
}

TEST_CASE("user names") {
  CHECK(ap::valid_user_name("demo@example.test"));
  CHECK(ap::valid_user_name("jöhn@example.test"));
  CHECK_FALSE(ap::valid_user_name(""));
  CHECK_FALSE(ap::valid_user_name("a b"));
  CHECK_FALSE(ap::valid_user_name("a\tb"));
  CHECK_FALSE(ap::valid_user_name("../etc"));
  CHECK_FALSE(ap::valid_user_name(std::string(ap::kMaxUserName + 1, 'a')));
  CHECK_FALSE(ap::valid_user_name(std::string("a\0b", 3)));
}

TEST_CASE("a pipelined auth-client stream fed one byte at a time yields the same lines") {
  const std::string stream =
      "VERSION\t1\t2\nCPID\t42\nAUTH\t1\tPLAIN\tservice=smtp\tresp=AGRlbW8AcGFzcw==\nCONT\t1\t\nAUTH\t2\tLOGIN\tservice=imap\n";
  tern::common::LineReader whole(ap::kMaxLineLength), bytes(ap::kMaxLineLength);
  std::vector<std::string> a, b;
  tern::common::LineReader::Line l;
  whole.feed(stream);
  while (whole.next(l) == tern::common::LineReader::Status::kLine) a.emplace_back(l.text);
  for (char c : stream) {
    bytes.feed(std::string_view(&c, 1));
    while (bytes.next(l) == tern::common::LineReader::Status::kLine) b.emplace_back(l.text);
  }
  CHECK(a == b);
  REQUIRE(a.size() == 5);
  for (const auto& s : a) CHECK(ap::parse_line(s).ok);
}
