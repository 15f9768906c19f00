#include "master/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace tern::master {

using common::Config;
using common::ErrorKind;
using common::Result;
using common::Status;

struct Supervisor::Child {
  common::ServiceSpec spec;
  std::vector<common::BoundListener> listeners;
  pid_t pid = 0;
  uint64_t started_ms = 0;
  int restarts = 0;
  uint64_t delay_ms = 0;          // next restart delay
  bool stopping = false;          // we sent SIGTERM: its exit is expected
  bool waiting = false;           // a restart is scheduled
  std::string last_exit = "-";
  std::unique_ptr<common::ev::Timer> restart_timer;
};

std::string describe_wait_status(int wstatus) {
  if (WIFEXITED(wstatus)) return "exit status " + std::to_string(WEXITSTATUS(wstatus));
  if (WIFSIGNALED(wstatus)) {
    int sig = WTERMSIG(wstatus);
    std::string s = "killed by signal " + std::to_string(sig);
    if (const char* name = ::strsignal(sig)) s += std::string(" (") + name + ")";
    if (WCOREDUMP(wstatus)) s += ", core dumped";
    return s;
  }
  return "status " + std::to_string(wstatus);
}

Supervisor::Supervisor(common::ev::Loop& loop, std::string config_path, std::vector<std::string> overrides)
    : loop_(loop), config_path_(std::move(config_path)), overrides_(std::move(overrides)) {}

Supervisor::~Supervisor() = default;

Status Supervisor::start(const Config& cfg) {
  cfg_ = cfg;
  Result<std::vector<common::ServiceSpec>> table = common::service_table(cfg_);
  if (!table) return table.take_error();
  if (Status s = common::make_directories(common::directory_table(cfg_)); !s) return s;
  std::vector<std::unique_ptr<Child>> fresh;
  for (common::ServiceSpec& spec : *table) {
    auto c = std::make_unique<Child>();
    Result<std::vector<common::BoundListener>> l = common::bind_listeners(spec);
    if (!l) return l.take_error();
    c->listeners = std::move(l).value();
    c->spec = std::move(spec);
    c->delay_ms = static_cast<uint64_t>(cfg_.seconds("master_restart_delay")) * 1000;
    c->restart_timer = std::make_unique<common::ev::Timer>(loop_);
    fresh.push_back(std::move(c));
  }
  children_ = std::move(fresh);
  for (auto& c : children_) spawn(*c);
  return {};
}

void Supervisor::spawn(Child& c) {
  c.waiting = false;
  c.stopping = false;
  const std::string binary = cfg_.str("daemon_directory") + "/" + c.spec.binary;
  if (::access(binary.c_str(), X_OK) != 0) {
    common::log::warning("%s: %s -- throttling", binary.c_str(), std::strerror(errno));
    c.last_exit = std::string("cannot execute: ") + std::strerror(errno);
    schedule_restart(c);
    return;
  }

  // Everything the child needs is built before fork: between fork and exec only
  // async-signal-safe calls are allowed.
  std::vector<std::string> args = {binary, "-c", config_path_};
  for (const std::string& o : overrides_) {
    args.push_back("-o");
    args.push_back(o);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::string names;
  for (const auto& l : c.listeners) {
    if (!names.empty()) names += ':';
    names += l.name;
  }
  std::vector<std::string> env_strings = {
      "LISTEN_FDS=" + std::to_string(c.listeners.size()),
      "LISTEN_FDNAMES=" + names,
      "TERN_MASTER_PID=" + std::to_string(::getpid()),
      "TERN_CONFIG=" + config_path_,
      "LISTEN_PID=00000000000000000000",  // the child writes its pid here
  };
  for (const char* keep : {"PATH", "TZ", "LANG", "LC_ALL", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TERN_FAULT_DIR", "TERN_FAULT_ACTION"}) {
    if (const char* v = std::getenv(keep)) env_strings.push_back(std::string(keep) + "=" + v);
  }
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* listen_pid = env_strings[4].data() + std::strlen("LISTEN_PID=");

  std::vector<int> fds;
  for (const auto& l : c.listeners) fds.push_back(l.fd.get());
  const int nfds = static_cast<int>(fds.size());

  // Every signal stays blocked from before the fork until the child has reset the
  // handlers: otherwise a SIGTERM sent to the new pid (a stop right after a start)
  // could run libuv's handler in the child, which takes libuv's process-wide signal
  // lock through a pipe shared with us. A child killed while holding it left the
  // master blocked in uv__signal_lock with every signal masked (seen once: a --dev
  // master that ignored SIGINT, its children zombies).
  sigset_t all, saved;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = ::fork();
  if (pid != 0) ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    common::log::warning("fork %s: %s", binary.c_str(), std::strerror(errno));
    schedule_restart(c);
    return;
  }
  if (pid == 0) {
    // Child: default handlers for everything, then unblock.
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Move the listeners to 3, 4, ...: first above the target range, then down.
    int base = 3 + nfds + 16;
    for (int i = 0; i < nfds; ++i) {
      int moved = ::fcntl(fds[i], F_DUPFD, base);
      if (moved < 0) ::_exit(71);
      fds[i] = moved;
    }
    for (int i = 0; i < nfds; ++i) {
      if (::dup2(fds[i], 3 + i) < 0) ::_exit(71);
    }
    ::close_range(static_cast<unsigned>(3 + nfds), ~0u, 0);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0 && devnull != 0) {
      ::dup2(devnull, 0);
      ::close(devnull);
    }
    // LISTEN_PID=<our pid>, written without snprintf.
    pid_t me = ::getpid();
    char digits[24];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + me % 10);
      me /= 10;
    } while (me > 0);
    for (int i = 0; i < n; ++i) listen_pid[i] = digits[n - 1 - i];
    listen_pid[n] = 0;
    ::setsid();
    ::execve(binary.c_str(), argv.data(), envp.data());
    ::_exit(71);  // EX_OSERR
  }
  c.pid = pid;
  c.started_ms = loop_.now_ms();
  common::log::info("started %s pid %d", c.spec.binary.c_str(), static_cast<int>(pid));
}

