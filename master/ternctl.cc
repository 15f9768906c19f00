// ternctl - Tern's administration command (postconf, postfix reload/stop, doveadm)
//
// TRUST     Run by an administrator. Talks to tern-master over $base_dir/master, which
//           only root and the master's own user may use.
#include "master/ternctl.h"

#include <sysexits.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "common/daemon.h"
#include "common/log.h"

namespace tern::ternctl {

common::Config Invocation::load_config() const { return common::load_config_or_exit(config_path, overrides); }

namespace {

struct Command {
  const char* name;
  const char* usage;
  int (*fn)(const Invocation&);
};

const Command kCommands[] = {
    {"config", "config [-n] [-d] [-x] [key...]  print parameters like postconf (-n: only those set, -d: defaults, -x: expanded)", cmd_config},
    {"status", "status                          the daemons: pid, uptime, restarts", cmd_status},
    {"reload", "reload                          re-read tern.conf and restart the daemons on it", cmd_reload},
    {"stop", "stop                            stop the mail system", cmd_stop},
    {"postmap", "postmap [-a] [-q key] [type:]file...  compile (or query) a lookup table, like postmap(1)", cmd_postmap},
    {"queue", "queue show [id...] | list | flush [id...] | hold|release|delete id...|ALL  the mail queue", cmd_queue},
    {"user", "user add|passwd|del|list|show|import  virtual users (password on stdin or the terminal)", cmd_user},
    {"domain", "domain add|del|list             virtual domains and their userdb defaults", cmd_domain},
    {"pw", "pw [-s SCHEME]                  hash a password, like doveadm pw", cmd_pw},
    {"tls-selfsigned", "tls-selfsigned CERT KEY HOST    write a self-signed certificate and key for HOST", cmd_tls_selfsigned},
};

void usage(FILE* f) {
  std::fprintf(f, "usage: ternctl [-c config] [-o key=value]... COMMAND [ARGS]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(f, "  %s\n", c.usage);
}

}  // namespace
}  // namespace tern::ternctl

int main(int argc, char** argv) {
  using namespace tern;
  common::log::Options o;
  o.service = "ternctl";
  o.sink = common::log::Sink::kStderr;
  common::log::init(o);
  ternctl::Invocation inv;
  inv.config_path = common::default_config_path();
  int i = 1;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" && i + 1 < argc) {
      inv.config_path = argv[++i];
    } else if (a == "-o" && i + 1 < argc) {
      inv.overrides.push_back(argv[++i]);
    } else if (a == "-h" || a == "--help") {
      ternctl::usage(stdout);
      return 0;
    } else {
      break;
    }
  }
  if (i >= argc) {
    ternctl::usage(stderr);
    return EX_USAGE;
  }
  std::string cmd = argv[i++];
  for (; i < argc; ++i) inv.args.push_back(argv[i]);
  for (const auto& c : ternctl::kCommands) {
    if (cmd == c.name) return c.fn(inv);
  }
  std::fprintf(stderr, "ternctl: unknown command '%s'\n", cmd.c_str());
  ternctl::usage(stderr);
  return EX_USAGE;
}
