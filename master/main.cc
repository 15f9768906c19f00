// tern-master - the Tern supervisor
//
// Reads tern.conf, creates the runtime, queue and state directories with their owners
// and modes, binds every listener (TCP ports and UNIX sockets), and starts tern-authd,
// tern-mda, tern-mta and tern-mra with their listeners as inherited fds (LISTEN_FDS /
// LISTEN_FDNAMES, so the same binaries run under systemd socket activation). It
// restarts a daemon that dies, with backoff; SIGHUP reloads, SIGTERM stops everything
// within master_stop_timeout. ternctl talks to it on $base_dir/master.
//
// TRUST     Reads only its config and its control socket, whose peers must be root or
//           its own user (SO_PEERCRED). It never reads a byte from the network.
// PRIVILEGE Runs as root to bind ports below 1024 and to start each daemon, which
//           drops to its configured user before it touches a client (common/daemon.cc).
//           Unprivileged (the development default) every daemon runs as the invoking
//           user.
// STANDARDS sd_listen_fds(3) for the fd-passing convention.
#include <sys/file.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <list>

#include "common/connection.h"
#include "common/daemon.h"
#include "common/line_reader.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/services.h"
#include "common/sockets.h"
#include "common/text.h"
#include "master/control_protocol.h"
#include "master/dev.h"
#include "master/supervisor.h"

using namespace tern;
using common::Result;
using common::Status;

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: tern-master [-c config] [-o key=value]... [--foreground]\n"
               "       tern-master --dev DIR [-o key=value]...   (development default: no root, no config)\n");
}

// Refuses users the master cannot run daemons as, with the fix in the message.
Status check_users(const common::Config& cfg) {
  Result<std::vector<common::ServiceSpec>> table = common::service_table(cfg);
  if (!table) return table.take_error();
  const bool root = ::geteuid() == 0;
  for (const auto& s : *table) {
    // The one daemon that runs as root: tern-mra-postlogin (common/services.h).
    if (s.privileged) continue;
    std::string name = cfg.str(s.user_key);
    Result<common::UserIds> u = common::lookup_user(name);
    if (!u) {
      return common::make_error(common::ErrorKind::kConfig,
                                cfg.origin(s.user_key) + ": " + s.user_key + " = " + name + ": no such user (" +
                                    s.binary + " runs as it; create it with scripts/setup or useradd --system " +
                                    name + ")");
    }
    if (u->uid == 0) {
      return common::make_error(common::ErrorKind::kConfig, cfg.origin(s.user_key) + ": " + s.user_key + " = " + name +
                                                                ": refusing to run " + s.binary + " as root");
    }
    if (!root && u->uid != ::geteuid()) {
      return common::make_error(common::ErrorKind::kDenied,
                                cfg.origin(s.user_key) + ": " + s.user_key + " = " + name + ": " + s.binary +
                                    " would run as " + name + ", but tern-master is not root; run it as root, or set " +
                                    s.user_key + " = " + common::current_user().name);
    }
  }
  return {};
}

// The control socket: one request line per connection.
class ControlServer {
 public:
  ControlServer(common::ev::Loop& loop, master::Supervisor& sup, std::function<void()> stop)
      : loop_(loop), sup_(sup), stop_(std::move(stop)) {}

  Status start(const std::string& path) {
    Result<common::UniqueFd> fd = common::net::bind_unix(path, 0600);
    if (!fd) return fd.take_error();
    listener_ = std::make_unique<common::net::Listener>(loop_, std::move(fd).value(), "master");
    listener_->start([this](common::UniqueFd c) { accept(std::move(c)); });
    return {};
  }

  void close() { listener_.reset(); }

 private:
  struct Session {
    std::shared_ptr<common::net::Connection> conn;
    common::LineReader reader{master::kMaxControlLine};
  };

  void accept(common::UniqueFd fd) {
    common::net::PeerInfo peer = common::net::peer_info(fd.get());
    if (!peer.has_creds || (peer.uid != 0 && peer.uid != ::geteuid())) {
      common::log::warning("control connection from uid %d refused", static_cast<int>(peer.uid));
      return;
    }
    common::net::Connection::Options opt;
    opt.idle_timeout_ms = 10000;
    auto s = std::make_shared<Session>();
    s->conn = common::net::Connection::adopt(loop_, std::move(fd), opt);
    sessions_.push_back(s);
    auto it = std::prev(sessions_.end());
    common::net::Connection::Callbacks cb;
    cb.on_data = [this, s](std::string_view data) {
      s->reader.feed(data);
      common::LineReader::Line line;
      auto st = s->reader.next(line);
      if (st == common::LineReader::Status::kNeedMore) return;
      if (st == common::LineReader::Status::kTooLong) {
        s->conn->write("error: request too long\n");
        s->conn->close();
        return;
      }
      handle(*s, std::string(common::trim(line.text)));
    };
    cb.on_close = [this, it](common::net::CloseReason, const std::string&) { sessions_.erase(it); };
    s->conn->start(std::move(cb));
  }

