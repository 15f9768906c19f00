#include "authd/worker.h"

#include <poll.h>
#include <security/pam_appl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/auth_protocol.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/sockets.h"
#include "common/text.h"

namespace tern::authd {

using common::ErrorKind;
namespace ap = common::auth_protocol;

namespace {

// Per-request timeout on tern-authd's side: PAM's own failure delay is 2 s; a worker
// child stuck longer than this is treated as down for that request.
constexpr int kCallTimeoutMs = 30000;
constexpr size_t kMaxReply = 4096;

bool write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads up to the first LF (bounded), with a deadline.
bool read_line(int fd, std::string& out, int timeout_ms, size_t max) {
  out.clear();
  char buf[512];
  while (out.find('\n') == std::string::npos) {
    if (out.size() > max) return false;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    out.append(buf, static_cast<size_t>(n));
  }
  out.resize(out.find('\n'));
  return true;
}

WorkerReply parse_reply(const std::string& line) {
  WorkerReply r;
  ap::ParsedLine p = ap::parse_line(line);
  if (!p.ok) {
    r.detail = "malformed reply from auth worker";
    return r;
  }
  const auto& a = p.line.args;
  if (p.line.command == "OK" && a.size() == 4) {
    std::optional<uint64_t> uid = common::parse_u64(a[1]), gid = common::parse_u64(a[2]);
    if (!uid || !gid) {
      r.detail = "malformed OK from auth worker";
      return r;
    }
    r.status = WorkerReply::Status::kOk;
    r.user = a[0];
    r.uid = static_cast<uid_t>(*uid);
    r.gid = static_cast<gid_t>(*gid);
    r.home = a[3];
  } else if (p.line.command == "FAIL") {
    r.status = WorkerReply::Status::kFail;
    r.detail = a.empty() ? "" : a[0];
  } else if (p.line.command == "NOTFOUND") {
    r.status = WorkerReply::Status::kNotFound;
    r.detail = a.empty() ? "" : a[0];
  } else {
    r.status = WorkerReply::Status::kTemp;
    r.detail = a.empty() ? "auth worker failed" : a[0];
  }
  return r;
}

// ---- the worker process ----------------------------------------------------------

struct PamData {
  const std::string* user;
  const std::string* password;
};

int conversation(int n, const pam_message** msg, pam_response** resp, void* appdata) {
  auto* d = static_cast<PamData*>(appdata);
  if (n <= 0 || n > PAM_MAX_NUM_MSG) return PAM_CONV_ERR;
  auto* r = static_cast<pam_response*>(std::calloc(static_cast<size_t>(n), sizeof(pam_response)));
  if (!r) return PAM_BUF_ERR;
  for (int i = 0; i < n; ++i) {
    switch (msg[i]->msg_style) {
      case PAM_PROMPT_ECHO_OFF: r[i].resp = ::strdup(d->password->c_str()); break;
      case PAM_PROMPT_ECHO_ON: r[i].resp = ::strdup(d->user->c_str()); break;
      case PAM_ERROR_MSG:
      case PAM_TEXT_INFO: break;
      default:
        for (int j = 0; j < i; ++j) std::free(r[j].resp);
        std::free(r);
        return PAM_CONV_ERR;
    }
  }
  *resp = r;
  return PAM_SUCCESS;
}

std::string user_reply(const common::UserIds& u, const WorkerSettings& s) {
  if (std::string why = s.ids.refuse(u.uid, u.gid); !why.empty()) return ap::make_line({"NOTFOUND", why});
  return ap::make_line({"OK", u.name, std::to_string(u.uid), std::to_string(u.gid), u.home});
}

std::string handle(const std::string& line, const WorkerSettings& s) {
  ap::ParsedLine p = ap::parse_line(line);
  if (!p.ok) return ap::make_line({"TEMP", "malformed request"});
  const auto& a = p.line.args;
  if (p.line.command == "PASSWD" && a.size() == 1) {
    if (!ap::valid_user_name(a[0])) return ap::make_line({"NOTFOUND"});
    common::Result<common::UserIds> u = common::lookup_user(a[0]);
    if (!u) return u.error().kind == ErrorKind::kNotFound ? ap::make_line({"NOTFOUND"}) : ap::make_line({"TEMP", u.error().message});
    return user_reply(*u, s);
  }
  if (p.line.command == "PAM" && a.size() == 4) {
    const std::string& user = a[0];
    if (!ap::valid_user_name(user) || user.find('@') != std::string::npos) return ap::make_line({"NOTFOUND"});
    // Refuse numeric names: getpwnam("0") is not root, but lookup_user() would be.
    if (common::parse_u64(user)) return ap::make_line({"NOTFOUND"});
    common::Result<common::UserIds> u = common::lookup_user(user);
    if (!u) return u.error().kind == ErrorKind::kNotFound ? ap::make_line({"NOTFOUND"}) : ap::make_line({"TEMP", u.error().message});
    if (!s.ids.refuse(u->uid, u->gid).empty()) return user_reply(*u, s);
    PamData d{&user, &a[1]};
    pam_conv conv{conversation, &d};
    pam_handle_t* h = nullptr;
    int rc = pam_start(s.pam_service.c_str(), user.c_str(), &conv, &h);
    if (rc != PAM_SUCCESS) return ap::make_line({"TEMP", std::string("pam_start: ") + pam_strerror(h, rc)});
    pam_set_item(h, PAM_RHOST, a[3].c_str());
    pam_set_item(h, PAM_SERVICE, s.pam_service.c_str());
    rc = pam_authenticate(h, PAM_DISALLOW_NULL_AUTHTOK);
    std::string why;
    if (rc == PAM_SUCCESS) {
      rc = pam_acct_mgmt(h, PAM_DISALLOW_NULL_AUTHTOK);
      if (rc != PAM_SUCCESS) why = std::string("pam_acct_mgmt() failed: ") + pam_strerror(h, rc);
    } else {
      why = std::string("pam_authenticate() failed: ") + pam_strerror(h, rc);
    }
    bool temp = rc == PAM_AUTHINFO_UNAVAIL || rc == PAM_SYSTEM_ERR || rc == PAM_BUF_ERR;
    pam_end(h, rc);
    if (rc == PAM_SUCCESS) return user_reply(*u, s);
    return ap::make_line({temp ? "TEMP" : "FAIL", why});
  }
  return ap::make_line({"TEMP", "unknown request"});
}

}  // namespace

[[noreturn]] void worker_main(int control_fd, const WorkerSettings& s) {
  common::log::Options o = common::log::options();
  o.service = "auth-worker";
  common::log::init(o);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  // It never accepts a client: a compromised PAM module or NSS plugin (running as
  // root here) must not be able to take connections from tern-authd's sockets.
  for (int fd : s.close_fds) ::close(fd);
  ::signal(SIGCHLD, SIG_DFL);
  ::signal(SIGPIPE, SIG_IGN);
  if (!s.run_as.empty() && s.run_as != "root" && ::geteuid() == 0) {
    common::Result<common::UserIds> u = common::lookup_user(s.run_as);
    if (!u) common::log::fatal("auth_worker_user = %s: %s", s.run_as.c_str(), u.error().message.c_str());
    if (common::Status st = common::drop_privileges(*u, u->gid); !st) common::log::fatal("%s", st.error().message.c_str());
  }
  // Its memory holds the passwords it checks (and what PAM read from /etc/shadow).
  if (common::Status st = common::restrict_core_dumps(s.core_dumps); !st) common::log::fatal("%s", st.error().message.c_str());
  unsigned children = 0;
  for (;;) {
    // Reap finished children without blocking.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      if (children) --children;
    }
    pollfd p{control_fd, POLLIN, 0};
    int r = ::poll(&p, 1, 200);  // wake now and then to reap
    if (r < 0 && errno != EINTR) ::_exit(1);
    if (r <= 0) continue;
    common::Result<std::pair<std::string, common::UniqueFd>> got = common::net::recv_fd(control_fd, 16);
    if (!got) ::_exit(0);  // tern-authd went away
    common::UniqueFd req = std::move(got->second);
    if (!req) continue;
    if (children >= s.max_children) {
      // Answer without forking: the caller's line is still unread, which is fine.
      (void)write_all(req.get(), ap::make_line({"TEMP", "too many auth worker processes (auth_worker_max_count)"}));
      continue;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
      (void)write_all(req.get(), ap::make_line({"TEMP", std::string("fork: ") + std::strerror(errno)}));
      continue;
    }
    if (pid == 0) {
      ::close(control_fd);
      std::string line;
      std::string reply = read_line(req.get(), line, kCallTimeoutMs, ap::kMaxLineLength)
                              ? handle(line, s)
                              : ap::make_line({"TEMP", "no request"});
      std::memset(line.data(), 0, line.size());
      (void)write_all(req.get(), reply);
      ::_exit(0);
    }
    ++children;
  }
}

