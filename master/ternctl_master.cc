// ternctl config / status / reload / stop.
#include <sysexits.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "common/config_keys.h"
#include "common/sockets.h"
#include "common/text.h"
#include "common/tls.h"
#include "master/control_protocol.h"
#include "master/ternctl.h"

namespace tern::ternctl {

int cmd_config(const Invocation& inv) {
  bool non_default = false, defaults = false, expand = false;
  std::vector<std::string> keys;
  for (const std::string& a : inv.args) {
    if (a == "-n") non_default = true;
    else if (a == "-d") defaults = true;
    else if (a == "-x") expand = true;
    else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "ternctl config: unknown option %s\n", a.c_str());
      return EX_USAGE;
    } else keys.push_back(a);
  }
  common::Config cfg = defaults ? common::Config() : inv.load_config();
  if (keys.empty()) {
    std::fputs(cfg.dump(non_default, expand).c_str(), stdout);
    return 0;
  }
  int rc = 0;
  for (const std::string& k : keys) {
    if (!common::find_key(k)) {
      std::fprintf(stderr, "ternctl: warning: %s\n", common::unknown_key_message(k).c_str());
      rc = EX_USAGE;
      continue;
    }
    if (non_default && !cfg.is_set(k)) continue;  // as postconf -n with names
    std::printf("%s = %s\n", k.c_str(), expand ? cfg.str(k).c_str() : cfg.raw(k).c_str());
  }
  return rc;
}

namespace {

// Sends one request; prints the answer; returns 0 on ".", 1 on "error: ...".
int request(const Invocation& inv, const std::string& req) {
  common::Config cfg = inv.load_config();
  const std::string path = cfg.str("base_dir") + "/" + master::kControlSocketName;
  common::Result<common::UniqueFd> fd = common::net::connect_unix(path);
  if (!fd) {
    std::fprintf(stderr, "ternctl: the Tern mail system is not running (%s)\n", fd.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  std::string line = req + "\n";
  if (::write(fd->get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    std::fprintf(stderr, "ternctl: write %s: %s\n", path.c_str(), std::strerror(errno));
    return EX_IOERR;
  }
  std::string answer;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  std::vector<std::string> lines = common::split(answer, '\n');
  for (const std::string& l : lines) {
    if (l == ".") return 0;
    if (l.rfind("error: ", 0) == 0) {
      std::fprintf(stderr, "ternctl: %s\n", l.c_str() + 7);
      return 1;
    }
    if (!l.empty()) std::printf("%s\n", l.c_str());
  }
  std::fprintf(stderr, "ternctl: tern-master closed the connection without an answer\n");
  return EX_PROTOCOL;
}

}  // namespace

int cmd_tls_selfsigned(const Invocation& inv) {
  if (inv.args.size() != 3) {
    std::fprintf(stderr, "usage: ternctl tls-selfsigned CERT KEY HOST\n");
    return EX_USAGE;
  }
  if (common::Status s = common::tls::make_self_signed(inv.args[0], inv.args[1], inv.args[2]); !s) {
    std::fprintf(stderr, "ternctl: %s\n", s.error().message.c_str());
    return EX_CANTCREAT;
  }
  return 0;
}

int cmd_status(const Invocation& inv) { return request(inv, "status"); }
int cmd_reload(const Invocation& inv) { return request(inv, "reload"); }
int cmd_stop(const Invocation& inv) { return request(inv, "stop"); }

}  // namespace tern::ternctl
