// tern-mta - SMTP server, queue and SMTP client
//
// TRUST     Every byte from a client is untrusted.
// PRIVILEGE Runs as mail_owner.
// STANDARDS RFC 5321, RFC 6409, RFC 8314, RFC 3207.
#include <memory>

#include "common/daemon.h"
#include "common/refuse_server.h"

int main(int argc, char** argv) {
  using namespace tern::common;
  std::unique_ptr<RefuseServer> server;
  DaemonSpec spec;
  spec.name = "tern-mta";
  spec.log_service = "smtpd";
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    server = std::make_unique<RefuseServer>(ctx, std::vector<std::pair<std::string, std::string>>{{"smtp", "421 4.3.2 Service not available, closing transmission channel\\r\\n"}, {"submission", "421 4.3.2 Service not available, closing transmission channel\\r\\n"}}, "");
    ctx.on_stop = [&] {
      server->stop();
      ctx.loop->stop();
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
