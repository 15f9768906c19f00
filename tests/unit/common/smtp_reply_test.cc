// Reply formatting (RFC 2034 enhanced codes on every line) and the client-side
// multi-line reply parser.
#include <catch2/catch.hpp>

#include <string>

#include "common/smtp_reply.h"

using namespace tern::common::smtp;

TEST_CASE("reply format", "[smtp_reply]") {
  CHECK(Reply(250, "2.0.0", "Ok").format() == "250 2.0.0 Ok\r\n");
  CHECK(Reply(220, "", "host ESMTP").format() == "220 host ESMTP\r\n");
  CHECK(Reply(250, "", std::vector<std::string>{"host", "PIPELINING", "SIZE 100"}).format() ==
        "250-host\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
  CHECK(Reply(550, "5.1.1", std::vector<std::string>{"a", "b"}).format() == "550-5.1.1 a\r\n550 5.1.1 b\r\n");
  // Peer-supplied text cannot inject a line.
  CHECK(Reply(250, "2.1.0", "x\r\n250 fake").format() == "250 2.1.0 x  250 fake\r\n");
  CHECK(Reply(250, "2.0.0", "Ok").summary() == "250 2.0.0 Ok");
}

TEST_CASE("valid_enhanced", "[smtp_reply]") {
  CHECK(valid_enhanced("2.0.0", 250));
  CHECK(valid_enhanced("5.1.10", 550));
  CHECK(valid_enhanced("4.7.123", 0));
  CHECK(!valid_enhanced("5.1.1", 250));
  CHECK(!valid_enhanced("3.0.0", 354));
  CHECK(!valid_enhanced("2.0", 250));
  CHECK(!valid_enhanced("2..0", 250));
  CHECK(!valid_enhanced("2.0.1234", 250));
  CHECK(!valid_enhanced("22.0.0", 250));
  CHECK(!valid_enhanced("2.x.0", 250));
}

TEST_CASE("reply parser: single and multi-line", "[smtp_reply]") {
  ReplyParser p;
  CHECK(p.feed("250 2.1.0 Ok") == ReplyParser::Status::kComplete);
  Reply r = p.take();
  CHECK(r.code == 250);
  CHECK(r.enhanced == "2.1.0");
  CHECK(r.lines == std::vector<std::string>{"Ok"});

  CHECK(p.feed("250-mx.example") == ReplyParser::Status::kNeedMore);
  CHECK(p.feed("250-PIPELINING") == ReplyParser::Status::kNeedMore);
  CHECK(p.feed("250 CHUNKING") == ReplyParser::Status::kComplete);
  r = p.take();
  CHECK(r.lines.size() == 3);
  CHECK(r.enhanced.empty());

  CHECK(p.feed("354") == ReplyParser::Status::kComplete);
  CHECK(p.take().code == 354);
  CHECK(p.feed("354 End data with <CR><LF>.<CR><LF>") == ReplyParser::Status::kComplete);
  CHECK(p.take().enhanced.empty());

  ReplyParser plain(false);
  CHECK(plain.feed("550 5.1.1 no") == ReplyParser::Status::kComplete);
  CHECK(plain.take().lines[0] == "5.1.1 no");
}

TEST_CASE("reply parser: bad input", "[smtp_reply]") {
  const std::string bad[] = {"", "25", "abc ok", "250x", "199 too low", "600 too high", "2500 x", "-250 x"};
  for (const std::string& b : bad) {
    ReplyParser p;
    INFO(b);
    CHECK(p.feed(b) == ReplyParser::Status::kError);
  }
  ReplyParser mixed;
  CHECK(mixed.feed("250-a") == ReplyParser::Status::kNeedMore);
  CHECK(mixed.feed("550 b") == ReplyParser::Status::kError);
  // After an error the parser starts fresh.
  CHECK(mixed.feed("221 bye") == ReplyParser::Status::kComplete);

  ReplyParser endless;
  ReplyParser::Status s = ReplyParser::Status::kNeedMore;
  size_t n = 0;
  while (s == ReplyParser::Status::kNeedMore && n < 10000) {
    s = endless.feed("250-more");
    ++n;
  }
  CHECK(s == ReplyParser::Status::kError);
  CHECK(n <= ReplyParser::kMaxLines + 1);
}
