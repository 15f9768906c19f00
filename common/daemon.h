// The start of every Tern daemon, in one place (Postfix's single_server_main with
// its pre_jail_init / post_jail_init hooks; OpenSMTPD's dispatcher start-up):
//
//   read the config -> take the listeners (inherited from tern-master or systemd as
//   LISTEN_FDS, or bound here when run alone) -> pre_jail hook (open what needs
//   privilege: TLS keys, files) -> drop to the configured user -> verify it is
//   dropped (exit if still root) -> post_jail hook (build the service on the loop)
//   -> run the loop until SIGTERM.
//
// Command line, the same for every daemon:
//   -c FILE        config file (default $TERN_CONFIG, else /etc/tern/tern.conf)
//   -o key=value   override one parameter (as postfix -o)
//   --foreground   stay in the foreground (always true; accepted for unit files)
//   -v             debug logging
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/loop.h"
#include "common/privilege.h"
#include "common/result.h"
#include "common/sandbox.h"
#include "common/sockets.h"

namespace tern::common {

struct DaemonContext {
  Config config;
  std::string config_path;
  std::vector<std::string> overrides;          // the -o key=value options, to pass on
  ev::Loop* loop = nullptr;
  std::vector<net::InheritedFd> listen_fds;    // every listener this daemon serves
  UserIds user;                                 // who we run as after the drop
  bool under_master = false;                    // started by tern-master
  // Set when the process chrooted (DaemonSpec::chroot_key): its paths are then
  // relative to this directory ("/auth-client" is <dir>/auth-client).
  std::string chroot_dir;
  // Set by post_jail. on_stop: SIGTERM/SIGINT, stop accepting and end the loop when
  // the sessions are done (the master kills us after master_stop_timeout anyway).
  // on_reload: SIGHUP.
  std::function<void()> on_stop;
  std::function<void()> on_reload;

  // Every inherited fd with this listener name.
  std::vector<int> listeners(const std::string& name) const;
};

struct DaemonSpec {
  std::string name;          // "tern-authd"; the service table entry is the part after "tern-"
  std::string log_service;   // default log service: "auth", "smtpd", "lmtp", "imap-login"
  bool may_run_as_root = false;  // only where DESIGN.md says the daemon needs root
  std::function<Status(DaemonContext&)> pre_jail;
  std::function<Status(DaemonContext&)> post_jail;
  // Network-facing daemons: the seccomp profile entered after post_jail, before
  // the first client byte (common/sandbox.h). Unset: no filter (only no_new_privs
  // where the daemon sets it itself).
  std::optional<sandbox::Profile> sandbox;
  // A yes/no key (login_chroot): when set and started as root, the process chroots
  // into base_dir (root's, writable by root alone; it holds only sockets) after
  // looking up its user and before dropping to it, as Dovecot's login chroot.
  // Not in ASan builds: LeakSanitizer needs /proc.
  std::string chroot_key;
};

// Raises the soft RLIMIT_NOFILE to the hard limit and logs both: each connection a
// network daemon holds is a descriptor, and the soft limit is often 1024 while the
// hard one allows far more. Returns the soft limit now in force. daemon_main calls
// it for every daemon; tern-mra's workers, which do not start there, call it too.
uint64_t raise_open_file_limit();
// The soft RLIMIT_NOFILE in force.
uint64_t open_file_limit();

// Runs the daemon; returns the process exit code.
int daemon_main(int argc, char** argv, const DaemonSpec& spec);

// Loads the config named by -c / $TERN_CONFIG / the default and applies overrides,
// exiting with EX_CONFIG and a "file:line: ..." message on error. Used by the daemons,
// the master and the command-line tools alike.
Config load_config_or_exit(const std::string& path, const std::vector<std::string>& overrides);
std::string default_config_path();
// Sets up logging from the config (maillog_file, syslog_name, tern_debug).
void init_logging(const Config& cfg, const std::string& service, bool debug);

}  // namespace tern::common
