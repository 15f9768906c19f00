#include "common/sandbox.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>

#include "common/log.h"
#include "common/text.h"

namespace tern::common::sandbox {

namespace {

// What every profile needs: I/O on the descriptors the process has, memory,
// time, signals, the event loop (epoll, eventfd, pipes), libuv's thread pool
// (threads: clone without a new process is checked below), reading files (open
// and openat are below: read-only in the login profile).
constexpr const char* kBase[] = {
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "close", "close_range", "fstat", "newfstatat", "stat", "lstat", "statx", "lseek",
    "readlink", "readlinkat", "access", "faccessat", "faccessat2", "getdents64", "fstatfs", "statfs",
    "mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "msync",
    "futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "membarrier",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "restart_syscall",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "getpgrp", "getsid",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time", "times",
    "getrusage", "getitimer", "setitimer", "alarm", "getpriority",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd2", "pipe", "pipe2", "dup", "dup2", "dup3", "poll", "ppoll", "select", "socketpair",
    "pselect6", "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd4",
    "accept", "accept4", "recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "sendmmsg", "shutdown",
    "getsockopt", "setsockopt", "getsockname", "getpeername", "connect",
    "getrandom", "exit", "exit_group", "sched_yield", "sched_getaffinity", "getrlimit",
    "uname", "getcpu", "sysinfo", "umask", "getcwd", "fadvise64", "sendfile", "splice",
};

// Writing mail: Maildir, mbox, the LMDB index, the queue.
constexpr const char* kFiles[] = {
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "fsync", "fdatasync", "sync_file_range", "ftruncate", "fallocate", "flock", "fchmod", "fchmodat",
    "utimensat", "futimesat", "utimes", "utime", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "creat", "truncate", "chmod", "fchown", "memfd_create", "chdir", "fchdir",
};

// tern-mta: outbound SMTP and DNS; reaping its local helper (local_helper.h).
constexpr const char* kNet[] = {"bind", "listen", "wait4", "waitid"};

// ASan's report forks llvm-symbolizer: in sanitized builds only.
// LeakSanitizer stops the world with a ptrace'ing clone of its own.
// Its tracer is another task (its own pid): it lists /proc/self/task with the old
// getdents and signals the threads it stops.
constexpr const char* kSanitizer[] = {"fork", "vfork", "execve", "clone", "clone3", "ptrace", "mincore",
                                      "wait4", "waitid", "prctl", "ioctl", "sched_setaffinity", "getdents",
                                      "kill", "tgkill", "tkill"};

bool add(scmp_filter_ctx ctx, const char* name, int& count) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return true;  // not on this architecture
  if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) return false;
  ++count;
  return true;
}

}  // namespace

const char* profile_name(Profile p) {
  switch (p) {
    case Profile::kLogin: return "login";
    case Profile::kWorker: return "worker";
    case Profile::kMta: return "mta";
  }
  return "?";
}

Status enter(const Config& cfg, Profile p) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_error("prctl(PR_SET_NO_NEW_PRIVS)", errno);
  const std::string mode = to_lower(cfg.str("seccomp_filter"));
  if (mode != "yes" && mode != "log" && mode != "no") {
    return make_error(ErrorKind::kConfig, cfg.origin("seccomp_filter") + ": seccomp_filter = " + mode +
                                              ": expected yes, log or no");
  }
  if (mode != "yes") {
    // Said at every start, not only at debug level: this process parses network bytes.
    log::warning("%s: seccomp_filter = %s: the %s process runs %s", cfg.origin("seccomp_filter").c_str(),
                 mode.c_str(), profile_name(p),
                 mode == "no" ? "without a system-call filter"
                              : "with its system-call filter only logging (the kernel's audit log), not enforcing");
  }
  if (mode == "no") return {};
  const uint32_t deny = mode == "log" ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
  scmp_filter_ctx ctx = seccomp_init(deny);
  if (!ctx) return make_error(ErrorKind::kPerm, "seccomp_init failed");
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};

  // Every thread, not only this one: libuv's pool may already run.
  if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) != 0) return make_error(ErrorKind::kPerm, "seccomp TSYNC failed");
  // A system call of another architecture (i386's int 0x80, x32) kills the whole
  // process, as any refused call does, not only the thread (libseccomp's default).
  if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0) {
    return make_error(ErrorKind::kPerm, "seccomp bad-architecture action failed");
  }
  int count = 0;
  auto add_all = [&](auto& names) {
    for (const char* n : names) {
      if (!add(ctx, n, count)) return false;
    }
    return true;
  };
  bool ok = add_all(kBase);
  if (p != Profile::kLogin) ok = ok && add_all(kFiles);
  if (p == Profile::kMta) ok = ok && add_all(kNet);
#ifdef __SANITIZE_ADDRESS__
  ok = ok && add_all(kSanitizer);
#else
  (void)kSanitizer;
#endif
  // SCMP_A0/SCMP_A1 leave datum_b implicit, which clang's -Wmissing-field-initializers
  // refuses: spell the whole comparison.
  auto eq = [](unsigned arg, scmp_datum_t value) { return scmp_arg_cmp{arg, SCMP_CMP_EQ, value, 0}; };
  auto rule = [&](uint32_t action, int nr, std::initializer_list<scmp_arg_cmp> args) {
    ok = ok && seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(args.size()), args.begin()) == 0;
    if (action == SCMP_ACT_ALLOW) ++count;
  };
