// line_reader.h: lines under a length limit, fed whole and one byte at a time; CRLF
// versus bare LF; bare CR and NUL kept; overlong lines; raw bytes between lines;
// clear() dropping pipelined input (the STARTTLS command injection case).
#include "common/line_reader.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using tern::common::LineReader;
using namespace std::string_literals;

namespace {

// One event out of the reader: a line with its ending, or "TOOLONG".
struct Event {
  std::string text;
  bool crlf = false;
  bool too_long = false;
  bool operator==(const Event& o) const { return text == o.text && crlf == o.crlf && too_long == o.too_long; }
};

std::ostream& operator<<(std::ostream& os, const Event& e) {
  if (e.too_long) return os << "<too long>";
  return os << '"' << e.text << '"' << (e.crlf ? " CRLF" : " LF");
}

Event crlf(std::string t) { return Event{std::move(t), true, false}; }
Event lf(std::string t) { return Event{std::move(t), false, false}; }
Event too_long() { return Event{"", false, true}; }

void drain(LineReader& r, std::vector<Event>& out) {
  for (;;) {
    LineReader::Line line;
    LineReader::Status s = r.next(line);
    if (s == LineReader::Status::kNeedMore) return;
    if (s == LineReader::Status::kTooLong) {
      out.push_back(too_long());
      continue;
    }
    out.push_back(Event{std::string(line.text), line.ending == LineReader::Ending::kCrLf, false});
  }
}

// Feeds `input` in pieces of `chunk` bytes (0: all at once), draining after each.
std::vector<Event> run(size_t max_line, const std::string& input, size_t chunk) {
  LineReader r(max_line);
  std::vector<Event> out;
  if (chunk == 0) chunk = input.size() ? input.size() : 1;
  for (size_t i = 0; i < input.size(); i += chunk) {
    r.feed(std::string_view(input).substr(i, chunk));
    drain(r, out);
  }
  return out;
}

}  // namespace

TEST_CASE("lines are the same fed whole, in pieces, or one byte at a time", "[line_reader]") {
  struct Case {
    const char* name;
    size_t max;
    std::string input;
    std::vector<Event> want;
  };
  const std::string at_limit(16, 'x');
  const Case cases[] = {
      {"empty input", 16, "", {}},
      {"one CRLF line", 16, "EHLO a\r\n", {crlf("EHLO a")}},
      {"bare LF", 16, "EHLO a\n", {lf("EHLO a")}},
      {"empty lines", 16, "\r\n\n", {crlf(""), lf("")}},
      {"mixed endings", 16, "a\r\nb\nc\r\n", {crlf("a"), lf("b"), crlf("c")}},
      {"no terminator yet", 16, "partial", {}},
      {"bare CR is kept in the text", 16, "a\rb\r\n", {crlf("a\rb")}},
      {"CR CR LF", 16, "a\r\r\n", {crlf("a\r")}},
      {"lone CR at the end stays buffered", 16, "a\r", {}},
      {"NUL is kept in the text", 16, "a\0b\r\n"s, {crlf("a\0b"s)}},
      {"exactly at the limit, CRLF", 16, at_limit + "\r\n", {crlf(at_limit)}},
      {"exactly at the limit, LF", 16, at_limit + "\n", {lf(at_limit)}},
      {"one over the limit, CRLF", 16, at_limit + "y\r\nnext\r\n", {too_long(), crlf("next")}},
      {"one over the limit, LF", 16, at_limit + "y\nnext\n", {too_long(), lf("next")}},
      {"far over the limit", 16, std::string(1000, 'z') + "\r\nnext\r\n", {too_long(), crlf("next")}},
      {"overlong line reported once, then the next line", 4, "123456789\r\nab\r\n",
       {too_long(), crlf("ab")}},
      {"line at limit after an overlong one", 4, "xxxxxxxxxx\n1234\r\n", {too_long(), crlf("1234")}},
      {"8-bit bytes", 16, "caf\xc3\xa9\r\n", {crlf("caf\xc3\xa9")}},
  };
  for (const Case& c : cases) {
    for (size_t chunk : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{7}}) {
      CAPTURE(c.name, chunk);
      CHECK(run(c.max, c.input, chunk) == c.want);
    }
  }
}

TEST_CASE("an overlong line without a terminator is reported as soon as it is too long", "[line_reader]") {
  LineReader r(8);
  std::vector<Event> out;
  r.feed("123456789");  // 9 bytes: could still be 8 bytes + CR
  drain(r, out);
  CHECK(out.empty());
  r.feed("\r");  // 8 + "9\r": now certainly too long
  drain(r, out);
  CHECK(out == std::vector<Event>{too_long()});
  CHECK(r.buffered() == 0);
  r.feed("still the same line\r\nEHLO\r\n");
  drain(r, out);
  CHECK(out == std::vector<Event>{too_long(), crlf("EHLO")});
}

TEST_CASE("a 10 MB line is never buffered beyond the limit", "[line_reader]") {
  const size_t max = 1000;
  LineReader r(max);
  std::vector<Event> out;
  size_t peak_after_drain = 0;
  const std::string chunk(64 << 10, 'A');  // what Connection hands over per read
  for (size_t sent = 0; sent < (10u << 20); sent += chunk.size()) {
    r.feed(chunk);
    // A feed() keeps what it is given (the caller holds it already); next() drops
    // the overlong line at once, and from then on feed() stores nothing of it.
    CHECK(r.buffered() <= max + 1 + chunk.size());
    drain(r, out);
    peak_after_drain = std::max(peak_after_drain, r.buffered());
  }
  CHECK(peak_after_drain <= max + 1);
  CHECK(r.buffered() == 0);
  r.feed("tail of the long line\r\nQUIT\r\n");
  drain(r, out);
  CHECK(out == std::vector<Event>{too_long(), crlf("QUIT")});
}

