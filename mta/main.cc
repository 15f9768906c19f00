// tern-mta - SMTP server, durable queue, queue manager, SMTP client and local
// delivery hand-off
//
// Receives mail on the listeners tern-master passes in (smtp 25, submission 587,
// smtps 465) and on the local "sendmail" socket, queues it durably (queue_store.h:
// the 250 goes out only after the commit), expands aliases, delivers local and
// virtual-mailbox recipients to tern-mda over LMTP, and everything else over SMTP
// to the recipient domain's MX hosts or to relayhost (transport_smtp.h). Mail that
// sendmail left in the maildrop directory while tern-mta was down is picked up at
// start.
//
// TRUST     Every byte from a network client is untrusted; the local socket's peer
//           is identified by SO_PEERCRED and trusted only to be that uid. tern-mda
//           and tern-authd are trusted peers on UNIX sockets. SMTP servers we send
//           to and DNS answers are untrusted too (bounded replies, a pure client
//           state machine, no password without TLS unless configured).
// PRIVILEGE Runs as mail_owner (never root: daemon_main refuses). Owns the queue.
//           Reads the TLS key before dropping privilege. Started as root, it first
//           forks the local helper (local_helper.h), which keeps root to run
//           |command and /file aliases as their table's owner or default_privs.
//           Then no_new_privs and the seccomp mta profile (common/sandbox.h): no
//           exec, no fork, no ptrace; sockets of the inet, inet6, unix families.
// STANDARDS RFC 5321, 6409, 8314, 3207, 4954, 1870, 2920, 6152, 6531, 2034, 3030,
//           3461, 3464, 2033 (client), 7505 (null MX), 4616 (PLAIN client).
#include <unistd.h>

#include <memory>

#include "common/daemon.h"
#include "common/dns.h"
#include "common/log.h"
#include "common/text.h"
#include "common/tls.h"
#include "mta/authd_glue.h"
#include "mta/local_helper.h"
#include "mta/pickup.h"
#include "mta/qmgr.h"
#include "mta/queue_store.h"
#include "mta/recipients.h"
#include "mta/showq.h"
#include "mta/smtpd.h"

