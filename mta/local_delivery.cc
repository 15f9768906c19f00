#include "mta/local_delivery.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "common/privilege.h"
#include "common/text.h"
#include "mta/address.h"

extern char** environ;

namespace tern::mta {

namespace {

// The body with CRLF turned into LF.
std::string to_lf(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\r' && i + 1 < in.size() && in[i + 1] == '\n') continue;
    out += in[i];
  }
  return out;
}

LocalOutcome outcome(char st, const char* dsn, std::string text) { return local_outcome(st, dsn, std::move(text)); }

bool owner_ok(uid_t owner) { return owner == static_cast<uid_t>(-1) || owner == 0 || owner == ::geteuid(); }

LocalOutcome run_command(const LocalJob& job) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) < 0) return outcome('d', "4.3.0", std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(out, O_CLOEXEC) < 0) {
    ::close(in[0]);
    ::close(in[1]);
    return outcome('d', "4.3.0", std::string("pipe: ") + std::strerror(errno));
  }
  auto [lp, domain] = split_address(job.recipient);
  const std::string ext = split_extension(lp, job.delimiters).second;  // "+ext"
  // Postfix local(8)'s environment for commands (EXTERNAL COMMAND DELIVERY); nothing
  // of tern-mta's own environment is passed on.
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "SHELL=" + (job.shell.empty() ? std::string("/bin/sh") : job.shell),
                                  "HOME=" + (job.home.empty() ? std::string("/") : job.home), "LOGNAME=" + job.user,
                                  "USER=" + job.user, "SENDER=" + job.sender, "RECIPIENT=" + job.recipient,
                                  "ORIGINAL_RECIPIENT=" + job.recipient, "LOCAL=" + lp, "EXTENSION=" + (ext.empty() ? ext : ext.substr(1)),
                                  "DOMAIN=" + domain, "QUEUE_ID=" + job.queue_id, "LANG=C"};
  const std::string cwd = job.home.empty() ? std::string("/") : job.home;
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string cmd = job.target;
  // A raw clone, not fork(): fork() runs the pthread_atfork handlers, and libuv's
  // (uv__signal_global_reinit) closes the fds it recorded for its signal lock and
  // opens a new pipe in the child. In a process that has since closed and reused
  // those numbers (the local helper's job process, after close_fds_except) that
  // took the command's stdin away and put a pipe's write end in its place. The
  // child below makes only system calls before execve, so no handler is needed.
  pid_t pid = static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
  if (pid < 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    return outcome('d', "4.3.0", std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    if (::chdir(cwd.c_str()) < 0 && ::chdir("/") < 0) ::_exit(EX_OSERR);
    ::setsid();
    // dup2() onto itself keeps O_CLOEXEC: a pipe that already sits on 0, 1 or 2
    // (a process started with those closed) would vanish at exec.
    auto onto = [](int fd, int target) {
      if (fd == target) return ::fcntl(fd, F_SETFD, 0) == 0;
      return ::dup2(fd, target) == target;
    };
    if (!onto(in[0], 0) || !onto(out[1], 1) || !onto(out[1], 2)) ::_exit(EX_OSERR);
    ::signal(SIGPIPE, SIG_DFL);
    const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
    ::execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
    ::_exit(EX_OSERR);
  }
  ::close(in[0]);
  ::close(out[1]);
  const std::string body = to_lf(job.body);
  size_t off = 0;
  std::string output;
  ::fcntl(in[1], F_SETFL, O_NONBLOCK);
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  int wfd = in[1];
  bool timed_out = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(job.time_limit_s);
  bool out_open = true;
  while (out_open || wfd >= 0) {
    if (wfd >= 0 && off >= body.size()) {
      ::close(wfd);
      wfd = -1;
      continue;
    }
    pollfd p[2];
    int n = 0;
    if (out_open) p[n++] = {out[0], POLLIN, 0};
    if (wfd >= 0) p[n++] = {wfd, POLLOUT, 0};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int r = ::poll(p, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < n; ++i) {
      if (p[i].fd == out[0] && (p[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        char buf[4096];
        ssize_t k = ::read(out[0], buf, sizeof buf);
        if (k > 0) {
          // Keep a little of what the command said for the log and the bounce.
          if (output.size() < 512) output.append(buf, static_cast<size_t>(std::min<ssize_t>(k, 512)));
        } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
          out_open = false;
        }
      }
      if (p[i].fd == wfd && (p[i].revents & (POLLOUT | POLLHUP | POLLERR))) {
        ssize_t k = ::write(wfd, body.data() + off, std::min<size_t>(body.size() - off, 65536));
        if (k > 0) {
          off += static_cast<size_t>(k);
        } else if (k < 0 && errno != EAGAIN && errno != EINTR) {
          ::close(wfd);  // EPIPE: the command stopped reading; its exit status decides
          wfd = -1;
        }
      }
    }
  }
  if (wfd >= 0) ::close(wfd);
  ::close(out[0]);
  // The limit holds after the command closes its output too ("|prog >log 2>&1"):
  // wait for its exit only until the same deadline.
  int status = 0;
  while (!timed_out) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    ::poll(nullptr, 0, static_cast<int>(std::min<long long>(left.count(), 20)));
  }
  if (timed_out) {
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (timed_out) return outcome('d', "4.3.0", "Command time limit exceeded: \"" + common::log_escape(cmd, 100) + "\"");
  return command_exit_outcome(status, output);
}

LocalOutcome append_file(const LocalJob& job) {
  const std::string& path = job.target;
  // O_NOFOLLOW: an alias naming a file never writes through a symlink someone
  // planted there (Postfix refuses symlinks that it does not own, too).
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    bool temp = e == ENOSPC || e == EAGAIN || e == EINTR || e == ENFILE || e == EMFILE;
    return outcome(temp ? 'd' : 'b', temp ? "4.2.0" : "5.2.0", "cannot open file " + path + ": " + std::strerror(e));
  }
  common::UniqueFd f(fd);
  struct stat st;
  if (::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    return outcome('b', "5.2.0", "cannot append message to file " + path + ": not a regular file");
  }
  if (::flock(fd, LOCK_EX) < 0) return outcome('d', "4.2.0", "cannot lock " + path + ": " + std::strerror(errno));
  off_t old = ::lseek(fd, 0, SEEK_END);
  // mbox: "From sender date", ">From " quoting, a blank line after the message.
  time_t now = ::time(nullptr);
  char date[64];
  struct tm tm;
  ::localtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
  std::string text = "From " + (job.sender.empty() ? std::string("MAILER-DAEMON") : job.sender) + "  " + date + "\n";
  std::string body = to_lf(job.body);
  size_t pos = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    std::string_view line(body.data() + pos, (nl == std::string::npos ? body.size() : nl + 1) - pos);
    if (line.substr(0, 5) == "From ") text += '>';
    text += line;
    pos += line.size();
  }
  if (text.empty() || text.back() != '\n') text += '\n';
  text += '\n';
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      if (::ftruncate(fd, old) < 0) {
      }
      return outcome('d', "4.2.0", "cannot append message to file " + path + ": " + std::strerror(e));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) < 0) {
    int e = errno;
    if (::ftruncate(fd, old) < 0) {
    }
    return outcome('d', "4.2.0", "cannot append message to file " + path + ": " + std::strerror(e));
  }
  return outcome('s', "2.0.0", "delivered to file: " + path);
}

}  // namespace

