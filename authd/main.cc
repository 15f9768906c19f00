// tern-authd - authentication daemon (Dovecot auth protocol 1.2 over UNIX sockets)
//
// Serves auth-client (SASL authentication for tern-mta, tern-mra's login process and
// a real Postfix with smtpd_sasl_type = dovecot) and auth-userdb (uid/gid/home/mail
// lookups, and REQUEST for tern-mra's session workers). Mechanisms come from Cyrus
// SASL; passwords from the virtual-user LMDB (authd/userdb.h) and, when configured,
// from PAM for system users through the auth worker (authd/worker.h).
//
// TRUST     auth-client (0666) peers are any local process: every line is parsed as
//           untrusted, requests are bounded per connection, failures are delayed
//           and penalised per remote IP. A peer's rip, secured and no-penalty are
//           believed only from root and auth_client_trusted_users (SO_PEERCRED);
//           anyone else is penalised by its uid. auth-userdb peers are checked by
//           SO_PEERCRED (root, mail_uid, mail_owner, auth_userdb_allow_users).
// PRIVILEGE Runs as authd_user, the only process that sees credentials; the user
//           database ($data_directory/auth, 0700) is readable by it alone. The
//           system-user path (PAM, passwd) runs in the auth worker, forked before
//           the privilege drop and kept as auth_worker_user (root by default, as
//           Dovecot's auth-worker) because pam_unix reads /etc/shadow; it never
//           sees network bytes, and closes tern-authd's listening sockets. Neither
//           dumps core nor can be ptraced (PR_SET_DUMPABLE 0, RLIMIT_CORE 0) unless
//           process_core_dumps = yes. Does not link BoringSSL (Cyrus SASL links
//           OpenSSL).
// STANDARDS Dovecot auth protocol 1.2 and auth-master 1.0, RFC 4422 (SASL), RFC 4616
//           (PLAIN), RFC 5802 and 7677 (SCRAM), RFC 2195 (CRAM-MD5).
#include <memory>

#include "authd/auth_core.h"
#include "authd/auth_server.h"
#include "authd/sasl.h"
#include "authd/userdb.h"
#include "authd/userdb_server.h"
#include "authd/worker.h"
#include "common/daemon.h"
#include "common/log.h"

int main(int argc, char** argv) {
  using namespace tern;
  using common::ErrorKind;
  std::unique_ptr<authd::WorkerClient> worker;
  std::unique_ptr<authd::AuthCore> core;
  std::unique_ptr<authd::UserdbServer> userdb_server;
  std::unique_ptr<authd::AuthServer> auth_server;
  std::unique_ptr<authd::AuthSettings> settings;

  common::DaemonSpec spec;
  spec.name = "tern-authd";
  spec.log_service = "auth";
  spec.pre_jail = [&](common::DaemonContext& ctx) -> common::Status {
    // getpw* for mail_uid and friends, once, while the files are certainly readable.
    common::Result<authd::AuthSettings> s = authd::AuthSettings::from_config(ctx.config);
    if (!s) return s.take_error();
    settings = std::make_unique<authd::AuthSettings>(std::move(s).value());
    if (settings->passdb_pam || settings->userdb_passwd) {
      authd::WorkerSettings ws;
      ws.pam_service = settings->pam_service;
      ws.ids = settings->ids;
      ws.max_children = static_cast<unsigned>(ctx.config.integer("auth_worker_max_count"));
      ws.run_as = ctx.config.str("auth_worker_user");
      for (const common::net::InheritedFd& l : ctx.listen_fds) ws.close_fds.push_back(l.fd);
      ws.core_dumps = ctx.config.boolean("process_core_dumps");
      common::Result<std::unique_ptr<authd::WorkerClient>> w = authd::WorkerClient::start(ws);
      if (!w) return w.take_error();
      worker = std::move(w).value();
    }
    return {};
  };
  spec.post_jail = [&](common::DaemonContext& ctx) -> common::Status {
    // The uid change cleared the dumpable flag only when we started as root; the core
    // limit is ours to set either way.
    if (common::Status s = common::restrict_core_dumps(ctx.config.boolean("process_core_dumps")); !s) return s;
    // As authd_user: the database and its lock file belong to us, not to root.
    common::Result<std::unique_ptr<authd::UserDb>> db = authd::UserDb::open(settings->db_path, true);
    if (!db) {
      return common::make_error(ErrorKind::kTemp, "user database " + settings->db_path + ": " + db.error().message);
    }
    core = std::make_unique<authd::AuthCore>(*ctx.loop, *settings, std::move(db).value(), worker.get());
    if (common::Status s = authd::Sasl::init(*core); !s) return s;
    userdb_server = std::make_unique<authd::UserdbServer>(*core);
    auth_server = std::make_unique<authd::AuthServer>(*core);
    for (int fd : ctx.listeners("auth-userdb")) userdb_server->listen(fd);
    for (int fd : ctx.listeners("auth-client")) auth_server->listen(fd);
    for (int fd : ctx.listeners("login-auth-client")) auth_server->listen(fd);
    ctx.on_stop = [&] {
      // Everything that owns loop handles goes while the loop still runs (outside
      // any of its callbacks): the loop closes after daemon_main returns.
      userdb_server->stop();
      auth_server->stop();
      // Threadpool work in progress still uses the core and the worker.
      core->when_idle([&] {
        auth_server.reset();
        userdb_server.reset();
        core.reset();
        worker.reset();
        ctx.loop->stop();
      });
    };
    return {};
  };
  int rc = common::daemon_main(argc, argv, spec);
  auth_server.reset();
  userdb_server.reset();
  core.reset();
  worker.reset();
  authd::Sasl::done();
  return rc;
}