void Supervisor::schedule_restart(Child& c) {
  if (stopping_) return;
  c.waiting = true;
  uint64_t delay = c.delay_ms;
  uint64_t max_ms = static_cast<uint64_t>(cfg_.seconds("service_throttle_time")) * 1000;
  c.delay_ms = std::min(max_ms, std::max<uint64_t>(c.delay_ms * 2, 1000));
  Child* cp = &c;
  c.restart_timer->start(delay, [this, cp] {
    if (stopping_) return;
    cp->restarts++;
    spawn(*cp);
  });
}

void Supervisor::on_exit(Child& c, int wstatus) {
  const std::string binary = cfg_.str("daemon_directory") + "/" + c.spec.binary;
  c.last_exit = describe_wait_status(wstatus);
  const bool expected = c.stopping || stopping_;
  const int pid = static_cast<int>(c.pid);
  c.pid = 0;
  if (expected) {
    common::log::info("process %s pid %d stopped: %s", binary.c_str(), pid, c.last_exit.c_str());
    return;
  }
  common::log::warning("process %s pid %d %s", binary.c_str(), pid, c.last_exit.c_str());
  uint64_t ran_ms = loop_.now_ms() - c.started_ms;
  if (ran_ms >= static_cast<uint64_t>(cfg_.seconds("master_stable_time")) * 1000) {
    // It had been running well: restart promptly, and forget earlier failures.
    c.delay_ms = static_cast<uint64_t>(cfg_.seconds("master_restart_delay")) * 1000;
  } else {
    common::log::warning("%s: bad command startup -- throttling", binary.c_str());
  }
  schedule_restart(c);
}

void Supervisor::reap() {
  for (;;) {
    int wstatus = 0;
    pid_t pid = ::waitpid(-1, &wstatus, WNOHANG);
    if (pid <= 0) break;
    for (auto& c : children_) {
      if (c->pid == pid) {
        on_exit(*c, wstatus);
        break;
      }
    }
  }
  maybe_stopped();
}

void Supervisor::kill_all(int sig) {
  for (auto& c : children_) {
    if (c->pid > 0) {
      c->stopping = true;
      ::kill(c->pid, sig);
    }
  }
}

