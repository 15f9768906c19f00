// sandbox.h: each profile's filter, entered in a forked child (a filter cannot be
// undone), and what the child may and may not do under it: a call outside the
// profile kills it with SIGSYS; the calls the event loop, threads and files need
// still work.
#include "common/sandbox.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

#include "common/config.h"

using namespace tern::common;

namespace {

Config config(const std::string& text = "") {
  Result<Config> c = Config::parse(text, "t.conf");
  REQUIRE(c);
  return std::move(c).value();
}

// Runs `body` in a child under profile `p`; returns its wait status. The body
// returns the exit code (0: every expectation held).
int in_child(sandbox::Profile p, const std::function<int()>& body, const std::string& cfg = "") {
  Config c = config(cfg);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!sandbox::enter(c, p)) ::_exit(90);
    ::_exit(body());
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

bool killed_by_sigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }
bool exited_ok(int status) { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

}  // namespace

TEST_CASE("sandbox: every profile sets no_new_privs and keeps what the loop, threads and files need", "[sandbox]") {
  for (sandbox::Profile p : {sandbox::Profile::kLogin, sandbox::Profile::kWorker, sandbox::Profile::kMta}) {
    INFO(sandbox::profile_name(p));
    int st = in_child(p, [] {
      if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 1;
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return 2;
      if (::write(sv[0], "x", 1) != 1) return 3;
      int n = 0;
      if (::ioctl(sv[1], FIONREAD, &n) != 0 || n != 1) return 4;
      int on = 1;
      if (::ioctl(sv[1], FIONBIO, &on) != 0) return 5;
      // A thread (libuv's pool): clone with CLONE_THREAD.
      int seen = 0;
      std::thread t([&] { seen = 1; });
      t.join();
      if (seen != 1) return 6;
      int fd = ::open("/etc/hostname", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return 7;
      ::close(fd);
      // isatty() (TCGETS) answers, it does not kill.
      if (::isatty(sv[0]) != 0) return 8;
      // Signals to itself work (abort(), the crash tests' SIGSTOP).
      if (::kill(::getpid(), 0) != 0) return 10;
      return 0;
    });
    CHECK(exited_ok(st));
    if (!exited_ok(st)) WARN("status " << st);
  }
}

TEST_CASE("sandbox: no profile may exec, fork, or signal a neighbour", "[sandbox]") {
#ifdef __SANITIZE_ADDRESS__
  WARN("skipped: an ASan build's filter allows fork, execve and ptrace for ASan's own reports (sandbox.h)");
  return;
#endif
  for (sandbox::Profile p : {sandbox::Profile::kLogin, sandbox::Profile::kWorker, sandbox::Profile::kMta}) {
    INFO(sandbox::profile_name(p));
    CHECK(killed_by_sigsys(in_child(p, [] {
      char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
      ::execve("/bin/true", argv, environ);
      return 0;  // exec'ed /bin/true exits 0 as well: either way not SIGSYS
    })));
    CHECK(killed_by_sigsys(in_child(p, [] {
      pid_t child = ::fork();
      if (child == 0) ::_exit(0);
      return 0;
    })));
    CHECK(killed_by_sigsys(in_child(p, [] {
      ::kill(::getppid(), 0);
      return 0;
    })));
    CHECK(killed_by_sigsys(in_child(p, [] {
      ::mount("none", "/tmp", "tmpfs", 0, nullptr);
      return 0;
    })));
    // A terminal's TIOCSTI (typing into another session), PR_SET_DUMPABLE (would
    // let a process of the same uid ptrace this one).
    CHECK(killed_by_sigsys(in_child(p, [] {
      char c = 'x';
      ::ioctl(0, TIOCSTI, &c);
      return 0;
    })));
    CHECK(killed_by_sigsys(in_child(p, [] {
      ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
      return 0;
    })));
    // Signalling a neighbour through fcntl (F_SETOWN + O_ASYNC makes the kernel send
    // it SIGIO, or any signal F_SETSIG names) and lowering its limits with
    // prlimit (independent review, finding 5).
    for (int cmd : {F_SETOWN, F_SETSIG, F_SETOWN_EX}) {
      INFO("fcntl " << cmd);
      CHECK(killed_by_sigsys(in_child(p, [cmd] {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 2;
        ::fcntl(sv[0], cmd, cmd == F_SETSIG ? SIGKILL : ::getppid());
        return 0;
      })));
    }
    CHECK(killed_by_sigsys(in_child(p, [] {
      struct rlimit none = {0, 0};
      ::prlimit(::getppid(), RLIMIT_NOFILE, &none, nullptr);
      return 0;
    })));
  }
}

TEST_CASE("sandbox: fcntl and rlimits on the process itself still work", "[sandbox]") {
  for (sandbox::Profile p : {sandbox::Profile::kLogin, sandbox::Profile::kWorker, sandbox::Profile::kMta}) {
    INFO(sandbox::profile_name(p));
    int st = in_child(p, [] {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
      int fl = ::fcntl(sv[0], F_GETFL);
      if (fl < 0 || ::fcntl(sv[0], F_SETFL, fl | O_NONBLOCK) != 0) return 2;
      if (::fcntl(sv[0], F_SETFD, FD_CLOEXEC) != 0 || ::fcntl(sv[0], F_GETFD) != FD_CLOEXEC) return 3;
      int d = ::fcntl(sv[0], F_DUPFD_CLOEXEC, 10);
      if (d < 10) return 4;
      struct rlimit r;
      if (::getrlimit(RLIMIT_NOFILE, &r) != 0 || ::setrlimit(RLIMIT_NOFILE, &r) != 0) return 5;
      if (::prlimit(::getpid(), RLIMIT_NOFILE, nullptr, &r) != 0) return 6;
      return 0;
    });
    CHECK(exited_ok(st));
    if (!exited_ok(st)) WARN("status " << st);
  }
}

TEST_CASE("sandbox: only tern-mta opens network sockets; only login is read-only on files", "[sandbox]") {
  auto inet = [] {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    return fd >= 0 ? 0 : 1;
  };
  CHECK(killed_by_sigsys(in_child(sandbox::Profile::kLogin, inet)));
  CHECK(killed_by_sigsys(in_child(sandbox::Profile::kWorker, inet)));
  CHECK(exited_ok(in_child(sandbox::Profile::kMta, inet)));
  char tmpl[] = "/tmp/tern-sandbox-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  auto write_files = [dir] {
    const std::string a = dir + "/a", b = dir + "/b";
    int fd = ::open(a.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::fsync(fd) != 0) return 1;
    ::close(fd);
    if (::rename(a.c_str(), b.c_str()) != 0) return 2;
    if (::unlink(b.c_str()) != 0) return 3;
    return 0;
  };
  CHECK(exited_ok(in_child(sandbox::Profile::kWorker, write_files)));
  CHECK(exited_ok(in_child(sandbox::Profile::kMta, write_files)));
  CHECK(killed_by_sigsys(in_child(sandbox::Profile::kLogin, write_files)));
  ::rmdir(dir.c_str());
}

