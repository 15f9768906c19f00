#include "common/daemon.h"

#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/safe_path.h"
#include "common/services.h"
#include "common/text.h"

namespace tern::common {

std::vector<int> DaemonContext::listeners(const std::string& name) const {
  std::vector<int> out;
  for (const auto& f : listen_fds) {
    if (f.name == name) out.push_back(f.fd);
  }
  return out;
}

std::string default_config_path() {
  const char* env = std::getenv("TERN_CONFIG");
  return env && *env ? env : "/etc/tern/tern.conf";
}

Config load_config_or_exit(const std::string& path, const std::vector<std::string>& overrides) {
  Result<Config> cfg = Config::load_file(path);
  if (!cfg) {
    log::fatal_exit(EX_CONFIG, "%s", cfg.error().message.c_str());
  }
  for (const std::string& o : overrides) {
    size_t eq = o.find('=');
    if (eq == std::string::npos) log::fatal_exit(EX_USAGE, "-o %s: expected key=value", log_escape(o).c_str());
    if (Status s = cfg->set(std::string(trim(o.substr(0, eq))), o.substr(eq + 1), "-o " + o); !s) {
      log::fatal_exit(EX_CONFIG, "%s", s.error().message.c_str());
    }
  }
  if (!overrides.empty()) {
    if (Status s = cfg->validate(); !s) log::fatal_exit(EX_CONFIG, "%s", s.error().message.c_str());
  }
  return std::move(cfg).value();
}

void init_logging(const Config& cfg, const std::string& service, bool debug) {
  log::Options o;
  o.syslog_name = cfg.str("syslog_name");
  o.service = service;
  o.debug = debug || cfg.boolean("tern_debug");
  std::string file = cfg.str("maillog_file");
  if (file.empty()) {
    o.sink = log::Sink::kSyslog;
  } else if (file == "/dev/stderr") {
    o.sink = log::Sink::kStderr;
  } else {
    o.sink = log::Sink::kFile;
    o.file = file;
  }
  log::init(o);
}

namespace {

// chroot into `dir`, reached and checked through a descriptor (safe_path.h): only
// root can write it or any directory above it.
Status enter_chroot(const std::string& dir) {
  log::before_chroot();
  Result<UniqueFd> fd = open_directory_safely(dir, DirOwner{0, 0});
  if (!fd) return fd.take_error();
  if (Status s = check_trusted_directory(fd->get(), dir); !s) return s;
  if (::fchdir(fd->get()) != 0) return errno_error("fchdir", errno);
  if (::chroot(".") != 0) return errno_error("chroot", errno);
  if (::chdir("/") != 0) return errno_error("chdir /", errno);
  return {};
}

}  // namespace

uint64_t open_file_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) < 0) return 1024;
  return r.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(r.rlim_cur);
}

uint64_t raise_open_file_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) < 0) {
    log::warning("getrlimit RLIMIT_NOFILE: %s", std::strerror(errno));
    return 1024;
  }
  const rlim_t was = r.rlim_cur;
  if (r.rlim_cur != r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &r) < 0) {
      log::warning("setrlimit RLIMIT_NOFILE %llu: %s", static_cast<unsigned long long>(r.rlim_max),
                   std::strerror(errno));
      r.rlim_cur = was;
    }
  }
  log::info("open file limit %llu (was %llu, hard limit %llu)", static_cast<unsigned long long>(r.rlim_cur),
            static_cast<unsigned long long>(was), static_cast<unsigned long long>(r.rlim_max));
  return r.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(r.rlim_cur);
}

