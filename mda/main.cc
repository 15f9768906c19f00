// tern-mda - local delivery agent (LMTP, RFC 2033) into Maildir++ and mbox
//
// TRUST     Peer is tern-mta or another local MTA on the lmtp socket. Message content
//           is untrusted.
// PRIVILEGE Runs as mail_uid; never writes as root.
// STANDARDS RFC 2033, RFC 5321.
#include <memory>

#include "common/daemon.h"
#include "common/refuse_server.h"

int main(int argc, char** argv) {
  using namespace tern::common;
  std::unique_ptr<RefuseServer> server;
  DaemonSpec spec;
  spec.name = "tern-mda";
  spec.log_service = "lmtp";
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    server = std::make_unique<RefuseServer>(ctx, std::vector<std::pair<std::string, std::string>>{{"lmtp", "421 4.3.2 Service not available, closing transmission channel\\r\\n"}}, "");
    ctx.on_stop = [&] {
      server->stop();
      ctx.loop->stop();
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
