// tern-mra-postlogin - creates tern-mra's session workers with the mail owner's uid
//
// The login process (tern-mra, default_login_user) authenticates clients through
// tern-authd and then hands each logged-in connection here, on the UNIX socket
// $base_dir/mra-postlogin (mode 0600, owned by default_login_user; the peer's uid is
// checked again with SO_PEERCRED). For each hand-over this process
//   1. asks tern-authd who logged in: auth-userdb REQUEST with the auth request id
//      and the login process's auth-client pid and cookie (Dovecot's post-login
//      protocol). The user, uid, gid, home and mail location all come from
//      tern-authd's answer; the login process only passes the request id, so even a
//      compromised login process cannot open anyone's mail without that user's
//      password having been checked by tern-authd;
//   2. refuses uid 0, gid 0, and ids outside first_valid_uid..last_valid_uid and
//      first_valid_gid..last_valid_gid, and enforces
//      mail_max_userip_connections and mail_max_user_connections;
//   3. passes the connection to a session worker running as that uid and gid: the
//      least busy of that uid's workers with room (mra_worker_client_limit sessions
//      each), or a new one while the uid has fewer than mra_workers_per_uid (one per
//      CPU by default: a worker is one loop on one core, and virtual users, who share
//      mail_uid, would otherwise all share one core), forked here,
//      switched to the uid/gid for good (setgroups, setresgid, setresuid, verified)
//      and exec'ed as `tern-mra --worker`.
// Workers report DONE per session; a worker that dies takes only its own sessions
// with it, and the next login gets a new one.
//
// TRUST     The login process is less trusted than we are: its request is a bounded,
//           strictly parsed packet, and its word is taken for nothing but the auth
//           request id (and the client addresses for the log). The client's bytes
//           pass through opaquely to the worker; nothing here parses them.
// PRIVILEGE Runs as root, the only tern-mra process that does (DESIGN.md 2): creating
//           a process with an arbitrary user's uid needs it, as Dovecot's master
//           needs it for its mail processes. It never touches the network or a
//           mailbox, and only root's own sockets (auth-userdb, mra-postlogin).
//           tern-master starts it as root by an explicit exception for this service
//           alone. Started without root (the development default) it can only start
//           workers with its own uid and refuses users with another.
// STANDARDS Dovecot's login/post-login split (auth-master REQUEST).
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "common/auth_client.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/sockets.h"
#include "common/text.h"
#include "mra/handoff.h"

namespace {

using namespace tern;
using common::ErrorKind;
using common::Result;
using common::Status;
using common::UniqueFd;
namespace handoff = mra::handoff;

// How long a worker with no sessions is kept for the next login (it costs a few
// hundred KiB; exec'ing a new one costs milliseconds).
constexpr uint64_t kWorkerLinger = 60000;
// How long a login process may take to send its request.
constexpr uint64_t kRequestTimeout = 10000;
// How long a stop waits for the workers to end their sessions (within the master's
// master_stop_timeout, 10 s by default).
constexpr uint64_t kStopGrace = 5000;

common::log::Channel g_log("mra-postlogin");

struct Worker {
  uint64_t id = 0;
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  UniqueFd sock;  // SOCK_SEQPACKET to the worker
  std::unique_ptr<common::ev::FdWatch> watch;
  std::unique_ptr<common::ev::Timer> linger;
  size_t sessions = 0;
};

struct SessionRef {
  uint64_t worker = 0;
  std::string user_ip;  // "user\trip" for mail_max_userip_connections
  std::string user;     // for mail_max_user_connections
};

class Postlogin {
 public:
  explicit Postlogin(common::DaemonContext& ctx) : ctx_(ctx), cfg_(ctx.config) {
    userdb_ = std::make_unique<common::auth::UserdbClient>(
        *ctx.loop, common::auth::UserdbClient::Options{cfg_.str("base_dir") + "/auth-userdb", 5000, 30000});
    if (::geteuid() == 0) {
      Result<common::UserIds> login = common::lookup_user(cfg_.str("default_login_user"));
      if (login) login_uid_ = login->uid;
    } else {
      login_uid_ = ::geteuid();
    }
    sigchld_ = std::make_unique<common::ev::Signal>(*ctx.loop);
    sigchld_->start(SIGCHLD, [this] { reap(); });
  }

  ~Postlogin() {
    for (auto& [id, w] : workers_) {
      if (w->pid > 0) ::kill(w->pid, SIGTERM);
    }
  }

  void listen(int fd) {
    auto l = std::make_unique<common::net::Listener>(*ctx_.loop, UniqueFd(::dup(fd)), "mra-postlogin");
    l->start([this](UniqueFd c) { accept(std::move(c)); });
    listeners_.push_back(std::move(l));
  }