#ifndef __SANITIZE_ADDRESS__
  // clone: threads only (libuv's pool, c-ares); a new process has no CLONE_THREAD.
  rule(SCMP_ACT_ALLOW, SCMP_SYS(clone), {scmp_arg_cmp{0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD}});
  // clone3 passes its flags in memory the filter cannot read: ENOSYS makes glibc
  // fall back to clone, which the rule above checks.
  rule(SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), {});
  // ioctl: non-blocking and close-on-exec (libuv), bytes readable, isatty; not a
  // terminal's TIOCSTI or a device's requests. (A fallback ERRNO rule for the same
  // call would override these in libseccomp: the rest kill, like any other call.)
  for (unsigned long req : {FIONBIO, FIOCLEX, FIONCLEX, FIONREAD, TCGETS}) {
    rule(SCMP_ACT_ALLOW, SCMP_SYS(ioctl), {eq(1, req)});
  }
  // prctl: naming threads and reading flags; not PR_SET_DUMPABLE (which would let
  // a same-uid process ptrace this one) or anything else.
  for (int op : {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_GET_NO_NEW_PRIVS}) {
    rule(SCMP_ACT_ALLOW, SCMP_SYS(prctl), {eq(0, static_cast<scmp_datum_t>(op))});
  }
#endif
  // Signals: to itself only (abort(), the crash tests' SIGSTOP), never to a
  // neighbour of the same uid.
  const auto self = static_cast<scmp_datum_t>(::getpid());
  rule(SCMP_ACT_ALLOW, SCMP_SYS(kill), {eq(0, self)});
  rule(SCMP_ACT_ALLOW, SCMP_SYS(tgkill), {eq(0, self)});
  // fcntl: every command but F_SETOWN, F_SETOWN_EX and F_SETSIG, with which (and
  // O_ASYNC) a process makes the kernel signal any process of its uid: a
  // neighbour's SIGKILL (independent review, finding 5).
  for (int cmd : {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW,
                  F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GETOWN, F_GETOWN_EX, F_GETSIG, F_GETPIPE_SZ,
                  F_SETPIPE_SZ, F_GET_SEALS, F_ADD_SEALS, F_GETLEASE}) {
    rule(SCMP_ACT_ALLOW, SCMP_SYS(fcntl), {eq(1, static_cast<scmp_datum_t>(cmd))});
  }
  // prlimit64: this process's own limits (glibc's getrlimit/setrlimit pass 0), not
  // a neighbour's (an open-file limit of 0 for tern-mda).
  rule(SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), {eq(0, 0)});
  rule(SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), {eq(0, self)});
  // open/openat: the login process only reads (its TLS files, /dev/urandom); it
  // never creates, truncates or writes a file, even when it is not chrooted
  // (login_chroot = no, a non-root start). Sanitized builds write their reports
  // to log_path files, so there the login process may open files as the others.
#ifdef __SANITIZE_ADDRESS__
  const bool read_only = false;
#else
  const bool read_only = p == Profile::kLogin;
#endif
  if (read_only) {
    const scmp_datum_t writes = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
    rule(SCMP_ACT_ALLOW, SCMP_SYS(open), {scmp_arg_cmp{1, SCMP_CMP_MASKED_EQ, writes, 0}});
    rule(SCMP_ACT_ALLOW, SCMP_SYS(openat), {scmp_arg_cmp{2, SCMP_CMP_MASKED_EQ, writes, 0}});
  } else {
    rule(SCMP_ACT_ALLOW, SCMP_SYS(open), {});
    rule(SCMP_ACT_ALLOW, SCMP_SYS(openat), {});
  }
  // socket: the login process and the workers only talk over unix sockets.
  rule(SCMP_ACT_ALLOW, SCMP_SYS(socket), {eq(0, AF_UNIX)});
  if (p == Profile::kMta) {
    // TCP and UDP (outbound SMTP, DNS), not raw or ICMP sockets; of netlink only
    // NETLINK_ROUTE (getaddrinfo's AI_ADDRCONFIG), not SOCK_DIAG (every socket on
    // the host), audit or uevents. The type is compared without its flags.
    const scmp_datum_t type_mask = ~static_cast<scmp_datum_t>(SOCK_NONBLOCK | SOCK_CLOEXEC) & 0xffffffffu;
    for (int family : {AF_INET, AF_INET6}) {
      for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
        rule(SCMP_ACT_ALLOW, SCMP_SYS(socket),
             {eq(0, static_cast<scmp_datum_t>(family)),
              scmp_arg_cmp{1, SCMP_CMP_MASKED_EQ, type_mask, static_cast<scmp_datum_t>(type)}});
      }
    }
    rule(SCMP_ACT_ALLOW, SCMP_SYS(socket), {eq(0, AF_NETLINK), eq(2, NETLINK_ROUTE)});
  }
  if (!ok) return make_error(ErrorKind::kPerm, "seccomp_rule_add failed");
  if (int rc = seccomp_load(ctx); rc != 0) return errno_error("seccomp_load", -rc);
  log::debug("sandbox: %s filter (%s), %d system calls", profile_name(p), mode.c_str(), count);
  return {};
}

}  // namespace tern::common::sandbox