TEST_CASE("sandbox: the login process opens files read-only, never for writing or creating", "[sandbox]") {
#ifdef __SANITIZE_ADDRESS__
  WARN("skipped: an ASan build's login filter lets it open its report file (log_path) for writing");
  return;
#endif
  char tmpl[] = "/tmp/tern-sandbox-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string dir = tmpl;
  const std::string existing = dir + "/existing";
  {
    int fd = ::open(existing.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  // Independent review, finding 9: openat(O_CREAT) was allowed.
  for (int flags : {O_WRONLY, O_RDWR, O_RDONLY | O_CREAT, O_RDONLY | O_TRUNC, O_RDONLY | O_APPEND}) {
    INFO("flags " << flags);
    CHECK(killed_by_sigsys(in_child(sandbox::Profile::kLogin, [&] {
      ::open(existing.c_str(), flags | O_CLOEXEC, 0600);
      return 0;
    })));
    CHECK(killed_by_sigsys(in_child(sandbox::Profile::kLogin, [&] {
      ::syscall(SYS_open, (dir + "/new").c_str(), flags | O_CREAT, 0600);
      return 0;
    })));
  }
  CHECK(exited_ok(in_child(sandbox::Profile::kLogin, [&] {
    int fd = ::open(existing.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    return fd >= 0 ? 0 : 1;
  })));
  ::unlink(existing.c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("sandbox: tern-mta opens TCP, UDP and route netlink sockets, not raw, ICMP or diag ones", "[sandbox]") {
  struct Case {
    int family, type, protocol;
    bool allowed;
  };
  // Independent review, finding 8: every inet type and every netlink protocol were allowed.
  const Case cases[] = {
      {AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, true},
      {AF_INET6, SOCK_STREAM, IPPROTO_TCP, true},
      {AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0, true},
      {AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, IPPROTO_UDP, true},
      {AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE, true},
      {AF_INET, SOCK_RAW, IPPROTO_ICMP, false},
      {AF_INET6, SOCK_RAW, IPPROTO_RAW, false},
      {AF_INET, SOCK_SEQPACKET, 0, false},
      {AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG, false},
      {AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT, false},
      {AF_NETLINK, SOCK_RAW, NETLINK_AUDIT, false},
      {AF_PACKET, SOCK_RAW, 0, false},
  };
  for (const Case& c : cases) {
    INFO("socket(" << c.family << ", " << c.type << ", " << c.protocol << ")");
    int st = in_child(sandbox::Profile::kMta, [&] {
      // Refused by the kernel (EPERM for raw as non-root) is fine: only SIGSYS counts.
      (void)::socket(c.family, c.type, c.protocol);
      return 0;
    });
    if (c.allowed) {
      CHECK(exited_ok(st));
    } else {
      CHECK(killed_by_sigsys(st));
    }
  }
}

TEST_CASE("sandbox: a system call of another ABI kills the whole process, not one thread", "[sandbox]") {
#ifdef __SANITIZE_ADDRESS__
  WARN("skipped: ASan's own threads and reports change how a killed thread ends the child");
  return;
#endif
  // x32's numbering (nr | 0x40000000) is another architecture to the x86-64 filter.
  // With libseccomp's default bad-architecture action only the calling thread died
  // and the process went on (independent review, finding 9).
  for (sandbox::Profile p : {sandbox::Profile::kLogin, sandbox::Profile::kWorker, sandbox::Profile::kMta}) {
    INFO(sandbox::profile_name(p));
    CHECK(killed_by_sigsys(in_child(p, [] {
      std::thread t([] { ::syscall(0x40000000L | SYS_getpid); });
      t.detach();
      ::sleep(2);
      return 0;
    })));
  }
}

TEST_CASE("sandbox: seccomp_filter = no sets only no_new_privs; a bad value names the key", "[sandbox]") {
  CHECK(exited_ok(in_child(
      sandbox::Profile::kLogin,
      [] {
        if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 1;
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        return fd >= 0 ? 0 : 2;
      },
      "seccomp_filter = no\n")));
  Result<Config> bad = Config::parse("seccomp_filter = maybe\n", "t.conf");
  REQUIRE(!bad);
  CHECK(bad.error().message == "t.conf:1: parameter 'seccomp_filter': 'maybe' is not one of yes, log, no");
}
