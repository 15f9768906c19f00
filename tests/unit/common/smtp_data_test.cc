// DataReader, BdatReader, LineEndings, dot_stuff: the end-of-data rule, smuggling
// variants, unstuffing, and byte-at-a-time feeding.
#include <catch2/catch.hpp>

#include <string>

#include "common/smtp_data.h"

using tern::common::smtp::BdatReader;
using tern::common::smtp::DataReader;
using tern::common::smtp::dot_stuff;
using tern::common::smtp::LineEndings;

namespace {

struct Out {
  std::string body;
  size_t consumed = 0;
  bool done = false;
  bool bare_lf = false;
  bool bare_cr = false;
};

Out run_whole(const std::string& in) {
  DataReader r;
  Out o;
  DataReader::Feed f = r.feed(in, o.body);
  o.consumed = f.consumed;
  o.done = f.done;
  o.bare_lf = r.bare_lf();
  o.bare_cr = r.bare_cr();
  return o;
}

Out run_bytes(const std::string& in) {
  DataReader r;
  Out o;
  for (size_t i = 0; i < in.size(); ++i) {
    DataReader::Feed f = r.feed(std::string_view(in).substr(i, 1), o.body);
    o.consumed += f.consumed;
    if (f.done) {
      o.done = true;
      break;
    }
    REQUIRE(f.consumed == 1);
  }
  o.bare_lf = r.bare_lf();
  o.bare_cr = r.bare_cr();
  return o;
}

}  // namespace

TEST_CASE("DATA ends only at CRLF.CRLF and unstuffs dots", "[smtp_data]") {
  struct Case {
    std::string in;
    bool done;
    std::string body;
    size_t consumed;  // when done
    bool bare_lf, bare_cr;
  };
  const Case cases[] = {
      {".\r\n", true, "", 3, false, false},
      {"a\r\n.\r\n", true, "a\r\n", 6, false, false},
      {"a\r\n.\r\nMAIL FROM:<x>\r\n", true, "a\r\n", 6, false, false},
      {"..x\r\n.\r\n", true, ".x\r\n", 8, false, false},
      {"a\r\n..\r\n.\r\n", true, "a\r\n.\r\n", 10, false, false},
      {"a\r\n...\r\n.\r\n", true, "a\r\n..\r\n", 11, false, false},
      {"\r\n\r\n.\r\n", true, "\r\n\r\n", 7, false, false},
      {"a.\r\n.\r\n", true, "a.\r\n", 7, false, false},
      {"abc", false, "abc", 0, false, false},
      {"abc\r\n.", false, "abc\r\n", 0, false, false},
      {"abc\r\n.\r", false, "abc\r\n", 0, false, false},
      {std::string("\xff\x00\xfe\r\n.\r\n", 8), true, std::string("\xff\x00\xfe\r\n", 5), 8, false, false},
  };
  for (const Case& c : cases) {
    for (auto run : {run_whole, run_bytes}) {
      Out o = run(c.in);
      INFO("input: " << c.in);
      CHECK(o.done == c.done);
      CHECK(o.body == c.body);
      if (c.done) CHECK(o.consumed == c.consumed);
      CHECK(o.bare_lf == c.bare_lf);
      CHECK(o.bare_cr == c.bare_cr);
    }
  }
}

TEST_CASE("SMTP smuggling variants never end DATA", "[smtp_data]") {
  // Each would end DATA early on a lenient receiver; here they are body content, the
  // message continues to the real CRLF.CRLF, and the bare CR/LF is flagged.
  struct Case {
    std::string marker;
    bool lf, cr;
  };
  const Case cases[] = {
      {"\n.\n", true, false},   {"\n.\r\n", true, false}, {"\r.\r", false, true},
      {"\r\n.\r", false, true}, {"\r.\r\n", false, true}, {"\r\n.\n", true, false},
      {"\n.\r", true, true},    {"\r.\n", true, true},    {std::string("\r\n\0.\r\n", 6), false, false},
  };
  for (const Case& c : cases) {
    std::string in = "Subject: x\r\n\r\nfirst" + c.marker +
                     "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\n";
    for (auto run : {run_whole, run_bytes}) {
      Out o = run(in);
      INFO("marker: " << c.marker.size() << " bytes");
      REQUIRE(o.done);
      CHECK(o.consumed == in.size());  // the whole thing is one message
      CHECK(o.body.find("MAIL FROM:<evil@x>") != std::string::npos);
      CHECK(o.bare_lf == c.lf);
      CHECK(o.bare_cr == c.cr);
    }
  }
}