  // Stops taking logins and asks every worker to end its sessions (each says
  // "Server shutting down." in its protocol); `done` runs once they have all exited,
  // or after kStopGrace, when the ones left are killed.
  void stop(std::function<void()> done) {
    listeners_.clear();
    stopped_ = std::move(done);
    for (pid_t pid : children_) ::kill(pid, SIGTERM);
    stop_timer_ = std::make_unique<common::ev::Timer>(*ctx_.loop);
    stop_timer_->start(kStopGrace, [this] {
      for (pid_t pid : children_) {
        g_log.warning("session worker pid=%d did not stop in time -- killing it", static_cast<int>(pid));
        ::kill(pid, SIGKILL);
      }
      children_.clear();
      maybe_stopped();
    });
    maybe_stopped();
  }

 private:
  // One login process's request in progress.
  struct Request {
    UniqueFd sock;
    std::unique_ptr<common::ev::FdWatch> watch;
    std::unique_ptr<common::ev::Timer> timer;
    std::string data;
    std::optional<size_t> want;
    UniqueFd client;
    bool done = false;
  };

  void accept(UniqueFd fd) {
    common::net::PeerInfo peer = common::net::peer_info(fd.get());
    if (!peer.has_creds || (peer.uid != login_uid_ && peer.uid != 0)) {
      g_log.warning("connection on mra-postlogin from uid %d refused (only default_login_user may hand over logins)",
                    static_cast<int>(peer.uid));
      return;
    }
    auto r = std::make_shared<Request>();
    r->sock = std::move(fd);
    r->watch = std::make_unique<common::ev::FdWatch>(*ctx_.loop, r->sock.get());
    r->timer = std::make_unique<common::ev::Timer>(*ctx_.loop);
    requests_.push_back(r);
    std::weak_ptr<Request> weak = r;
    r->timer->start(kRequestTimeout, [this, weak] {
      if (auto r = weak.lock()) finish(r);
    });
    r->watch->start(UV_READABLE, [this, weak](int, int) {
      if (auto r = weak.lock()) on_readable(r);
    });
  }

  using ReqIt = std::shared_ptr<Request>;

  void finish(ReqIt r) {
    if (r->done) return;
    r->done = true;
    r->watch->stop();
    r->timer->stop();
    requests_.remove(r);
    // Handles are closed by their owners' destructors; defer past this callback.
    ctx_.loop->post([r] {});
  }

  void on_readable(ReqIt it) {
    std::shared_ptr<Request> r = it;
    const size_t room = handoff::kMaxPacket + 4 - r->data.size();
    Result<std::pair<std::string, UniqueFd>> got = common::net::recv_fd(r->sock.get(), room);
    if (!got) {
      finish(it);
      return;
    }
    if (got->second) {
      if (r->client || !r->data.empty()) {  // one fd, with the first bytes only
        g_log.error("login process sent more than one descriptor; closing");
        finish(it);
        return;
      }
      r->client = std::move(got->second);
    }
    r->data += got->first;
    if (!r->want && r->data.size() >= 4) {
      r->want = handoff::frame_length(r->data);
      if (!r->want) {
        g_log.error("login process sent a malformed request; closing");
        finish(it);
        return;
      }
    }
    if (!r->want || r->data.size() < *r->want + 4) return;
    if (r->data.size() > *r->want + 4) {
      g_log.error("login process sent more than one request; closing");
      finish(it);
      return;
    }
    r->watch->stop();
    std::optional<handoff::Packet> p = handoff::decode(std::string_view(r->data).substr(4));
    if (!p || p->verb != "LOGIN" || !r->client) {
      g_log.error("login process sent a malformed request; closing");
      finish(it);
      return;
    }
    handle(it, std::move(*p));
  }

