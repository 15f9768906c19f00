// tern-mda - local delivery agent: LMTP (RFC 2033) into Maildir++ and mbox
//
// Accepts LMTP from tern-mta (or a real Postfix: virtual_transport =
// lmtp:unix:$base_dir/lmtp) on the `lmtp` UNIX socket, looks every recipient up in
// tern-authd's userdb (auth-userdb socket, Dovecot's auth-master USER command) and
// writes each message into the recipient's Maildir (tmp/ -> fsync -> new/ -> fsync
// of new/, group-committed) or mbox (dotlock + fcntl, truncated back on failure),
// then records its UID in the user's mailbox index (common/mailbox_index.h). The
// 250 for a recipient is sent only once its copy is durable.
//
// TRUST     The peer on the lmtp socket is a local MTA. Everything it sends is parsed
//           as untrusted (common/smtp_*.h: bounded lines, bounded message size,
//           strict end-of-data, bare CR/LF refused). Recipient names never become
//           paths: the path comes from the userdb entry (home, mail) and a Maildir
//           whose path leaves the home through a symlink is refused. Userdb replies
//           come from tern-authd over a socket only it serves.
// PRIVILEGE Runs as mail_uid/mail_gid (daemon_main drops to it and exits if it is
//           still root) and writes virtual users' mail as itself. System users'
//           mail must be written as the user: when started as root (by tern-master),
//           the pre_jail hook first forks the delivery helper (delivery_helper.h),
//           which keeps root but never sees the network or LMTP: for each request it
//           looks the user up in tern-authd itself, refuses uid 0, gid 0, and ids outside
//           first/last_valid_uid and _gid, and forks a child that drops to the
//           user's uid/gid for good before touching any file. Without root (the
//           development default) there is no helper, and a recipient whose uid is
//           not ours gets 451 4.3.0 rather than mail written by the wrong owner.
//           Nothing is ever written as root.
// STANDARDS RFC 2033 (LMTP), RFC 5321 (4.1.1.4 DATA, 4.5.2 transparency), RFC 3030
//           (CHUNKING, BINARYMIME), RFC 2920 (PIPELINING), RFC 6152 (8BITMIME),
//           RFC 6531 (SMTPUTF8), RFC 2034 / RFC 3463 (enhanced status codes), RFC 1870
//           (SIZE), the Maildir and Maildir++ conventions, mboxrd.
#include <unistd.h>

#include <ctime>
#include <memory>

#include "common/daemon.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/services.h"
#include "mda/delivery_ids.h"
#include "mda/lmtp_server.h"
#include "mda/userdb.h"

int main(int argc, char** argv) {
  using namespace tern;
  using namespace tern::common;
  std::unique_ptr<mda::DeliveryHelper> helper;
  std::unique_ptr<mda::UserdbLookup> userdb;
  std::unique_ptr<mda::LmtpServer> server;
  std::unique_ptr<mda::DeliveryIds> ids;
  DaemonSpec spec;
  spec.name = "tern-mda";
  spec.log_service = "lmtp";
  spec.pre_jail = [&](DaemonContext& ctx) -> Status {
    if (::geteuid() != 0) return {};  // unprivileged: virtual users only
    std::vector<int> fds;
    for (const auto& l : ctx.listen_fds) fds.push_back(l.fd);
    Result<std::unique_ptr<mda::DeliveryHelper>> h = mda::DeliveryHelper::start(ctx.config, fds);
    if (!h) return h.take_error();
    helper = std::move(h).value();
    return {};
  };
  spec.post_jail = [&](DaemonContext& ctx) -> Status {
    const Config& cfg = ctx.config;
    mda::Settings settings = mda::Settings::from_config(cfg);
    mda::LmtpSession::Options o;
    o.hostname = cfg.str("myhostname");
    o.size_limit = cfg.bytes("lmtp_message_size_limit");
    o.recipient_limit = static_cast<size_t>(cfg.integer("lmtp_recipient_limit"));
    o.hard_error_limit = static_cast<int>(cfg.integer("lmtp_hard_error_limit"));
    o.forbid_bare_newline = cfg.boolean("lmtp_forbid_bare_newline");
    o.recipient_delimiter = cfg.str("recipient_delimiter");
    o.save_to_detail_mailbox = cfg.boolean("lmtp_save_to_detail_mailbox");
    o.temp_dir = cfg.str("mail_temp_dir");
    o.local_domains = cfg.list("mydestination");
    userdb = std::make_unique<mda::UserdbLookup>(*ctx.loop, cfg.str("base_dir") + "/auth-userdb");
    // XTERN-DELIVERY-ID memory (delivery_ids.h): a week covers any crash-and-retry of
    // tern-mta. Without it tern-mda still works; exactly-once falls back to at-least-once.
    auto di = mda::DeliveryIds::open(cfg.str("data_directory") + "/mda/delivery-ids.lmdb",
                                     mda::kDeliveryIdKeepSeconds);
    if (di) {
      ids = std::move(di).value();
      ids->prune(static_cast<int64_t>(::time(nullptr)));
    } else {
      log::warning("XTERN-DELIVERY-ID disabled: %s", di.error().message.c_str());
    }
    server = std::make_unique<mda::LmtpServer>(
        *ctx.loop, settings, o, static_cast<uint64_t>(cfg.seconds("lmtp_timeout")) * 1000,
        [&](const std::string& user, mda::LmtpSession::Host::LookupDone done) { userdb->lookup(user, std::move(done)); },
        helper.get(), ids.get());
    std::vector<uid_t> id_peers = {0, ::geteuid()};
    if (common::Result<common::UserIds> mo = common::lookup_user(cfg.str("mail_owner"))) id_peers.push_back(mo->uid);
    std::vector<uid_t> allowed = id_peers;
    if (common::Result<common::UserIds> mu = common::lookup_user(cfg.str("mail_uid"))) allowed.push_back(mu->uid);
    common::Result<std::vector<uid_t>> extra = common::configured_uids(cfg, "lmtp_allow_users");
    if (!extra) return extra.take_error();
    allowed.insert(allowed.end(), extra->begin(), extra->end());
    server->set_delivery_id_peers(std::move(id_peers));
    server->set_allowed_peers(std::move(allowed));
    std::vector<int> fds = ctx.listeners("lmtp");
    if (fds.empty()) return make_error(ErrorKind::kConfig, "tern-mda has no lmtp listener");
    for (int fd : fds) server->listen(fd, "lmtp");
    ctx.on_stop = [&] {
      // Once the deliveries in progress are done, destroy everything that owns loop
      // handles while the loop still exists (outside any of their callbacks), then end.
      server->stop([&] {
        ctx.loop->post([&] {
          server.reset();
          userdb.reset();
          ctx.loop->stop();
        });
      });
    };
    return {};
  };
  return daemon_main(argc, argv, spec);
}