int daemon_main(int argc, char** argv, const DaemonSpec& spec) {
  std::string config_path = default_config_path();
  std::vector<std::string> overrides;
  bool debug = false;
  // Until the config says otherwise, problems go to stderr under the daemon's name.
  log::Options early;
  early.service = spec.log_service;
  early.sink = log::Sink::kStderr;
  log::init(early);

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "-o" && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else if (a == "--foreground" || a == "-f") {
      // Always in the foreground: the master or systemd supervises.
    } else if (a == "-v") {
      debug = true;
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: %s [-c config] [-o key=value]... [--foreground] [-v]\n", spec.name.c_str());
      return 0;
    } else {
      log::fatal_exit(EX_USAGE, "unknown argument '%s'; usage: %s [-c config] [-o key=value]... [--foreground] [-v]",
                      log_escape(a, 64).c_str(), spec.name.c_str());
    }
  }

  ::signal(SIGPIPE, SIG_IGN);
  DaemonContext ctx;
  ctx.config_path = config_path;
  ctx.overrides = overrides;
  ctx.config = load_config_or_exit(config_path, overrides);
  init_logging(ctx.config, spec.log_service, debug);
  raise_open_file_limit();

  const char* master_pid_env = std::getenv("TERN_MASTER_PID");
  const uint64_t master_pid = master_pid_env ? parse_u64(master_pid_env).value_or(0) : 0;
  ctx.under_master = master_pid != 0 && master_pid == static_cast<uint64_t>(::getppid());
  ::unsetenv("TERN_MASTER_PID");

  ctx.listen_fds = net::take_listen_fds();
  std::vector<BoundListener> own;  // kept open for the life of the process
  const std::string short_name = spec.name.rfind("tern-", 0) == 0 ? spec.name.substr(5) : spec.name;
  Result<ServiceSpec> service = find_service(ctx.config, short_name);
  if (!ctx.under_master) {
    // Running alone (its own systemd unit, or by hand): nobody else creates the
    // runtime, queue and state directories, so do what the master would.
    if (Status s = make_directories(directory_table(ctx.config)); !s) {
      log::fatal_exit(EX_CANTCREAT, "%s", s.error().message.c_str());
    }
  }
  if (ctx.listen_fds.empty() && !ctx.under_master) {
    // Running alone without socket activation: bind our own listeners from the same
    // table the master uses.
    if (!service) log::fatal_exit(EX_CONFIG, "%s: %s", spec.name.c_str(), service.error().message.c_str());
    Result<std::vector<BoundListener>> bound = bind_listeners(*service);
    if (!bound) log::fatal_exit(EX_UNAVAILABLE, "%s", bound.error().message.c_str());
    own = std::move(bound).value();
    for (const BoundListener& b : own) ctx.listen_fds.push_back({b.name, b.fd.get()});
  }

  ev::Loop loop;
  ctx.loop = &loop;

  if (spec.pre_jail) {
    if (Status s = spec.pre_jail(ctx); !s) {
      log::fatal_exit(s.error().kind == ErrorKind::kConfig ? EX_CONFIG : EX_UNAVAILABLE, "%s",
                      s.error().message.c_str());
    }
  }

  // Drop privilege: to the user the config names for this service.
  const std::string user_key = service ? service->user_key : "";
  if (::geteuid() == 0) {
    if (user_key.empty()) {
      if (!spec.may_run_as_root) log::fatal_exit(EX_CONFIG, "%s has no configured user and refuses to run as root", spec.name.c_str());
    } else {
      std::string user_name = ctx.config.str(user_key);
      Result<UserIds> user = lookup_user(user_name);
      if (!user) log::fatal_exit(EX_NOUSER, "%s: %s = %s: %s", ctx.config.origin(user_key).c_str(), user_key.c_str(),
                                 user_name.c_str(), user.error().message.c_str());
      if (user->uid == 0 && !spec.may_run_as_root) {
        log::fatal_exit(EX_CONFIG, "%s: %s = %s: refusing to run %s as root", ctx.config.origin(user_key).c_str(),
                        user_key.c_str(), user_name.c_str(), spec.name.c_str());
      }
      if (user->uid != 0) {
        gid_t gid = user->gid;
        if (user_key == "mail_uid") {
          Result<gid_t> g = lookup_group(ctx.config.str("mail_gid"));
          if (!g) log::fatal_exit(EX_NOUSER, "mail_gid: %s", g.error().message.c_str());
          gid = *g;
        }
#ifdef __SANITIZE_ADDRESS__
        // LeakSanitizer's exit check reads /proc/self/task and /proc/self/maps,
        // which a chroot hides (the process then hung at exit): no chroot there.
        const bool chroot_ok = false;
#else
        const bool chroot_ok = true;
#endif
        if (!spec.chroot_key.empty() && ctx.config.boolean(spec.chroot_key)) {
          // A network namespace of its own as well: a chroot hides paths, not the
          // abstract unix sockets (@/tmp/.X11-unix/X0, a container runtime's), which
          // live in the network namespace. The listeners it was given and the path
          // sockets it connects to keep working (independent review, finding 9).
          if (::unshare(CLONE_NEWNET) != 0) {
            log::warning("%s: %s = yes: no network namespace of its own (abstract sockets stay reachable): "
                         "unshare: %s",
                         ctx.config.origin(spec.chroot_key).c_str(), spec.chroot_key.c_str(), std::strerror(errno));
          }
        }
        if (chroot_ok && !spec.chroot_key.empty() && ctx.config.boolean(spec.chroot_key)) {
          const std::string dir = ctx.config.str("base_dir") + "/" + kLoginDir;
          if (Status s = enter_chroot(dir); !s) {
            log::fatal_exit(EX_UNAVAILABLE, "%s: %s = yes: cannot chroot into %s: %s",
                            ctx.config.origin(spec.chroot_key).c_str(), spec.chroot_key.c_str(), dir.c_str(),
                            s.error().message.c_str());
          }
          ctx.chroot_dir = dir;
        }
        if (Status s = drop_privileges(*user, gid); !s) log::fatal_exit(EX_OSERR, "%s", s.error().message.c_str());
      }
    }
  }
  if (::geteuid() == 0 && !spec.may_run_as_root) log::fatal_exit(EX_OSERR, "still root after dropping privileges");
  ctx.user = current_user();

  if (ctx.under_master) {
    // Exit with the master: a credential change cleared any earlier death signal.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (master_pid != static_cast<uint64_t>(::getppid())) return 0;  // it died before the prctl
  }

  if (spec.post_jail) {
    if (Status s = spec.post_jail(ctx); !s) {
      log::fatal_exit(s.error().kind == ErrorKind::kConfig ? EX_CONFIG : EX_UNAVAILABLE, "%s",
                      s.error().message.c_str());
    }
  }

  if (spec.sandbox) {
    if (Status s = sandbox::enter(ctx.config, *spec.sandbox); !s) {
      log::fatal_exit(s.error().kind == ErrorKind::kConfig ? EX_CONFIG : EX_OSERR, "%s", s.error().message.c_str());
    }
  }

  ev::Signal sigterm(loop), sigint(loop), sighup(loop);
  auto stop = [&] {
    if (ctx.on_stop) {
      auto f = std::move(ctx.on_stop);  // a second signal stops at once
      ctx.on_stop = nullptr;
      f();
    } else {
      loop.stop();
    }
  };
  sigterm.start(SIGTERM, stop);
  sigint.start(SIGINT, stop);
  sighup.start(SIGHUP, [&] {
    if (ctx.on_reload) ctx.on_reload();
  });
  log::info("daemon started -- version %s, configuration %s", "0.1.0", config_path.c_str());
  loop.run();
  log::info("stopping");
  return 0;
}

}  // namespace tern::common
