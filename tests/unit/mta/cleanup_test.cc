// The streaming header filter: Received in front, Message-ID and Date added when
// missing, header_size_limit, and the same output however the input is split.
#include "mta/cleanup.h"

#include <catch2/catch.hpp>

using namespace tern;
using mta::HeaderFilter;

namespace {

HeaderFilter::Options opts(bool add) {
  HeaderFilter::Options o;
  o.prepend = "Received: by test\r\n";
  o.add_message_id = add;
  o.add_date = add;
  o.message_id = "<id@test>";
  o.now = 0;
  o.header_size_limit = 200;
  return o;
}

std::string run(const std::string& in, bool add, size_t piece = 0, HeaderFilter* out_filter = nullptr) {
  HeaderFilter f(opts(add));
  std::string out;
  if (piece == 0) {
    f.feed(in, out);
  } else {
    for (size_t i = 0; i < in.size(); i += piece) f.feed(in.substr(i, piece), out);
  }
  f.finish(out);
  if (out_filter) *out_filter = f;
  return out;
}

}  // namespace

TEST_CASE("Received goes first; present headers are kept") {
  std::string in = "Subject: x\r\nMessage-ID: <abc@x>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n";
  CHECK(run(in, true) == "Received: by test\r\n" + in);
  HeaderFilter f(opts(true));
  std::string out;
  f.feed(in, out);
  f.finish(out);
  CHECK(f.message_id() == "<abc@x>");
}

TEST_CASE("missing Message-ID and Date are added at the end of the headers") {
  std::string out = run("Subject: x\r\n\r\nbody\r\n", true);
  CHECK(out.rfind("Received: by test\r\nSubject: x\r\nDate: ", 0) == 0);
  CHECK(out.find("\r\nMessage-Id: <id@test>\r\n\r\nbody\r\n") != std::string::npos);
  // Not for MX mail (add = false).
  CHECK(run("Subject: x\r\n\r\nbody\r\n", false) == "Received: by test\r\nSubject: x\r\n\r\nbody\r\n");
}

TEST_CASE("messages without a body, without headers, or with a folded Message-ID") {
  CHECK(run("Subject: only\r\n", false) == "Received: by test\r\nSubject: only\r\n");
  std::string no_hdr = run("just a body line\r\nmore\r\n", true);
  // As Postfix's cleanup: one blank line between the headers and a body that
  // started without one, so "just a body line" is not read as a header.
  CHECK(no_hdr.find("Message-Id: <id@test>\r\n\r\njust a body line\r\nmore\r\n") != std::string::npos);
  CHECK(run("Subject: s\r\nnot a header\r\n", false) == "Received: by test\r\nSubject: s\r\n\r\nnot a header\r\n");
  CHECK(run(" continued nothing\r\n", false) == "Received: by test\r\n\r\n continued nothing\r\n");
  // ... also when the message ends in that line (no line end).
  CHECK(run("Subject: s\r\nhi there", false) == "Received: by test\r\nSubject: s\r\n\r\nhi there");
  HeaderFilter f(opts(true));
  std::string out;
  f.feed("Message-ID:\r\n <folded@x>\r\n\r\nb\r\n", out);
  f.finish(out);
  CHECK(f.message_id() == "<folded@x>");
  CHECK(out.find("Message-Id: <id@test>") == std::string::npos);
}

TEST_CASE("headers beyond header_size_limit become body") {
  std::string in;
  for (int i = 0; i < 20; ++i) in += "X-H" + std::to_string(i) + ": 0123456789\r\n";
  in += "\r\nbody\r\n";
  std::string out = run(in, true);
  // Everything arrives, in order; the added headers come where the limit cut.
  CHECK(out.find("X-H19: 0123456789\r\n\r\nbody\r\n") != std::string::npos);
  CHECK(out.find("Message-Id: <id@test>\r\n\r\nX-H") != std::string::npos);
}

TEST_CASE("the same output for any split of the input") {
  std::string in = "From: a@b\r\nSubject: split\r\n\tcontinued\r\nX: y\r\n\r\nline 1\r\n.line 2\r\n";
  const std::string whole = run(in, true);
  for (size_t piece : {1, 2, 3, 7, 16}) {
    INFO(piece);
    CHECK(run(in, true, piece) == whole);
  }
}

