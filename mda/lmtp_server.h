// The LMTP server of tern-mda on the event loop: accepts on the lmtp listeners, runs
// one LmtpSession per connection, does userdb lookups through a Lookup function
// (tern-authd's auth-userdb in production) and runs deliveries on the libuv
// threadpool, one work item per recipient, so deliveries that finish together share
// their directory fsyncs (maildir::DirSyncer).
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/loop.h"
#include "common/maildir.h"
#include "common/sockets.h"
#include "mda/delivery.h"
#include "mda/delivery_helper.h"
#include "mda/delivery_ids.h"
#include "mda/lmtp_session.h"

namespace tern::mda {

class LmtpConnection;

class LmtpServer {
 public:
  using Lookup = std::function<void(const std::string& user, LmtpSession::Host::LookupDone done)>;
  // `helper` (may be null) delivers to users whose uid is not ours (delivery_helper.h).
  // `ids` (may be null) remembers deliveries by XTERN-DELIVERY-ID (delivery_ids.h).
  LmtpServer(common::ev::Loop& loop, Settings settings, LmtpSession::Options options, uint64_t idle_timeout_ms,
             Lookup lookup, DeliveryHelper* helper = nullptr, DeliveryIds* ids = nullptr);
  ~LmtpServer();
  // Serves a listening socket (the fd is duplicated).
  void listen(int fd, const std::string& name);
  // Stops accepting, closes the connections, and calls `done` once every delivery in
  // progress has finished.
  void stop(std::function<void()> done);
  // Local peers (by SO_PEERCRED uid) that may use XTERN-DELIVERY-ID: tern-mta's user
  // and root. Anyone else who can reach the socket gets plain LMTP, so a local user
  // cannot record delivery ids that would make tern-mda skip someone's mail.
  void set_delivery_id_peers(std::vector<uid_t> uids) { id_peers_ = std::move(uids); }
  // Local peers (SO_PEERCRED uid) that may deliver at all: root, tern-mda's own
  // uid, mail_owner and lmtp_allow_users. Any other local peer gets 554 5.7.1 and
  // is closed. Empty: everyone (TCP peers are not checked here).
  void set_allowed_peers(std::vector<uid_t> uids) { allowed_peers_ = std::move(uids); }

 private:
  friend class LmtpConnection;
  void accepted(common::UniqueFd fd);
  void finished(LmtpConnection* c);
  void work_done();

  common::ev::Loop& loop_;
  Settings settings_;
  LmtpSession::Options options_;
  uint64_t idle_timeout_ms_;
  Lookup lookup_;
  DeliveryHelper* helper_;
  DeliveryIds* ids_;
  std::vector<uid_t> id_peers_;
  std::vector<uid_t> allowed_peers_;
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::set<std::shared_ptr<LmtpConnection>> conns_;
  common::maildir::DirSyncer syncer_;
  size_t active_work_ = 0;
  uint64_t next_id_ = 0;
  bool stopping_ = false;
  std::function<void()> on_stopped_;
};

}  // namespace tern::mda
