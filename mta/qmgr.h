// The queue manager (Postfix qmgr(8) with the delivery agents it drives): picks
// messages from the durable queue, delivers each pending recipient by its
// transport, records the outcome durably, retries temporary failures with
// exponential backoff, and turns permanent failures into RFC 3464 bounces.
//
// Transports:
//   local and virtual-mailbox recipients  LMTP to tern-mda (lmtp_client.h)
//   |command and /file from aliases       local_delivery.h, on the threadpool
//   relay and remote recipients           SMTP delivery is tern-mta's sending half
//                                          (its own issue); until it exists they wait
//                                          in the queue, deferred, and expire as
//                                          Postfix's would.
//
// Order of durable steps for one delivery attempt: the outcome is committed after
// the next hop answered; a bounce is queued (durably) before the recipient is
// marked bounced. A crash between the next hop's 250 and our commit repeats the
// delivery after the restart, which the XTERN-DELIVERY-ID extension of tern-mda
// turns into a no-op (see lmtp_client.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "common/config.h"
#include "common/loop.h"
#include "mta/queue_store.h"
#include "mta/recipients.h"

namespace tern::mta {

struct QmgrSettings {
  std::string myhostname;
  std::string mail_name;
  std::string lmtp_socket;            // from lmtp_destination "unix:PATH"
  uint64_t queue_run_delay_s = 300;
  uint64_t minimal_backoff_s = 300;
  uint64_t maximal_backoff_s = 4000;
  uint64_t maximal_queue_lifetime_s = 5 * 86400;
  uint64_t delay_warning_s = 0;
  size_t concurrency = 20;
  size_t lmtp_recipient_limit = 50;
  uint64_t lmtp_connect_timeout_ms = 30000;
  uint64_t lmtp_timeout_ms = 600000;
  size_t bounce_size_limit = 50000;

  static common::Result<QmgrSettings> from_config(const common::Config& cfg);
};

class QueueManager {
 public:
  QueueManager(common::ev::Loop& loop, QmgrSettings settings, QueueStore& queue, RecipientTables& tables);
  ~QueueManager();
  // Loads the queue and starts delivering.
  common::Status start();
  // A message was queued: try it now.
  void notify(const std::string& queue_id);
  // Retry everything deferred now (sendmail -q, ternctl flush, SIGHUP).
  void flush();
  void stop() { stopping_ = true; }
  size_t active() const { return active_.size(); }
  const std::set<std::string>& active_ids() const { return active_; }

 private:
  void schedule(const std::string& queue_id, int64_t when_s);
  void run();
  void arm_timer();
  void deliver(const std::string& queue_id);
  void finish(const std::string& queue_id, Envelope env, std::vector<size_t> touched);
  void bounce_then_commit(Envelope env, std::vector<size_t> touched);
  void commit(Envelope env, std::vector<size_t> touched);
  int64_t backoff(uint32_t attempts) const;

  common::ev::Loop& loop_;
  QmgrSettings s_;
  QueueStore& queue_;
  RecipientTables& tables_;
  common::ev::Timer timer_;
  std::multimap<int64_t, std::string> due_;     // when (unix seconds) -> queue id
  std::map<std::string, int64_t> scheduled_;    // queue id -> when
  std::set<std::string> active_;                // being delivered now
  std::set<std::string> forced_;                // flushed: tried now whatever the backoff
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tern::mta