TEST_CASE("one byte at a time, a long line never buffers more than the limit", "[line_reader]") {
  const size_t max = 64;
  LineReader r(max);
  std::vector<Event> out;
  for (int i = 0; i < 10000; ++i) {
    r.feed("B");
    drain(r, out);
    REQUIRE(r.buffered() <= max + 1);
  }
  r.feed("\nok\n");
  drain(r, out);
  CHECK(out == std::vector<Event>{too_long(), lf("ok")});
}

TEST_CASE("many short pipelined lines in one feed", "[line_reader]") {
  std::string in;
  for (int i = 0; i < 5000; ++i) in += "RCPT TO:<u" + std::to_string(i) + "@example.test>\r\n";
  std::vector<Event> out = run(512, in, 0);
  REQUIRE(out.size() == 5000);
  CHECK(out[4999] == crlf("RCPT TO:<u4999@example.test>"));
  // And across odd-sized reads, with compaction of consumed bytes in between.
  CHECK(run(512, in, 4093) == out);
}

TEST_CASE("take_raw mixes counted bytes with lines", "[line_reader]") {
  SECTION("literal fully buffered, lines around it") {
    LineReader r(100);
    r.feed("A APPEND INBOX {11}\r\nhello\r\nworld\r\nB NOOP\r\n");
    LineReader::Line line;
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "A APPEND INBOX {11}");
    CHECK(r.take_raw(11) == "hello\r\nworl");
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "d");
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "B NOOP");
    CHECK(r.next(line) == LineReader::Status::kNeedMore);
  }
  SECTION("literal arriving in pieces, longer than a line may be") {
    LineReader r(16);
    r.feed("BDAT 100 LAST\r\n");
    LineReader::Line line;
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "BDAT 100 LAST");
    std::string body;
    const std::string payload = std::string(99, 'x') + "\n";  // no line structure to speak of
    for (char c : payload + "QUIT\r\n") {
      r.feed(std::string_view(&c, 1));
      if (body.size() < 100) body += r.take_raw(100 - body.size());
    }
    CHECK(body == payload);
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "QUIT");
  }
  SECTION("take_raw of more than is buffered returns what there is") {
    LineReader r(16);
    r.feed("abc");
    CHECK(r.take_raw(10) == "abc");
    CHECK(r.buffered() == 0);
    CHECK(r.take_raw(10).empty());
  }
  SECTION("a partial line scanned before take_raw is rescanned after") {
    LineReader r(16);
    r.feed("xyz");
    LineReader::Line line;
    CHECK(r.next(line) == LineReader::Status::kNeedMore);
    CHECK(r.take_raw(1) == "x");
    r.feed("\r\n");
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(line.text == "yz");
  }
  SECTION("peek shows buffered bytes without consuming them") {
    LineReader r(16);
    r.feed("ab\r\ncd");
    CHECK(r.peek() == "ab\r\ncd");
    LineReader::Line line;
    REQUIRE(r.next(line) == LineReader::Status::kLine);
    CHECK(r.peek() == "cd");
    CHECK(r.buffered() == 2);
  }
}

TEST_CASE("clear() drops input pipelined before STARTTLS", "[line_reader][starttls]") {
  // CVE-2011-0411: a client sends STARTTLS and a command in one packet; the command
  // must not be executed after the handshake as if it had come over TLS.
  const std::string packet = "EHLO client\r\nSTARTTLS\r\nRCPT TO:<injected@example.test>\r\n";
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{5}}) {
    CAPTURE(chunk);
    LineReader r(512);
    std::vector<std::string> executed;
    bool tls = false;
    for (size_t i = 0; i < packet.size(); i += chunk ? chunk : packet.size()) {
      if (tls) break;  // later bytes would go through the TLS filter, not this reader
      r.feed(std::string_view(packet).substr(i, chunk ? chunk : packet.size()));
      LineReader::Line line;
      while (!tls && r.next(line) == LineReader::Status::kLine) {
        executed.emplace_back(line.text);
        if (line.text == "STARTTLS") {
          r.clear();
          tls = true;
        }
      }
    }
    // After the handshake, what the client sends under TLS is read afresh.
    r.feed("EHLO client\r\n");
    LineReader::Line line;
    while (r.next(line) == LineReader::Status::kLine) executed.emplace_back(line.text);
    CHECK(executed == std::vector<std::string>{"EHLO client", "STARTTLS", "EHLO client"});
  }
}

TEST_CASE("clear() also ends discarding an overlong line", "[line_reader]") {
  LineReader r(4);
  LineReader::Line line;
  r.feed("toolongline");
  CHECK(r.next(line) == LineReader::Status::kTooLong);
  r.clear();
  r.feed("ok\r\n");
  REQUIRE(r.next(line) == LineReader::Status::kLine);
  CHECK(line.text == "ok");
}

TEST_CASE("set_max_line changes the limit for later lines", "[line_reader]") {
  LineReader r(4);
  LineReader::Line line;
  r.feed("12345\r\n");
  CHECK(r.next(line) == LineReader::Status::kTooLong);
  r.set_max_line(8);
  CHECK(r.max_line() == 8);
  r.feed("12345\r\n");
  REQUIRE(r.next(line) == LineReader::Status::kLine);
  CHECK(line.text == "12345");
}