int main(int argc, char** argv) {
  using namespace tern;
  using common::Status;
  std::shared_ptr<common::tls::Context> tls, mandatory_tls;
  std::unique_ptr<mta::QueueStore> queue;
  std::unique_ptr<mta::RecipientTables> tables;
  std::unique_ptr<common::dns::Resolver> resolver;
  std::unique_ptr<mta::AuthdSasl> sasl;
  std::unique_ptr<mta::QueueManager> qmgr;
  std::unique_ptr<mta::SmtpServer> server;
  std::unique_ptr<mta::Pickup> pickup;
  std::unique_ptr<mta::LocalHelper> local_helper;

  common::DaemonSpec spec;
  spec.name = "tern-mta";
  spec.log_service = "smtpd";
  spec.pre_jail = [&](common::DaemonContext& ctx) -> Status {
    const common::Config& cfg = ctx.config;
    if (::geteuid() == 0) {
      // First, before the TLS key is read: the root helper that runs alias
      // commands and files as their table's owner (local_helper.h).
      auto h = mta::LocalHelper::start(cfg);
      if (!h) return h.take_error();
      local_helper = std::move(h).value();
    }
    const std::string cert = cfg.str("smtpd_tls_cert_file");
    if (!cert.empty() && common::to_lower(cfg.str("smtpd_tls_security_level")) != "none") {
      // Two contexts, as Postfix's smtpd_tls_ciphers / smtpd_tls_mandatory_ciphers:
      // port 25's opportunistic STARTTLS keeps a broad list (a sender with only 3DES
      // or static RSA would otherwise fall back to plaintext), while the ports where
      // TLS is mandatory (submission, smtps) get the strong one.
      for (const auto& [key, out] : {std::pair<const char*, std::shared_ptr<common::tls::Context>*>{"smtpd_tls_ciphers", &tls},
                                     {"smtpd_tls_mandatory_ciphers", &mandatory_tls}}) {
        const std::string grade = common::to_lower(cfg.str(key));
        if (grade != "high" && grade != "medium") {
          return common::make_error(common::ErrorKind::kConfig, cfg.origin(key) + ": parameter '" + key +
                                                                    "': unknown cipher grade '" + common::log_escape(grade, 32) +
                                                                    "' (high or medium)");
        }
        const char* list_key = grade == "high" ? "tls_high_cipherlist" : "tls_medium_cipherlist";
        auto c = common::tls::Context::server(cert, cfg.str("smtpd_tls_key_file"), cfg.str("ssl_min_protocol"),
                                              cfg.str(list_key));
        if (!c) {
          return common::make_error(common::ErrorKind::kConfig,
                                    std::string("smtpd_tls_cert_file/") + key + " (" + list_key + "): " + c.error().message);
        }
        *out = std::move(c).value();
      }
    }
    return {};
  };
  spec.sandbox = common::sandbox::Profile::kMta;
  spec.post_jail = [&](common::DaemonContext& ctx) -> Status {
    const common::Config& cfg = ctx.config;
    common::ev::Loop& loop = *ctx.loop;
    common::Result<mta::SmtpdSettings> settings = mta::SmtpdSettings::from_config(cfg);
    if (!settings) return settings.take_error();
    common::Result<mta::QmgrSettings> qs = mta::QmgrSettings::from_config(cfg);
    if (!qs) return qs.take_error();
    mta::QueueStore::Options qo;
    qo.inline_limit = cfg.bytes("queue_inline_limit");
    auto q = mta::QueueStore::open(loop, cfg.str("queue_directory"), qo);
    if (!q) return q.take_error();
    queue = std::move(q).value();
    auto t = mta::RecipientTables::from_config(cfg);
    if (!t) return t.take_error();
    tables = std::move(t).value();
    tables->set_userdb(mta::authd_userdb(loop, cfg.str("base_dir") + "/auth-userdb"));
    common::dns::Resolver::Options ro;
    ro.servers = cfg.str("dns_servers");
    ro.timeout_ms = static_cast<uint64_t>(cfg.seconds("dns_timeout")) * 1000;
    ro.tries = static_cast<int>(cfg.integer("dns_tries"));
    auto r = common::dns::Resolver::create(loop, ro);
    if (!r) {
      common::log::warning("DNS resolver unavailable: %s", r.error().message.c_str());
    } else {
      resolver = std::move(r).value();
    }
    const std::string sasl_path = cfg.str("smtpd_sasl_path");
    if (common::to_lower(cfg.str("smtpd_sasl_type")) != "dovecot") {
      return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtpd_sasl_type") +
                                                                ": smtpd_sasl_type: only dovecot is supported");
    }
    sasl = std::make_unique<mta::AuthdSasl>(loop, sasl_path);
    common::Result<mta::SmtpTransportSettings> ts = mta::SmtpTransportSettings::from_config(cfg);
    if (!ts) return ts.take_error();
    mta::QueueStore* qp = queue.get();
    auto smtp = mta::SmtpTransport::create(loop, std::move(ts).value(), resolver.get(),
                                           [qp](const std::string& id) -> common::Result<mta::QueuedBody> {
                                             mta::QueuedBody b;
                                             common::Result<mta::Envelope> e = qp->envelope(id);
                                             if (!e) return e.take_error();
                                             if (e->large_body) {
                                               auto fd = qp->body_fd(id);
                                               if (!fd) return fd.take_error();
                                               b.fd = std::move(fd->first);
                                               b.size = fd->second;
                                             } else {
                                               auto data = qp->body(id);
                                               if (!data) return data.take_error();
                                               b.data = std::move(data).value();
                                               b.size = b.data.size();
                                             }
                                             return b;
                                           });
    if (!smtp) return smtp.take_error();
    qmgr = std::make_unique<mta::QueueManager>(loop, std::move(qs).value(), *queue, *tables, std::move(smtp).value());
    if (local_helper) {
      mta::LocalHelper* h = local_helper.get();
      qmgr->set_local_delivery([h](const mta::LocalJob& job) { return h->deliver(job); });
    }
    server = std::make_unique<mta::SmtpServer>(loop, std::move(settings).value(), *queue, *tables, tls, sasl.get(),
                                               resolver.get(),
                                               [&](const std::string& id) { qmgr->notify(id); });
    server->set_mandatory_tls(mandatory_tls);
    server->flush = [&] { qmgr->flush(); };
    server->queue_admin = [&](const std::string& verb, const std::string& arg,
                              std::function<void(common::smtp::Reply)> done) { qmgr->admin(verb, arg, std::move(done)); };
    server->showq = [&] {
      std::vector<mta::Envelope> all;
      common::Status st = queue->for_each([&](const mta::Envelope& e) { all.push_back(e); });
      if (!st) return "mailq: cannot read the queue: " + st.error().message + "\n";
      return mta::format_mailq(all, qmgr->active_ids());
    };
    for (const auto& [name, port] : {std::pair{"smtp", mta::Port::kMx}, std::pair{"submission", mta::Port::kSubmission},
                                     std::pair{"smtps", mta::Port::kSmtps}, std::pair{"sendmail", mta::Port::kLocal}}) {
      for (int fd : ctx.listeners(name)) server->listen(fd, port, name);
    }
    if (Status st = qmgr->start(); !st) return st;
    auto p = mta::Pickup::create(loop, cfg, *queue, *tables, [&](const std::string& id) { qmgr->notify(id); });
    if (!p) return p.take_error();
    pickup = std::move(p).value();
    // The first scan parses local users' maildrop files: on the loop, so after the
    // seccomp filter is on (sandbox.h: before the first untrusted byte; review, finding 6).
    ctx.loop->post([&] {
      if (pickup) pickup->scan();
    });
    ctx.on_stop = [&] {
      // Stop taking new work; what is queued is durable and waits for the next
      // start. Everything that owns loop handles goes while the loop still runs
      // (their handles must close before the loop does).
      server->stop();
      pickup->stop();
      qmgr->stop();
      ctx.loop->post([&] {
        server.reset();
        pickup.reset();
        qmgr.reset();
        sasl.reset();
        resolver.reset();
        tables.reset();
        queue.reset();
        ctx.loop->stop();
      });
    };
    ctx.on_reload = [&] {
      if (qmgr) qmgr->flush();
      if (pickup) pickup->scan();
    };
    return {};
  };
  return common::daemon_main(argc, argv, spec);
}