common::Result<std::unique_ptr<WorkerClient>> WorkerClient::start(const WorkerSettings& settings) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return common::errno_error("socketpair", errno);
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return common::errno_error("fork auth worker", e);
  }
  if (pid == 0) {
    ::close(sv[0]);
    worker_main(sv[1], settings);
  }
  ::close(sv[1]);
  std::unique_ptr<WorkerClient> c(new WorkerClient);
  c->control_.reset(sv[0]);
  c->pid_ = pid;
  common::log::info("auth worker started (pid %d, service %s)", static_cast<int>(pid), settings.pam_service.c_str());
  return c;
}

WorkerClient::~WorkerClient() {
  control_.reset();  // EOF: the worker exits
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
}

WorkerReply WorkerClient::call(const std::string& request) {
  WorkerReply fail;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    fail.detail = std::string("socketpair: ") + std::strerror(errno);
    return fail;
  }
  common::UniqueFd mine(sv[0]), theirs(sv[1]);
  {
    std::lock_guard<std::mutex> g(send_mu_);
    if (common::Status s = common::net::send_fd(control_.get(), theirs.get(), "R"); !s) {
      fail.detail = "auth worker unavailable: " + s.error().message;
      return fail;
    }
  }
  theirs.reset();
  if (!write_all(mine.get(), request)) {
    fail.detail = "auth worker did not take the request";
    return fail;
  }
  std::string line;
  if (!read_line(mine.get(), line, kCallTimeoutMs, kMaxReply)) {
    fail.detail = "no answer from the auth worker";
    return fail;
  }
  return parse_reply(line);
}

WorkerReply WorkerClient::pam(const std::string& user, const std::string& password, const std::string& service,
                              const std::string& rip) {
  std::string req = ap::make_line({"PAM", user, password, service, rip});
  WorkerReply r = call(req);
  std::memset(req.data(), 0, req.size());
  return r;
}

WorkerReply WorkerClient::passwd(const std::string& user) { return call(ap::make_line({"PASSWD", user})); }

}  // namespace tern::authd
