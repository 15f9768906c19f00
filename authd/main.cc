// tern-authd - authentication daemon (Dovecot auth protocol 1.2 over UNIX sockets)
//
// TRUST     Peers on auth-client are login processes (tern-mta, tern-mra, Postfix);
//           peers on auth-userdb are checked by SO_PEERCRED.
// PRIVILEGE Runs as authd_user; the only process that sees credentials.
// STANDARDS Dovecot auth protocol 1.2, RFC 4422.
#include <memory>

#include "common/daemon.h"
#include "common/refuse_server.h"

int main(int argc, char** argv) {
  using namespace tern::common;
  std::unique_ptr<RefuseServer> server;
  DaemonSpec spec;
  spec.name = "tern-authd";
  spec.log_service = "auth";
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    server = std::make_unique<RefuseServer>(ctx, std::vector<std::pair<std::string, std::string>>{}, "");
    ctx.on_stop = [&] {
      server->stop();
      ctx.loop->stop();
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