TEST_CASE("DATA reports size, line length, NUL and 8-bit", "[smtp_data]") {
  std::string line(1500, 'x');
  DataReader r2;
  std::string out2;
  std::string in = "a\r\n" + line + "\r\n" + std::string("n\0\x80\r\n", 5) + ".\r\n";
  auto f2 = r2.feed(in, out2);
  CHECK(f2.done);
  CHECK(r2.longest_line() == 1500);
  CHECK(r2.nul());
  CHECK(r2.eight_bit());
  CHECK(r2.size() == out2.size());
  CHECK(out2.size() == 3 + 1502 + 5);
}

TEST_CASE("DATA feed after done consumes nothing", "[smtp_data]") {
  DataReader r;
  std::string out;
  CHECK(r.feed(".\r\n", out).done);
  auto f = r.feed("QUIT\r\n", out);
  CHECK(f.consumed == 0);
  CHECK(f.done);
  CHECK(out.empty());
}

TEST_CASE("BDAT chunk reader takes exactly the chunk", "[smtp_data]") {
  BdatReader b(5);
  std::string_view in = "abc";
  CHECK(b.take(in) == "abc");
  CHECK(in.empty());
  CHECK(!b.done());
  std::string_view in2 = "de\r\nBDAT 0 LAST\r\n";
  CHECK(b.take(in2) == "de");
  CHECK(b.done());
  CHECK(in2 == "\r\nBDAT 0 LAST\r\n");
  BdatReader z(0);
  CHECK(z.done());
}

TEST_CASE("LineEndings finds bare CR and LF across pieces", "[smtp_data]") {
  LineEndings a;
  a.feed("x\r");
  a.feed("\ny");
  a.finish();
  CHECK(!a.bare_cr());
  CHECK(!a.bare_lf());
  LineEndings b;
  b.feed("x\r");
  b.finish();
  CHECK(b.bare_cr());
  LineEndings c;
  c.feed("x\ny");
  CHECK(c.bare_lf());
  LineEndings d;
  d.feed("x\r");
  d.feed("y");
  CHECK(d.bare_cr());
}

TEST_CASE("LineEndNormalizer makes every line end CRLF, whatever the split", "[smtp_data]") {
  // RFC 5321 2.3.8: a bare CR or a bare LF is sent only as the CRLF it stands for.
  struct Case {
    std::string in, out;
  } cases[] = {
      {"", ""},
      {"a\r\nb", "a\r\nb"},
      {"a\nb\n", "a\r\nb\r\n"},
      {"a\rb", "a\r\nb"},
      {"a\r", "a\r\n"},
      {"\r\r\n", "\r\n\r\n"},
      {"\n\r", "\r\n\r\n"},
      {"x\r.\r\nMAIL FROM:<e@x>\r", "x\r\n.\r\nMAIL FROM:<e@x>\r\n"},
      {std::string("nul\0stays", 9), std::string("nul\0stays", 9)},
  };
  for (const Case& c : cases) {
    INFO(c.in);
    CHECK(tern::common::smtp::normalize_line_ends(c.in) == c.out);
    std::string out;
    tern::common::smtp::LineEndNormalizer n;
    for (char ch : c.in) n.feed(std::string_view(&ch, 1), out);
    n.finish(out);
    CHECK(out == c.out);
  }
}

TEST_CASE("dot_stuff round-trips through DataReader", "[smtp_data]") {
  const std::string bodies[] = {"", "a\r\n", ".\r\n", "..\r\n.x\r\n", "no newline", "a\r\n.\r\nb\r\n"};
  for (const std::string& b : bodies) {
    std::string wire = dot_stuff(b);
    DataReader r;
    std::string out;
    auto f = r.feed(wire, out);
    CHECK(f.done);
    CHECK(f.consumed == wire.size());
    std::string expect = b;
    if (!b.empty() && b.substr(b.size() >= 2 ? b.size() - 2 : 0) != "\r\n") expect += "\r\n";
    CHECK(out == expect);
  }
}
