#include "mra/pop3_parser.h"

#include <catch2/catch.hpp>

using namespace tern::mra::pop3;

namespace {

Command ok(std::string_view line) {
  ParseResult r = parse_command(line);
  if (auto* e = std::get_if<ParseError>(&r)) FAIL(line << " -> " << e->message);
  return std::get<Command>(r);
}

std::string err(std::string_view line) {
  ParseResult r = parse_command(line);
  if (std::holds_alternative<Command>(r)) FAIL(line << " parsed but should not");
  return std::get<ParseError>(r).message;
}

}  // namespace

TEST_CASE("POP3 commands parse (RFC 1939, 2449, 5034, 2595)", "[pop3][parser]") {
  CHECK(ok("USER bob").arg == "bob");
  CHECK(ok("user bob").verb == Verb::kUser);
  CHECK(ok("PASS my secret pass").arg == "my secret pass");  // the rest of the line
  CHECK(ok("PASS  leading").arg == " leading");
  Command a = ok("AUTH plain AGJvYgBzZWNyZXQ=");
  CHECK(a.verb == Verb::kAuth);
  CHECK(a.arg == "PLAIN");
  CHECK(a.initial_response == "AGJvYgBzZWNyZXQ=");
  CHECK(ok("AUTH").arg.empty());
  CHECK(ok("AUTH LOGIN").initial_response == std::nullopt);
  CHECK(ok("STLS").verb == Verb::kStls);
  CHECK(ok("CAPA").verb == Verb::kCapa);
  CHECK(ok("QUIT").verb == Verb::kQuit);
  CHECK(ok("STAT").verb == Verb::kStat);
  CHECK(ok("NOOP").verb == Verb::kNoop);
  CHECK(ok("RSET").verb == Verb::kRset);
  CHECK_FALSE(ok("LIST").msg);
  CHECK(ok("LIST 3").msg == 3u);
  CHECK(ok("UIDL 4294967295").msg == 4294967295u);
  CHECK(ok("RETR 1").verb == Verb::kRetr);
  CHECK(ok("DELE 2").msg == 2u);
  Command t = ok("TOP 1 0");
  CHECK(t.msg == 1u);
  CHECK(t.lines == 0);
  CHECK(ok("TOP 2 10").lines == 10);
}

TEST_CASE("POP3 bad commands", "[pop3][parser]") {
  CHECK(err("") == "Unknown command.");
  CHECK(err("FROB") == "Unknown command.");
  CHECK(err("RETR") == "Missing message number.");
  CHECK(err("RETR 0") == "Invalid message number.");
  CHECK(err("RETR -1") == "Invalid message number.");
  CHECK(err("RETR 4294967296") == "Invalid message number.");
  CHECK(err("RETR 1 2") == "Too many arguments.");
  CHECK(err("DELE x") == "Invalid message number.");
  CHECK(err("TOP 1") == "TOP needs a message number and a line count.");
  CHECK(err("TOP 1 x") == "Invalid arguments.");
  CHECK(err("STAT 1") == "Too many arguments.");
  CHECK(err("USER") == "USER needs one argument.");
  CHECK(err("USER a b") == "USER needs one argument.");
  CHECK(err("PASS") == "PASS needs an argument.");
  CHECK(err("AUTH PLAIN a b") == "Too many arguments.");
  CHECK(err(std::string("USER a\0b", 8)) == "Invalid characters in command.");
  CHECK(err("USER " + std::string(300, 'x')) == "Line too long.");
  CHECK(err("GET / HTTP/1.1") == "Unknown command.");
}
