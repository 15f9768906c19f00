// ternctl subcommands. Each area (config, master control, users, queue, maps) adds
// its commands in its own ternctl_<area>.cc and one line in ternctl.cc's table.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace tern::ternctl {

struct Invocation {
  std::string config_path;                 // from -c, $TERN_CONFIG, or the default
  std::vector<std::string> overrides;      // -o key=value
  std::vector<std::string> args;           // after the command word
  // Loads the config (exits with EX_CONFIG and file:line on error).
  common::Config load_config() const;
};

// Each returns the process exit code (sysexits).
int cmd_config(const Invocation& inv);
int cmd_status(const Invocation& inv);
int cmd_reload(const Invocation& inv);
int cmd_stop(const Invocation& inv);
int cmd_tls_selfsigned(const Invocation& inv);
int cmd_user(const Invocation& inv);    // ternctl_user.cc
int cmd_domain(const Invocation& inv);  // ternctl_user.cc
int cmd_pw(const Invocation& inv);      // ternctl_user.cc
int cmd_postmap(const Invocation& inv); // ternctl_maps.cc
int cmd_queue(const Invocation& inv);   // ternctl_queue.cc

}  // namespace tern::ternctl
