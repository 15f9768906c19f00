// tern-mra - IMAP and POP3 (login process)
//
// TRUST     Every byte before authentication is untrusted and handled only here.
// PRIVILEGE Runs as default_login_user, with no access to mail.
// STANDARDS RFC 3501, RFC 9051, RFC 1939.
#include <memory>

#include "common/daemon.h"
#include "common/refuse_server.h"

int main(int argc, char** argv) {
  using namespace tern::common;
  std::unique_ptr<RefuseServer> server;
  DaemonSpec spec;
  spec.name = "tern-mra";
  spec.log_service = "imap-login";
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    server = std::make_unique<RefuseServer>(ctx, std::vector<std::pair<std::string, std::string>>{{"imap", "* BYE [UNAVAILABLE] Service not available\r\n"}, {"pop3", "-ERR [SYS/TEMP] Service not available\r\n"}}, "");
    ctx.on_stop = [&] {
      server->stop();
      ctx.loop->stop();
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