  void handle(Session& s, const std::string& req) {
    if (req == "status") {
      s.conn->write(sup_.status() + ".\n");
    } else if (req == "reload") {
      if (Status st = sup_.reload(); !st) {
        common::log::error("reload failed, still running the old configuration: %s", st.error().message.c_str());
        s.conn->write("error: " + st.error().message + "\n");
      } else {
        s.conn->write(".\n");
      }
    } else if (req == "stop") {
      s.conn->write(".\n");
      stop_();
    } else {
      s.conn->write("error: unknown request '" + common::log_escape(req, 64) + "' (status, reload, stop)\n");
    }
    s.conn->close();
  }

  common::ev::Loop& loop_;
  master::Supervisor& sup_;
  std::function<void()> stop_;
  std::unique_ptr<common::net::Listener> listener_;
  std::list<std::shared_ptr<Session>> sessions_;
};

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = common::default_config_path();
  std::string dev_dir;
  std::vector<std::string> overrides;
  common::log::Options early;
  early.service = "master";
  common::log::init(early);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "-o" && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else if (a == "--dev" && i + 1 < argc) {
      dev_dir = argv[++i];
    } else if (a == "--foreground" || a == "-f") {
      // Always in the foreground; systemd's Type=simple or a terminal supervises us.
    } else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else {
      usage();
      return EX_USAGE;
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  ::umask(022);

  if (!dev_dir.empty()) {
    Result<std::string> conf = master::prepare_dev(dev_dir);
    if (!conf) common::log::fatal_exit(EX_CONFIG, "%s", conf.error().message.c_str());
    config_path = *conf;
  }
  common::Config cfg = common::load_config_or_exit(config_path, overrides);
  common::init_logging(cfg, "master", false);
  if (Status s = check_users(cfg); !s) common::log::fatal_exit(EX_CONFIG, "%s", s.error().message.c_str());
  if (Status s = common::make_directories(common::directory_table(cfg)); !s) {
    common::log::fatal_exit(EX_CANTCREAT, "%s", s.error().message.c_str());
  }

  // One master per base_dir: a locked pid file.
  const std::string base = cfg.str("base_dir");
  const std::string pid_path = base + "/" + master::kPidFileName;
  common::UniqueFd pid_fd(::open(pid_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!pid_fd) common::log::fatal_exit(EX_CANTCREAT, "open %s: %s", pid_path.c_str(), std::strerror(errno));
  if (::flock(pid_fd.get(), LOCK_EX | LOCK_NB) < 0) {
    char buf[32] = {};
    ssize_t n = ::pread(pid_fd.get(), buf, sizeof buf - 1, 0);
    (void)n;
    common::log::fatal_exit(EX_TEMPFAIL, "the Tern mail system is already running (pid %s, %s)",
                            std::string(common::trim(buf)).c_str(), pid_path.c_str());
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(pid_fd.get(), 0) < 0 || ::pwrite(pid_fd.get(), me.data(), me.size(), 0) < 0) {
    common::log::warning("cannot write %s: %s", pid_path.c_str(), std::strerror(errno));
  }

  common::ev::Loop loop;
  master::Supervisor sup(loop, config_path, overrides);
  bool stopping = false;
  std::unique_ptr<ControlServer> control;
  common::ev::Signal sigchld(loop), sigterm(loop), sigint(loop), sighup(loop);
  auto stop = [&] {
    if (!stopping) common::log::info("terminating on signal or request");
    stopping = true;
    if (control) control->close();
    sup.stop([&] {
      sigchld.stop();
      sigterm.stop();
      sigint.stop();
      sighup.stop();
      loop.stop();
    });
  };
  sigchld.start(SIGCHLD, [&] { sup.reap(); });
  sigterm.start(SIGTERM, stop);
  sigint.start(SIGINT, stop);
  sighup.start(SIGHUP, [&] {
    if (Status s = sup.reload(); !s) {
      common::log::error("reload failed, still running the old configuration: %s", s.error().message.c_str());
    }
  });

  if (Status s = sup.start(cfg); !s) {
    common::log::fatal_exit(s.error().kind == common::ErrorKind::kConfig ? EX_CONFIG : EX_UNAVAILABLE, "%s",
                            s.error().message.c_str());
  }
  control = std::make_unique<ControlServer>(loop, sup, stop);
  if (Status s = control->start(base + "/" + master::kControlSocketName); !s) {
    common::log::fatal_exit(EX_UNAVAILABLE, "control socket: %s", s.error().message.c_str());
  }
  common::log::info("daemon started -- version %s, configuration %s", "0.1.0", config_path.c_str());
  if (!dev_dir.empty()) std::fputs(master::dev_banner(dev_dir, config_path, cfg).c_str(), stderr);

  loop.run();
  ::unlink(pid_path.c_str());
  ::unlink((base + "/" + master::kControlSocketName).c_str());
  common::log::info("stopped");
  return 0;
}
