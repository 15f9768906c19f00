// The supervisor: starts each daemon with its listeners, restarts the ones that die
// (with backoff, so a daemon that crashes at start-up is not respawned hot), reloads
// and stops them.
//
// Listeners are bound here once, as root, and stay open across restarts and reloads,
// so clients queue in the kernel backlog while a daemon restarts instead of being
// refused.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/loop.h"
#include "common/services.h"

namespace tern::master {

class Supervisor {
 public:
  Supervisor(common::ev::Loop& loop, std::string config_path, std::vector<std::string> overrides);
  ~Supervisor();

  // Binds all listeners and starts all daemons. An error names the port or path.
  common::Status start(const common::Config& cfg);
  // Re-reads the config; on success restarts every daemon on it. Errors leave the
  // running daemons as they are.
  common::Status reload();
  // SIGTERM to every daemon; SIGKILL to what is left after master_stop_timeout;
  // `done` runs when all are gone.
  void stop(std::function<void()> done);
  // The status lines of the control protocol.
  std::string status() const;
  // Called from the master's SIGCHLD handler.
  void reap();

 private:
  struct Child;
  void spawn(Child& c);
  void schedule_restart(Child& c);
  void on_exit(Child& c, int wstatus);
  void kill_all(int sig);
  void maybe_stopped();

  common::ev::Loop& loop_;
  std::string config_path_;
  std::vector<std::string> overrides_;
  common::Config cfg_;
  std::vector<std::unique_ptr<Child>> children_;
  bool stopping_ = false;
  std::function<void()> stopped_cb_;
  std::unique_ptr<common::ev::Timer> stop_timer_;
};

// "exit status 1", "killed by signal 9 (Killed)", for logs and `ternctl status`.
std::string describe_wait_status(int wstatus);

}  // namespace tern::master