TEST_CASE("a header section exactly header_size_limit long, then the blank line, split anywhere") {
  // The blank line that ends the headers is not header bytes: a lone CR (the
  // first half of it) must not count against the limit, or a client sending one
  // byte per segment got an extra blank line stored that a client sending the
  // message whole did not (found by the smtpd_cleanup fuzz target).
  HeaderFilter::Options o = opts(false);
  o.header_size_limit = 64;
  std::string line = "X-Pad: " + std::string(64 - 9, 'p') + "\r\n";
  REQUIRE(line.size() == 64);
  const std::string in = line + "\r\nbody\r\n";
  auto feed = [&](size_t piece) {
    HeaderFilter f(o);
    std::string out;
    for (size_t i = 0; i < in.size(); i += piece) f.feed(std::string_view(in).substr(i, piece), out);
    f.finish(out);
    CHECK(out.size() == in.size() + f.added_bytes());
    return out;
  };
  const std::string whole = feed(in.size());
  CHECK(whole == "Received: by test\r\n" + in);
  for (size_t piece : {1, 2, 3, 64, 65}) {
    INFO(piece);
    CHECK(feed(piece) == whole);
  }
  // A header section ending in a lone CR at the limit is still cut the same way.
  for (const std::string& tail : {std::string("\r"), std::string("\rX\r\n")}) {
    const std::string msg = line + tail;
    HeaderFilter a(o), b(o);
    std::string wa, wb;
    a.feed(msg, wa);
    a.finish(wa);
    for (char c : msg) b.feed(std::string_view(&c, 1), wb);
    b.finish(wb);
    CHECK(wa == wb);
    CHECK(wa == "Received: by test\r\n" + line + "\r\n" + tail);
  }
}

TEST_CASE("rfc5322_date") {
  std::string d = mta::rfc5322_date(86400 * 365);
  // "Fri, 1 Jan 1971 00:00:00 +0000" in UTC; the zone depends on TZ.
  CHECK(d.size() >= 30);
  CHECK(d.substr(3, 2) == ", ");
  CHECK((d[d.size() - 5] == '+' || d[d.size() - 5] == '-'));
}

TEST_CASE("message_drop_headers: Bcc, Resent-Bcc, Content-Length and Return-Path go, folded lines too") {
  const std::string in =
      "Bcc: hidden@example.test,\r\n\tother@example.test\r\nSubject: s\r\nReturn-Path: <forged@x>\r\n"
      "Content-Length: 5\r\nRESENT-BCC: r@x\r\nTo: a@b\r\n\r\nBcc: in the body stays\r\n";
  const std::string want = "Received: by test\r\nSubject: s\r\nTo: a@b\r\n\r\nBcc: in the body stays\r\n";
  CHECK(run(in, false) == want);
  for (size_t piece : {1, 2, 5, 13}) {
    INFO(piece);
    CHECK(run(in, false, piece) == want);
  }
  {
    // What was dropped is counted, so the client's size can be told from ours
    // (found by the smtpd_cleanup fuzz target: ":+resent-bcc:").
    HeaderFilter f(opts(false));
    std::string out;
    f.feed(in, out);
    f.finish(out);
    CHECK(out.size() == in.size() + f.added_bytes() - f.removed_bytes());
    CHECK(f.removed_bytes() == in.size() + 19 - want.size());
  }
  // A message that ends inside a dropped header.
  CHECK(run("Subject: s\r\nBcc: x@y", false) == "Received: by test\r\nSubject: s\r\n");
  // Nothing dropped when the list is empty (message_drop_headers =).
  HeaderFilter::Options o;
  o.prepend = "";
  o.drop_headers.clear();
  HeaderFilter f(o);
  std::string out;
  f.feed("Bcc: kept@x\r\n\r\nb\r\n", out);
  f.finish(out);
  CHECK(out == "Bcc: kept@x\r\n\r\nb\r\n");
}
