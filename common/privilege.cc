#include "common/privilege.h"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <vector>

#include "common/config.h"
#include "common/sockets.h"
#include "common/text.h"

namespace tern::common {
namespace {

Result<UserIds> from_passwd(const std::string& what, struct passwd* pw, int rc) {
  if (!pw) {
    if (rc == 0) return make_error(ErrorKind::kNotFound, "no such user: " + what);
    return errno_error("getpwnam " + what, rc);
  }
  UserIds u;
  u.name = pw->pw_name;
  u.uid = pw->pw_uid;
  u.gid = pw->pw_gid;
  u.home = pw->pw_dir ? pw->pw_dir : "";
  u.shell = pw->pw_shell ? pw->pw_shell : "";
  return u;
}

}  // namespace

Result<UserIds> lookup_user(const std::string& name_or_uid) {
  if (std::optional<uint64_t> n = parse_u64(name_or_uid); n) return lookup_uid(static_cast<uid_t>(*n));
  std::vector<char> buf(16384);
  struct passwd pwd, *pw = nullptr;
  int rc = ::getpwnam_r(name_or_uid.c_str(), &pwd, buf.data(), buf.size(), &pw);
  return from_passwd(name_or_uid, pw, rc);
}

Result<UserIds> lookup_uid(uid_t uid) {
  std::vector<char> buf(16384);
  struct passwd pwd, *pw = nullptr;
  int rc = ::getpwuid_r(uid, &pwd, buf.data(), buf.size(), &pw);
  return from_passwd("uid " + std::to_string(uid), pw, rc);
}

Result<gid_t> lookup_group(const std::string& name_or_gid) {
  if (std::optional<uint64_t> n = parse_u64(name_or_gid); n) return static_cast<gid_t>(*n);
  std::vector<char> buf(16384);
  struct group grp, *g = nullptr;
  int rc = ::getgrnam_r(name_or_gid.c_str(), &grp, buf.data(), buf.size(), &g);
  if (!g) {
    if (rc == 0) return make_error(ErrorKind::kNotFound, "no such group: " + name_or_gid);
    return errno_error("getgrnam " + name_or_gid, rc);
  }
  return g->gr_gid;
}

UserIds current_user() {
  Result<UserIds> u = lookup_uid(::geteuid());
  if (u) return *u;
  UserIds x;
  x.name = std::to_string(::geteuid());
  x.uid = ::geteuid();
  x.gid = ::getegid();
  return x;
}

namespace {

// In a forked child: becomes `uid` for good or exits.
void become_or_exit(uid_t uid) {
  Result<UserIds> u = lookup_uid(uid);
  if (!u || !drop_privileges(*u, u->gid)) ::_exit(111);
}

Status reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return errno_error("waitpid", errno);
  }
  return {};
}

}  // namespace

Result<UniqueFd> open_as(const std::string& path, int flags, uid_t uid) {
  if (::geteuid() != 0 || uid == ::geteuid()) {
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
    if (!fd) return errno_error("open " + path, errno);
    return fd;
  }
  if (uid == 0) return make_error(ErrorKind::kDenied, "open " + path + ": refusing to open as root for a user");
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return errno_error("socketpair", errno);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork", errno);
  if (pid == 0) {
    ours.reset();
    become_or_exit(uid);
    UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
    const int err = fd ? 0 : errno;
    (void)net::send_fd(theirs.get(), fd.get(), std::to_string(err));
    ::_exit(0);
  }
  theirs.reset();
  Result<std::pair<std::string, UniqueFd>> got = net::recv_fd(ours.get(), 64);
  if (Status r = reap(pid); !r) return r.take_error();
  if (!got || got->first.empty()) {
    return make_error(ErrorKind::kTemp, "open " + path + " as uid " + std::to_string(uid) + ": the child died");
  }
  if (got->first != "0" || !got->second) {
    const int err = static_cast<int>(parse_u64(got->first).value_or(EIO));
    return errno_error("open " + path + " as uid " + std::to_string(uid), err ? err : EIO);
  }
  return std::move(got->second);
}

Result<std::string> run_as(uid_t uid, const std::function<Result<std::string>()>& fn, size_t max_reply) {
  if (::geteuid() != 0 || uid == ::geteuid()) return fn();
  if (uid == 0) return make_error(ErrorKind::kDenied, "refusing to run as root for a user");
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) < 0) return errno_error("pipe", errno);
  UniqueFd rd(pfd[0]), wr(pfd[1]);
  pid_t pid = ::fork();
  if (pid < 0) return errno_error("fork", errno);
  if (pid == 0) {
    rd.reset();
    become_or_exit(uid);
    Result<std::string> r = fn();
    // "O" and the answer, or "E", the error kind and its message.
    std::string out = r ? "O" + *r : "E" + std::to_string(static_cast<int>(r.error().kind)) + " " + r.error().message;
    for (size_t off = 0; off < out.size();) {
      ssize_t n = ::write(wr.get(), out.data() + off, out.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  wr.reset();
  std::string got;
  char buf[4096];
  bool too_long = false;
  for (;;) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() > max_reply + 64) {
      too_long = true;
      ::kill(pid, SIGKILL);
      break;
    }
  }
  if (Status r = reap(pid); !r) return r.take_error();
  const std::string who = "the process reading as uid " + std::to_string(uid);
  if (too_long) return make_error(ErrorKind::kTemp, who + " answered more than " + std::to_string(max_reply) + " bytes");
  if (got.empty()) return make_error(ErrorKind::kTemp, who + " died without an answer");
  if (got[0] == 'O') {
    if (got.size() - 1 > max_reply) return make_error(ErrorKind::kTemp, who + " answered too much");
    return got.substr(1);
  }
  const size_t sp = got.find(' ');
  std::optional<uint64_t> kind = parse_u64(std::string_view(got).substr(1, sp == std::string::npos ? 0 : sp - 1));
  if (got[0] != 'E' || !kind || sp == std::string::npos || *kind > static_cast<uint64_t>(ErrorKind::kMapFull)) {
    return make_error(ErrorKind::kTemp, who + ": malformed answer");
  }
  return make_error(static_cast<ErrorKind>(*kind), got.substr(sp + 1));
}