  void reply(ReqIt it, const std::string& packet) {
    std::string f = handoff::frame(packet);
    (void)!::send(it->sock.get(), f.data(), f.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    finish(it);
  }

  void fail(ReqIt it, const std::string& kind, const std::string& text) {
    reply(it, handoff::encode("FAIL", {{"kind", kind}, {"text", text}}));
  }

  void handle(ReqIt it, handoff::Packet p) {
    std::optional<uint64_t> auth_id = common::parse_u64(p.get("auth_id"));
    std::optional<uint64_t> auth_pid = common::parse_u64(p.get("auth_pid"));
    const std::string cookie = p.get("cookie");
    if (!auth_id || !auth_pid || *auth_id > UINT32_MAX || *auth_pid > UINT32_MAX || cookie.size() != 32) {
      g_log.error("login process sent a request without a valid auth id, pid or cookie; closing");
      finish(it);
      return;
    }
    userdb_->request(static_cast<uint32_t>(*auth_pid), static_cast<uint32_t>(*auth_id), cookie,
                     [this, it, p = std::move(p)](Result<common::auth::UserInfo> u) mutable {
                       if (it->done) return;
                       if (!u) {
                         // NOTFOUND to a REQUEST: no finished login with that id, pid
                         // and cookie (forged, replayed or expired), not a missing user.
                         g_log.warning("REQUEST for auth id %s: %s", p.get("auth_id").c_str(),
                                       u.error().kind == ErrorKind::kNotFound
                                           ? "tern-authd knows no finished login with that id, pid and cookie"
                                           : u.error().message.c_str());
                         fail(it, "temp", "tern-authd did not confirm the login");
                         return;
                       }
                       start_session(it, p, *u);
                     });
  }

  void start_session(ReqIt it, const handoff::Packet& p, const common::auth::UserInfo& u) {
    // Who the user is: tern-authd's answer, not the login process's word.
    uid_t uid;
    gid_t gid;
    if (u.uid) {
      uid = *u.uid;
      gid = u.gid ? *u.gid : static_cast<gid_t>(*u.uid);
    } else {
      Result<common::UserIds> vu = common::lookup_user(cfg_.str("mail_uid"));
      Result<gid_t> vg = common::lookup_group(cfg_.str("mail_gid"));
      if (!vu || !vg) {
        g_log.error("user %s: no uid in the userdb and mail_uid/mail_gid cannot be resolved",
                    common::log_escape(u.user).c_str());
        fail(it, "temp", "no uid");
        return;
      }
      uid = vu->uid;
      gid = *vg;
    }
    // gid 0 from the userdb is refused like uid 0: a session worker in root's group
    // could read whatever that group can.
    if (std::string why = common::ValidIds::from_config(cfg_).refuse(uid, gid); !why.empty()) {
      g_log.error("user %s: %s: login refused", common::log_escape(u.user).c_str(), why.c_str());
      fail(it, "temp", "invalid uid or gid");
      return;
    }
    if (::geteuid() != 0 && uid != ::geteuid()) {
      g_log.error("user %s has uid %u, but tern-mra-postlogin runs without root as uid %u and can start workers only "
                  "as itself",
                  common::log_escape(u.user).c_str(), static_cast<unsigned>(uid), static_cast<unsigned>(::geteuid()));
      fail(it, "temp", "cannot switch uid");
      return;
    }
    // mail_max_userip_connections (Dovecot): per user and client IP.
    const std::string user_ip = u.user + "\t" + p.get("rip");
    const uint64_t limit = static_cast<uint64_t>(cfg_.integer("mail_max_userip_connections"));
    // (Counted with find(): a refused login leaves no empty entry behind.)
    auto count = [](const std::map<std::string, uint64_t>& m, const std::string& k) {
      auto c = m.find(k);
      return c == m.end() ? uint64_t{0} : c->second;
    };
    if (count(userip_, user_ip) >= limit) {
      fail(it, "limit", "Maximum number of connections from user+IP exceeded (mail_max_userip_connections=" +
                            std::to_string(limit) + ")");
      return;
    }
    // mail_max_user_connections: per user, all client IPs together.
    const uint64_t user_limit = static_cast<uint64_t>(cfg_.integer("mail_max_user_connections"));
    if (count(user_conns_, u.user) >= user_limit) {
      fail(it, "limit", "Maximum number of connections for user exceeded (mail_max_user_connections=" +
                            std::to_string(user_limit) + ")");
      return;
    }
    Worker* w = worker_for(uid, gid);
    if (!w) {
      fail(it, "temp", "cannot start a session worker");
      return;
    }
    const uint64_t sid = ++next_session_;
    handoff::Fields f;
    for (const char* k : {"proto", "rip", "rport", "lip", "lport", "tls", "buffered", "tag", "ok", "method"}) {
      f[k] = p.get(k);
    }
    f["id"] = std::to_string(sid);
    f["user"] = u.user;
    f["home"] = u.home;
    f["mail"] = u.mail;
    f["quota_rule"] = u.quota_rule;
    std::string packet = handoff::encode("SESSION", f);
    if (Status s = common::net::send_fd(w->sock.get(), it->client.get(), packet); !s) {
      g_log.error("worker %d: %s", static_cast<int>(w->pid), s.error().message.c_str());
      fail(it, "temp", "worker unavailable");
      return;
    }
    ++w->sessions;
    w->linger->stop();
    ++userip_[user_ip];
    ++user_conns_[u.user];
    sessions_[sid] = SessionRef{w->id, user_ip, u.user};
    reply(it, handoff::encode("OK", {{"pid", std::to_string(w->pid)}, {"user", u.user}}));
  }

  // The worker for a new session of this uid: the least busy of its workers, but a
  // new one while the uid has fewer than mra_workers_per_uid and none is idle. One
  // worker's loop runs on one core, and virtual users all share one uid: with a
  // single worker, 20 busy clients of a 2-core machine would get one core.
  Worker* worker_for(uid_t uid, gid_t gid) {
    const size_t limit = static_cast<size_t>(cfg_.integer("mra_worker_client_limit"));
    size_t spread = static_cast<size_t>(cfg_.integer("mra_workers_per_uid"));
    if (spread == 0) {
      long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
      spread = cpus > 0 ? static_cast<size_t>(cpus) : 1;
    }
    Worker* best = nullptr;
    size_t count = 0;
    for (auto& [id, w] : workers_) {
      if (w->uid != uid || w->gid != gid) continue;
      ++count;
      if (w->sessions < limit && (!best || w->sessions < best->sessions)) best = w.get();
    }
    if (best && (best->sessions == 0 || count >= spread)) return best;
    return spawn(uid, gid);
  }

  Worker* spawn(uid_t uid, gid_t gid) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
      g_log.error("socketpair: %s", std::strerror(errno));
      return nullptr;
    }
    UniqueFd ours(sv[0]), theirs(sv[1]);
    // Everything the child needs is built before fork.
    const std::string binary = cfg_.str("daemon_directory") + "/tern-mra";
    std::vector<std::string> args = {binary, "--worker", "-c", ctx_.config_path};
    for (const std::string& o : ctx_.overrides) {
      args.push_back("-o");
      args.push_back(o);
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = {"TERN_MRA_WORKER_FD=3", "TERN_CONFIG=" + ctx_.config_path};
    for (const char* keep : {"PATH", "TZ", "LANG", "LC_ALL", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                             "TERN_FAULT_DIR", "TERN_FAULT_ACTION"}) {
      if (const char* v = std::getenv(keep)) env.push_back(std::string(keep) + "=" + v);
    }
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const bool root = ::geteuid() == 0;
    const int child_fd = theirs.get();

    pid_t pid = ::fork();
    if (pid < 0) {
      g_log.error("fork: %s", std::strerror(errno));
      return nullptr;
    }
    if (pid == 0) {
      // The child: only async-signal-safe calls until exec.
      if (::dup2(child_fd, 3) < 0) ::_exit(71);
      ::close_range(4, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      if (root) {
        if (::setgroups(1, &gid) < 0 || ::setresgid(gid, gid, gid) < 0 || ::setresuid(uid, uid, uid) < 0) ::_exit(77);
        uid_t ru, eu, su;
        ::getresuid(&ru, &eu, &su);
        if (ru != uid || eu != uid || su != uid || ::setuid(0) == 0) ::_exit(77);
      }
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // after the uid change, which clears it
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(126);
    }
    theirs.reset();
    children_.insert(pid);
    auto w = std::make_unique<Worker>();
    w->id = ++next_worker_;
    w->pid = pid;
    w->uid = uid;
    w->gid = gid;
    w->sock = std::move(ours);
    w->watch = std::make_unique<common::ev::FdWatch>(*ctx_.loop, w->sock.get());
    w->linger = std::make_unique<common::ev::Timer>(*ctx_.loop);
    const uint64_t id = w->id;
    w->watch->start(UV_READABLE, [this, id](int, int) { on_worker(id); });
    Worker* raw = w.get();
    workers_[id] = std::move(w);
    g_log.info("started session worker pid=%d uid=%u gid=%u", static_cast<int>(pid), static_cast<unsigned>(uid),
               static_cast<unsigned>(gid));
    return raw;
  }

  void on_worker(uint64_t id) {
    auto it = workers_.find(id);
    if (it == workers_.end()) return;
    Worker& w = *it->second;
    Result<std::pair<std::string, UniqueFd>> got = common::net::recv_fd(w.sock.get(), 512);
    if (!got) {
      drop_worker(id, "");  // it exited (reap() logs how) or closed its channel
      return;
    }
    std::optional<handoff::Packet> p = handoff::decode(got->first);
    std::optional<uint64_t> sid = p ? common::parse_u64(p->get("id")) : std::nullopt;
    if (!p || p->verb != "DONE" || !sid || got->second) {
      g_log.error("worker %d sent a malformed message; stopping it", static_cast<int>(w.pid));
      ::kill(w.pid, SIGTERM);
      drop_worker(id, "sent a malformed message");
      return;
    }
    auto s = sessions_.find(*sid);
    if (s == sessions_.end() || s->second.worker != id) return;
    release(s->second);
    sessions_.erase(s);
    if (w.sessions > 0) --w.sessions;
    if (w.sessions == 0) {
      w.linger->start(kWorkerLinger, [this, id] {
        auto wi = workers_.find(id);
        if (wi == workers_.end() || wi->second->sessions) return;
        // Closing the channel tells an idle worker to exit.
        drop_worker(id, "");
      });
    }
  }

  void release(const SessionRef& s) {
    auto u = userip_.find(s.user_ip);
    if (u != userip_.end() && --u->second == 0) userip_.erase(u);
    auto n = user_conns_.find(s.user);
    if (n != user_conns_.end() && --n->second == 0) user_conns_.erase(n);
  }

  void drop_worker(uint64_t id, const std::string& why) {
    auto it = workers_.find(id);
    if (it == workers_.end()) return;
    for (auto s = sessions_.begin(); s != sessions_.end();) {
      if (s->second.worker == id) {
        release(s->second);
        s = sessions_.erase(s);
      } else {
        ++s;
      }
    }
    if (!why.empty()) {
      g_log.warning("session worker pid=%d %s; its %zu sessions are gone", static_cast<int>(it->second->pid),
                    why.c_str(), it->second->sessions);
    }
    std::shared_ptr<Worker> dead(std::move(it->second));
    workers_.erase(it);
    dead->watch->stop();
    dead->linger->stop();
    ctx_.loop->post([dead] {});  // destroyed outside its own callback
  }

  void reap() {
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      children_.erase(pid);
      for (auto& [id, w] : workers_) {
        if (w->pid == pid) {
          w->pid = -1;
          drop_worker(id, "");
          break;
        }
      }
      if (WIFSIGNALED(status)) {
        g_log.warning("session worker pid=%d was killed by signal %d (%s); only its own sessions were lost",
                      static_cast<int>(pid), WTERMSIG(status), ::strsignal(WTERMSIG(status)));
      } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        g_log.warning("session worker pid=%d exited with status %d", static_cast<int>(pid), WEXITSTATUS(status));
      }
    }
    maybe_stopped();
  }