Status Supervisor::reload() {
  Result<Config> cfg = Config::load_file(config_path_);
  if (!cfg) return cfg.take_error();
  for (const std::string& o : overrides_) {
    size_t eq = o.find('=');
    if (eq == std::string::npos) continue;
    if (Status s = cfg->set(o.substr(0, eq), o.substr(eq + 1), "-o " + o); !s) return s;
  }
  if (Status s = cfg->validate(); !s) return s;
  Result<std::vector<common::ServiceSpec>> table = common::service_table(*cfg);
  if (!table) return table.take_error();

  // Rebind only what changed; a listener that stays the same keeps its socket.
  std::vector<std::unique_ptr<Child>> next;
  for (common::ServiceSpec& spec : *table) {
    auto c = std::make_unique<Child>();
    Child* old = nullptr;
    for (auto& o : children_) {
      if (o->spec.name == spec.name) old = o.get();
    }
    for (const common::ListenerSpec& l : spec.listeners) {
      bool reused = false;
      if (old) {
        for (size_t i = 0; i < old->spec.listeners.size() && i < old->listeners.size(); ++i) {
          const common::ListenerSpec& ol = old->spec.listeners[i];
          if (ol.name == l.name && ol.is_unix == l.is_unix && ol.address == l.address && ol.port == l.port &&
              ol.path == l.path && ol.mode == l.mode && ol.owner == l.owner && old->listeners[i].fd.valid()) {
            c->listeners.push_back({l.name, common::UniqueFd(::dup(old->listeners[i].fd.get()))});
            ::fcntl(c->listeners.back().fd.get(), F_SETFD, FD_CLOEXEC);
            reused = true;
            break;
          }
        }
      }
      if (!reused) {
        common::ServiceSpec one = spec;
        one.listeners = {l};
        Result<std::vector<common::BoundListener>> b = common::bind_listeners(one);
        if (!b) return b.take_error();
        c->listeners.push_back(std::move(b->front()));
      }
    }
    c->spec = std::move(spec);
    c->restart_timer = std::make_unique<common::ev::Timer>(loop_);
    next.push_back(std::move(c));
  }
  if (Status s = common::make_directories(common::directory_table(*cfg)); !s) return s;

  // Stop the old daemons; start the new ones at once on the new config. Old ones
  // finish their sessions; new connections go to the new ones.
  for (auto& c : children_) {
    c->restart_timer->stop();
    if (c->pid > 0) {
      ::kill(c->pid, SIGTERM);
      // Keep reaping it: move it aside as a stopping child without listeners.
      c->stopping = true;
      c->listeners.clear();
      next.push_back(std::move(c));
    }
  }
  cfg_ = std::move(cfg).value();
  children_ = std::move(next);
  for (auto& c : children_) {
    if (!c->stopping) {
      c->delay_ms = static_cast<uint64_t>(cfg_.seconds("master_restart_delay")) * 1000;
      spawn(*c);
    }
  }
  common::log::info("reload -- version %s, configuration %s", "0.1.0", config_path_.c_str());
  return {};
}

void Supervisor::stop(std::function<void()> done) {
  if (stopping_) {
    // A second stop request: no more waiting.
    kill_all(SIGKILL);
    return;
  }
  stopping_ = true;
  stopped_cb_ = std::move(done);
  for (auto& c : children_) c->restart_timer->stop();
  kill_all(SIGTERM);
  stop_timer_ = std::make_unique<common::ev::Timer>(loop_);
  stop_timer_->start(static_cast<uint64_t>(cfg_.seconds("master_stop_timeout")) * 1000, [this] {
    for (auto& c : children_) {
      if (c->pid > 0) {
        common::log::warning("%s pid %d did not stop in time -- killing it", c->spec.binary.c_str(),
                             static_cast<int>(c->pid));
      }
    }
    kill_all(SIGKILL);
  });
  maybe_stopped();
}

void Supervisor::maybe_stopped() {
  // Drop reload leftovers that have exited.
  children_.erase(std::remove_if(children_.begin(), children_.end(),
                                 [](const std::unique_ptr<Child>& c) {
                                   return c->pid == 0 && c->stopping && c->listeners.empty();
                                 }),
                  children_.end());
  if (!stopping_) return;
  for (auto& c : children_) {
    if (c->pid > 0) return;
  }
  if (stop_timer_) stop_timer_->stop();
  if (stopped_cb_) {
    auto cb = std::move(stopped_cb_);
    stopped_cb_ = nullptr;
    cb();
  }
}

std::string Supervisor::status() const {
  std::string out;
  uint64_t now = loop_.now_ms();
  for (const auto& c : children_) {
    if (c->stopping && c->listeners.empty() && !stopping_) continue;  // an old one from a reload
    std::string state = c->pid > 0 ? (c->stopping ? "stopping" : "running") : (c->waiting ? "waiting" : "stopped");
    uint64_t uptime = c->pid > 0 ? (now - c->started_ms) / 1000 : 0;
    out += c->spec.name + " pid=" + std::to_string(c->pid) + " uptime=" + std::to_string(uptime) +
           " restarts=" + std::to_string(c->restarts) + " state=" + state + " last_exit=" + c->last_exit + "\n";
  }
  return out;
}

}  // namespace tern::master
