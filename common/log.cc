#include "common/log.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace tern::common::log {
namespace {

Options g_options;
int g_syslog_fd = -1;
int g_file_fd = -1;
std::string g_host;

// Syslog facility mail (LOG_MAIL = 2 << 3) plus a severity.
int syslog_priority(Level level) {
  int severity = 6;
  switch (level) {
    case Level::kDebug: severity = 7; break;
    case Level::kInfo: severity = 6; break;
    case Level::kWarning: severity = 4; break;
    case Level::kError: severity = 3; break;
    case Level::kFatal: severity = 2; break;
    case Level::kPanic: severity = 2; break;
  }
  return (2 << 3) | severity;
}

const char* level_prefix(Level level) {
  switch (level) {
    case Level::kDebug: return "debug: ";
    case Level::kInfo: return "";
    case Level::kWarning: return "warning: ";
    case Level::kError: return "error: ";
    case Level::kFatal: return "fatal: ";
    case Level::kPanic: return "panic: ";
  }
  return "";
}

void open_syslog() {
  if (g_syslog_fd >= 0) return;
  g_syslog_fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (g_syslog_fd < 0) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, "/dev/log");
  if (::connect(g_syslog_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    ::close(g_syslog_fd);
    g_syslog_fd = -1;
  }
}

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    off += static_cast<size_t>(n);
  }
}

std::string timestamp() {
  time_t now = ::time(nullptr);
  struct tm tm;
  ::localtime_r(&now, &tm);
  char buf[32];
  ::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
  return buf;
}

void emit(Level level, std::string_view service, const std::string& text) {
  std::string line = format_line(level, service, text);
  if (g_options.sink == Sink::kSyslog) {
    open_syslog();
    if (g_syslog_fd >= 0) {
      std::string msg = "<" + std::to_string(syslog_priority(level)) + ">" + timestamp() + " " + line;
      if (::send(g_syslog_fd, msg.data(), msg.size(), MSG_NOSIGNAL) >= 0) return;
      // syslogd restarted: reconnect once.
      ::close(g_syslog_fd);
      g_syslog_fd = -1;
      open_syslog();
      if (g_syslog_fd >= 0 && ::send(g_syslog_fd, msg.data(), msg.size(), MSG_NOSIGNAL) >= 0) return;
    }
    // No syslog: fall through to stderr so nothing is silently lost.
  }
  // Dropped, except what explains an exit.
  if (g_options.sink == Sink::kNone && level < Level::kFatal) return;
  std::string full = timestamp() + " " + g_host + " " + line + "\n";
  if (g_options.sink == Sink::kFile && g_file_fd >= 0) {
    write_all(g_file_fd, full);
  } else {
    write_all(2, full);
  }
}

}  // namespace

void before_chroot() {
  if (g_options.sink == Sink::kSyslog) open_syslog();
  ::tzset();  // localtime_r reads /etc/localtime once, here
  (void)timestamp();
}

void init(const Options& options) {
  g_options = options;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) {
    g_host = host;
    size_t dot = g_host.find('.');
    if (dot != std::string::npos) g_host.resize(dot);
  } else {
    g_host = "localhost";
  }
  if (g_file_fd >= 0) {
    ::close(g_file_fd);
    g_file_fd = -1;
  }
  if (options.sink == Sink::kFile) {
    // Opened as root by tern-master and by daemons before they drop privilege: never
    // through a symbolic link, and never a file with other names (a hard link to
    // /etc/shadow in a directory someone else can write).
    g_file_fd = ::open(options.file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0640);
    struct stat st;
    if (g_file_fd >= 0 && (::fstat(g_file_fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)) {
      ::close(g_file_fd);
      g_file_fd = -1;
      std::string why = "warning: log file " + options.file + " is not a plain file with one link; logging to stderr\n";
      write_all(2, why);
    } else if (g_file_fd < 0) {
      std::string why = "warning: cannot open log file " + options.file + ": " + std::strerror(errno) + "; logging to stderr\n";
      write_all(2, why);
    }
  }
}

const Options& options() { return g_options; }

std::vector<int> fds() {
  std::vector<int> out;
  if (g_file_fd >= 0) out.push_back(g_file_fd);
  if (g_syslog_fd >= 0) out.push_back(g_syslog_fd);
  return out;
}

std::string format_line(Level level, std::string_view service, std::string_view text) {
  std::string line;
  line.reserve(text.size() + 48);
  line += g_options.syslog_name;
  line += '/';
  line += service.empty() ? std::string_view(g_options.service) : service;
  line += '[';
  line += std::to_string(::getpid());
  line += "]: ";
  line += level_prefix(level);
  // A log line is one line: embedded newlines would let a value forge a second line.
  for (char c : text) line += (c == '\n' || c == '\r') ? ' ' : c;
  return line;
}

void vlog(Level level, std::string_view service, const char* fmt, va_list ap) {
  if (level == Level::kDebug && !g_options.debug) return;
  char stack[1024];
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(stack, sizeof stack, fmt, copy);
  va_end(copy);
  std::string text;
  if (n >= 0 && static_cast<size_t>(n) < sizeof stack) {
    text.assign(stack, static_cast<size_t>(n));
  } else if (n >= 0) {
    text.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(text.data(), text.size(), fmt, ap);
    text.resize(static_cast<size_t>(n));
  }
  emit(level, service, text);
}

void logf(Level level, std::string_view service, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, service, fmt, ap);
  va_end(ap);
}

#define TERN_LOG_BODY(level, service) \
  va_list ap;                         \
  va_start(ap, fmt);                  \
  vlog(level, service, fmt, ap);      \
  va_end(ap)

void debug(const char* fmt, ...) { TERN_LOG_BODY(Level::kDebug, ""); }
void info(const char* fmt, ...) { TERN_LOG_BODY(Level::kInfo, ""); }
void warning(const char* fmt, ...) { TERN_LOG_BODY(Level::kWarning, ""); }
void error(const char* fmt, ...) { TERN_LOG_BODY(Level::kError, ""); }
void fatal(const char* fmt, ...) {
  TERN_LOG_BODY(Level::kFatal, "");
  std::exit(EX_SOFTWARE);
}
void fatal_exit(int code, const char* fmt, ...) {
  TERN_LOG_BODY(Level::kFatal, "");
  std::exit(code);
}
void panic(const char* fmt, ...) {
  TERN_LOG_BODY(Level::kPanic, "");
  std::abort();
}

void Channel::debug(const char* fmt, ...) const { TERN_LOG_BODY(Level::kDebug, service_); }
void Channel::info(const char* fmt, ...) const { TERN_LOG_BODY(Level::kInfo, service_); }
void Channel::warning(const char* fmt, ...) const { TERN_LOG_BODY(Level::kWarning, service_); }
void Channel::error(const char* fmt, ...) const { TERN_LOG_BODY(Level::kError, service_); }

#undef TERN_LOG_BODY

}  // namespace tern::common::log