Status drop_saved_gid() {
  gid_t r = 0, e = 0, sv = 0;
  if (::getresgid(&r, &e, &sv) < 0) return errno_error("getresgid", errno);
  if (r == e && sv == e) return {};
  if (::setresgid(e, e, e) < 0) return errno_error("setresgid", errno);
  if (::getresgid(&r, &e, &sv) < 0 || r != e || sv != e) {
    return make_error(ErrorKind::kDenied, "dropping the saved group failed: ids are not the user's");
  }
  return {};
}

Status drop_privileges(const UserIds& user, gid_t gid) {
  if (user.uid == 0) return make_error(ErrorKind::kDenied, "refusing to drop privileges to root");
  const bool was_root = ::geteuid() == 0;
  if (was_root) {
    if (::setgroups(1, &gid) < 0) return errno_error("setgroups", errno);
    if (::setresgid(gid, gid, gid) < 0) return errno_error("setgid " + std::to_string(gid), errno);
    if (::setresuid(user.uid, user.uid, user.uid) < 0) return errno_error("setuid " + user.name, errno);
  } else if (::geteuid() != user.uid) {
    return make_error(ErrorKind::kDenied, "running as uid " + std::to_string(::geteuid()) + ", cannot become " +
                                              user.name + " (uid " + std::to_string(user.uid) + ") without root");
  }
  // Verify: every id is the target, and root cannot come back.
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  ::getresuid(&ru, &eu, &su);
  ::getresgid(&rg, &eg, &sg);
  if (ru != user.uid || eu != user.uid || su != user.uid) {
    return make_error(ErrorKind::kDenied, "privilege drop failed: uid is still " + std::to_string(eu));
  }
  if (was_root && (rg != gid || eg != gid || sg != gid)) {
    return make_error(ErrorKind::kDenied, "privilege drop failed: gid is still " + std::to_string(eg));
  }
  if (::setuid(0) == 0 || ::seteuid(0) == 0) {
    return make_error(ErrorKind::kDenied, "privilege drop failed: root can be regained");
  }
  return {};
}

// close_range(2) where the kernel has it (5.9), else the fds /proc/self/fd lists.
void close_fds_except(std::vector<int> keep) {
  keep.insert(keep.end(), {0, 1, 2});
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  unsigned lo = 0;
  bool ok = true;
  for (int k : keep) {
    if (k < 0) continue;
    const unsigned u = static_cast<unsigned>(k);
    if (u > lo && ::close_range(lo, u - 1, 0) < 0) ok = false;
    lo = u + 1;
  }
  if (ok && ::close_range(lo, ~0u, 0) == 0) return;
  std::vector<int> open;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      std::optional<uint64_t> n = parse_u64(e->d_name);
      if (n && static_cast<int>(*n) != ::dirfd(d)) open.push_back(static_cast<int>(*n));
    }
    ::closedir(d);
  } else {
    const long max = ::sysconf(_SC_OPEN_MAX);
    for (int fd = 0; fd < (max > 0 ? max : 1024); ++fd) open.push_back(fd);
  }
  for (int fd : open) {
    if (!std::binary_search(keep.begin(), keep.end(), fd)) ::close(fd);
  }
}

ValidIds ValidIds::from_config(const Config& cfg) {
  ValidIds v;
  v.first_uid = static_cast<uint64_t>(cfg.integer("first_valid_uid"));
  v.last_uid = static_cast<uint64_t>(cfg.integer("last_valid_uid"));
  v.first_gid = static_cast<uint64_t>(cfg.integer("first_valid_gid"));
  v.last_gid = static_cast<uint64_t>(cfg.integer("last_valid_gid"));
  return v;
}

std::string ValidIds::refuse(uint64_t uid, uint64_t gid) const {
  auto range = [](uint64_t first, uint64_t last) {
    return "(" + std::to_string(first) + ".." + (last ? std::to_string(last) : std::string()) + ")";
  };
  if (uid == 0) return "uid 0 is root";
  if (uid < first_uid || (last_uid && uid > last_uid)) {
    return "uid " + std::to_string(uid) + " is outside first_valid_uid..last_valid_uid " + range(first_uid, last_uid);
  }
  if (gid == 0) return "gid 0 is root's group";
  if (gid < first_gid || (last_gid && gid > last_gid)) {
    return "gid " + std::to_string(gid) + " is outside first_valid_gid..last_valid_gid " + range(first_gid, last_gid);
  }
  return "";
}

Status restrict_core_dumps(bool allow) {
  if (allow) {
    if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) return errno_error("prctl(PR_SET_DUMPABLE, 1)", errno);
    return {};
  }
  const struct rlimit none{0, 0};
  if (::setrlimit(RLIMIT_CORE, &none) < 0) return errno_error("setrlimit(RLIMIT_CORE, 0)", errno);
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) return errno_error("prctl(PR_SET_DUMPABLE, 0)", errno);
  return {};
}

}  // namespace tern::common