LocalOutcome command_exit_outcome(int status, const std::string& output) {
  std::string said = common::log_escape(std::string(common::trim(output)), 200);
  if (WIFSIGNALED(status)) {
    return outcome('d', "4.3.0", "Command died with signal " + std::to_string(WTERMSIG(status)) + (said.empty() ? "" : ": " + said));
  }
  int code = WEXITSTATUS(status);
  if (code == 0) return outcome('s', "2.0.0", "delivered to command");
  switch (code) {
    case EX_TEMPFAIL:
    case EX_OSERR:
    case EX_IOERR:
    case EX_CONFIG:
      return outcome('d', "4.3.0", "temporary failure. Command output: " + said);
    case EX_NOUSER:
      return outcome('b', "5.1.1", "user unknown. Command output: " + said);
    case EX_NOPERM:
      return outcome('b', "5.7.0", "permission denied. Command output: " + said);
    case EX_DATAERR:
      return outcome('b', "5.6.0", "data format error. Command output: " + said);
    default:
      return outcome('b', "5.3.0", "Command died with status " + std::to_string(code) + ": " + said);
  }
}

LocalOutcome deliver_local(const LocalJob& job) {
  if (!owner_ok(job.owner)) {
    return outcome('b', "5.7.1", "mail to " + std::string(job.kind == LocalJob::Kind::kCommand ? "command" : "file") +
                                     " is restricted: the alias table's owner (uid " + std::to_string(job.owner) +
                                     ") is neither root nor the mail system");
  }
  if (!job.user.empty()) return run_local(job);
  LocalJob as_me = job;
  const common::UserIds me = common::current_user();
  as_me.user = me.name;
  as_me.home = me.home;
  as_me.shell = me.shell;
  return run_local(as_me);
}

LocalOutcome run_local(const LocalJob& job) {
  return job.kind == LocalJob::Kind::kCommand ? run_command(job) : append_file(job);
}

LocalOutcome local_outcome(char status, const char* dsn, std::string text) {
  LocalOutcome o;
  o.status = status;
  o.dsn = dsn;
  o.text = std::move(text);
  return o;
}

}  // namespace tern::mta
