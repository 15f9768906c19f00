// tern-mra - IMAP and POP3: the login process, and (with --worker) the session worker
//
// Three processes serve IMAP (143, 993) and POP3 (110, 995), split as Dovecot splits
// imap-login, its post-login process and imap:
//   tern-mra            the login process (mra/login_server.h): TLS and every byte a
//                       client sends before it has authenticated, authentication
//                       through tern-authd, then the hand-over;
//   tern-mra-postlogin  (mra/postlogin_main.cc) root, no network: learns the user
//                       from tern-authd and starts workers with the user's uid;
//   tern-mra --worker   (mra/worker.h) the sessions of one mail uid, on one loop, over
//                       the user's Maildir and index (mra/maildir_store.h).
//
// TRUST     Every byte before authentication is untrusted and handled only by the
//           login process. Credentials are checked by tern-authd; the identity a
//           worker serves comes from tern-authd through the post-login process,
//           never from the login process. After login, the worker parses the
//           authenticated user's commands with the same bounded parsers.
// PRIVILEGE The login process runs as default_login_user, with no access to mail (it
//           never opens a mailbox or the index), chrooted into base_dir/login
//           (login_chroot) and under the seccomp login profile (common/sandbox.h:
//           no exec, no fork, no network sockets, no writing files). A worker runs as the mail owner's
//           uid and gid (virtual users: mail_uid/mail_gid) and refuses root.
// STANDARDS RFC 3501, RFC 9051, RFC 2177 (IDLE), RFC 4315 (UIDPLUS), RFC 6851 (MOVE),
//           RFC 6154 (SPECIAL-USE), RFC 2342 (NAMESPACE), RFC 2971 (ID), RFC 5161
//           (ENABLE), RFC 4959 (SASL-IR), RFC 7888 (LITERAL+), RFC 3691 (UNSELECT),
//           RFC 3348 (CHILDREN), RFC 5819 (LIST-STATUS), RFC 8438 (STATUS=SIZE),
//           RFC 9208 (QUOTA), RFC 7889 (APPENDLIMIT), RFC 7162 (CONDSTORE), RFC 1939,
//           RFC 2449, RFC 2595, RFC 5034.
#include <cstring>
#include <memory>

#include "common/daemon.h"
#include "mra/login_server.h"
#include "mra/worker.h"

int main(int argc, char** argv) {
  using namespace tern::common;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--worker") == 0) return tern::mra::worker_main(argc, argv);
  }
  std::unique_ptr<tern::mra::LoginServer> server;
  DaemonSpec spec;
  spec.name = "tern-mra";
  spec.log_service = "imap-login";
  spec.pre_jail = [&](DaemonContext& ctx) -> Status {
    server = std::make_unique<tern::mra::LoginServer>(ctx);
    return server->prepare();
  };
  spec.sandbox = sandbox::Profile::kLogin;
  spec.chroot_key = "login_chroot";
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    if (Status s = server->start(); !s) return s;
    ctx.on_stop = [&] {
      // The loop runs until the logins are told and the TLS relays have carried the
      // workers' BYEs; the server (and every handle it owns) goes while it still runs.
      server->stop([&] {
        server.reset();
        ctx.loop->stop();
      });
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