  void maybe_stopped() {
    if (!stopped_ || !children_.empty()) return;
    std::function<void()> done = std::move(stopped_);
    stopped_ = nullptr;
    if (stop_timer_) stop_timer_->stop();
    // One round later than the release lambdas posted with it (drop_worker): `done`
    // destroys this object, which they must not outlive.
    common::ev::Loop* loop = &*ctx_.loop;
    loop->post([loop, done = std::move(done)]() mutable { loop->post(std::move(done)); });
  }

  common::DaemonContext& ctx_;
  const common::Config& cfg_;
  uid_t login_uid_ = 0;
  std::unique_ptr<common::auth::UserdbClient> userdb_;
  std::unique_ptr<common::ev::Signal> sigchld_;
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::list<std::shared_ptr<Request>> requests_;
  std::map<uint64_t, std::unique_ptr<Worker>> workers_;
  std::map<uint64_t, SessionRef> sessions_;
  std::map<std::string, uint64_t> userip_;
  std::map<std::string, uint64_t> user_conns_;
  uint64_t next_worker_ = 0;
  uint64_t next_session_ = 0;
  std::set<pid_t> children_;  // forked workers not yet reaped
  std::function<void()> stopped_;
  std::unique_ptr<common::ev::Timer> stop_timer_;
};

}  // namespace

int main(int argc, char** argv) {
  std::unique_ptr<Postlogin> server;
  tern::common::DaemonSpec spec;
  spec.name = "tern-mra-postlogin";
  spec.log_service = "mra-postlogin";
  spec.may_run_as_root = true;  // see PRIVILEGE above
  spec.post_jail = [&](tern::common::DaemonContext& ctx) -> Status {
    server = std::make_unique<Postlogin>(ctx);
    std::vector<int> fds = ctx.listeners("mra-postlogin");
    if (fds.empty()) return tern::common::make_error(ErrorKind::kConfig, "tern-mra-postlogin has no mra-postlogin listener");
    for (int fd : fds) server->listen(fd);
    ctx.on_stop = [&] {
      server->stop([&] {
        server.reset();
        ctx.loop->stop();
      });
    };
    return {};
  };
  return tern::common::daemon_main(argc, argv, spec);
}
