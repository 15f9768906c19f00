// log.h: the line shape pflogsumm and fail2ban parse ("tern/smtpd[pid]: warning:
// text"), one line per message, and the file sink.
#include "common/log.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

using namespace tern::common;

namespace {

std::string pid() { return std::to_string(::getpid()); }

// Restores the process's logging options when a test ends.
struct LogOptionsGuard {
  log::Options saved = log::options();
  ~LogOptionsGuard() { log::init(saved); }
};

}  // namespace

TEST_CASE("format_line has Postfix's shape", "[log]") {
  LogOptionsGuard guard;
  log::Options o;
  o.syslog_name = "tern";
  o.service = "master";
  log::init(o);
  struct Case {
    log::Level level;
    const char* service;
    const char* text;
    std::string want;
  };
  const Case cases[] = {
      {log::Level::kInfo, "smtpd", "connect from x[192.0.2.7]", "tern/smtpd[" + pid() + "]: connect from x[192.0.2.7]"},
      {log::Level::kWarning, "smtpd", "text", "tern/smtpd[" + pid() + "]: warning: text"},
      {log::Level::kError, "lmtp", "text", "tern/lmtp[" + pid() + "]: error: text"},
      {log::Level::kFatal, "qmgr", "text", "tern/qmgr[" + pid() + "]: fatal: text"},
      {log::Level::kPanic, "qmgr", "text", "tern/qmgr[" + pid() + "]: panic: text"},
      {log::Level::kDebug, "imap-login", "text", "tern/imap-login[" + pid() + "]: debug: text"},
      {log::Level::kInfo, "", "no service given", "tern/master[" + pid() + "]: no service given"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.want);
    CHECK(log::format_line(c.level, c.service, c.text) == c.want);
  }
}

TEST_CASE("format_line follows syslog_name", "[log]") {
  LogOptionsGuard guard;
  log::Options o;
  o.syslog_name = "postfix-out";
  log::init(o);
  CHECK(log::format_line(log::Level::kInfo, "smtp", "x") == "postfix-out/smtp[" + pid() + "]: x");
}

TEST_CASE("a log line is one line: embedded newlines cannot forge another", "[log]") {
  LogOptionsGuard guard;
  log::init(log::Options{});
  std::string line = log::format_line(log::Level::kWarning, "smtpd", "bad\r\ntern/smtpd[1]: forged\nx");
  CHECK(line == "tern/smtpd[" + pid() + "]: warning: bad  tern/smtpd[1]: forged x");
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find('\r') == std::string::npos);
}

TEST_CASE("the file sink appends timestamped lines, one per message", "[log]") {
  LogOptionsGuard guard;
  char tmpl[] = "/tmp/tern-log-test-XXXXXX";
  int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  log::Options o;
  o.sink = log::Sink::kFile;
  o.file = tmpl;
  o.service = "master";
  log::init(o);
  log::info("first %d", 1);
  log::Channel smtpd("smtpd");
  smtpd.warning("second\nline");
  log::debug("not shown without debug");
  std::string long_text(3000, 'x');  // longer than the formatting buffer on the stack
  smtpd.info("%s", long_text.c_str());
  log::init(guard.saved);

  std::ifstream in(tmpl);
  std::string l1, l2, l3, l4;
  REQUIRE(std::getline(in, l1));
  REQUIRE(std::getline(in, l2));
  REQUIRE(std::getline(in, l3));
  CHECK_FALSE(std::getline(in, l4));
  ::unlink(tmpl);
  // "Mon DD HH:MM:SS host tern/master[pid]: first 1"
  const std::string tail1 = " tern/master[" + pid() + "]: first 1";
  REQUIRE(l1.size() > tail1.size() + 16);
  CHECK(l1.substr(l1.size() - tail1.size()) == tail1);
  CHECK(l1[3] == ' ');
  CHECK(l1[9] == ':');
  CHECK(l1[12] == ':');
  CHECK(l2.find("tern/smtpd[" + pid() + "]: warning: second line") != std::string::npos);
  CHECK(l3.find("]: " + long_text) != std::string::npos);
}
