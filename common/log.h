// Logging in the shapes Postfix and Dovecot use, so pflogsumm, fail2ban and admins'
// greps work unchanged.
//
// A line is "<syslog_name>/<service>[pid]: <level: >text", e.g.
//   tern/smtpd[812]: warning: hostname x does not resolve
// sent to syslog (facility mail, through /dev/log) or, in the development default and
// in tests, to stderr or a file with a syslog-style timestamp and host in front, so the
// same tools read it. One process may log as several services (tern-mta logs as
// smtpd, qmgr, lmtp, smtp), so the service is chosen per line, not per process.
//
// Levels follow Postfix msg.c: info, warning (recoverable), error, fatal (broken
// config or environment: exit, the master restarts), panic (broken invariant: abort).
// Callers escape client-supplied text with log_escape() before it gets here and never
// pass a password or SASL response.
#pragma once

#include <cstdarg>
#include <string>
#include <string_view>
#include <vector>

namespace tern::common::log {

enum class Level { kDebug, kInfo, kWarning, kError, kFatal, kPanic };

// Where lines go.
enum class Sink {
  kSyslog,  // /dev/log, facility mail (the production default)
  kStderr,  // standard error, with timestamp and host (development default)
  kFile,    // appended to a file, with timestamp and host (maillog_file)
  kNone,    // dropped (fuzz targets, which run a session a thousand times a second)
};

struct Options {
  std::string syslog_name = "tern";  // Postfix's syslog_name
  std::string service = "tern";      // default service for lines without one
  Sink sink = Sink::kStderr;
  std::string file;                  // for kFile
  bool debug = false;                // emit kDebug lines
};

// Sets up logging for this process. Safe to call again (after a config reload).
void init(const Options& options);
// Connects to syslog and loads the time zone now: after a chroot, /dev/log and
// /etc/localtime are out of reach (a syslogd restart then falls back to stderr).
void before_chroot();
const Options& options();
// The fds logging writes to (the maillog_file, the syslog socket), so that a process
// that closes every fd it does not need keeps these, and never has its log lines
// written into whatever file later takes one of their numbers.
std::vector<int> fds();

// Exit code used by fatal(): EX_SOFTWARE unless set (a config error uses EX_CONFIG).
[[noreturn]] void fatal_exit(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

void vlog(Level level, std::string_view service, const char* fmt, va_list ap);
void logf(Level level, std::string_view service, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

// Lines as the process's default service.
void debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warning(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
[[noreturn]] void panic(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A named service inside a process: Channel smtpd("smtpd"); smtpd.info("...").
class Channel {
 public:
  explicit Channel(std::string service) : service_(std::move(service)) {}
  const std::string& service() const { return service_; }
  void debug(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void info(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void warning(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));
  void error(const char* fmt, ...) const __attribute__((format(printf, 2, 3)));

 private:
  std::string service_;
};

// The text of one line as it would be written (without timestamp/host), for tests
// of log formats: "tern/smtpd[12]: warning: text".
std::string format_line(Level level, std::string_view service, std::string_view text);

}  // namespace tern::common::log
