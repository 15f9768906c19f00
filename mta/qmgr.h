// The queue manager (Postfix qmgr(8) with the delivery agents it drives): picks
// messages from the durable queue, delivers each pending recipient by its
// transport, records the outcome durably, retries temporary failures with
// exponential backoff, and turns permanent failures into RFC 3464 bounces.
//
// Transports:
//   local and virtual-mailbox recipients  LMTP to tern-mda (lmtp_client.h), at most
//                                          lmtp_destination_concurrency_limit at once
//   |command and /file from aliases       local_delivery.h, on the threadpool; as the
//                                          table's owner through local_helper.h when
//                                          tern-mta was started as root
//   relay and remote recipients           SMTP (transport_smtp.h): one job per message
//                                          and next hop (the recipient domain, or
//                                          relayhost), smtp_destination_recipient_limit
//                                          recipients per job
//
// Scheduling: every recipient carries its own state, attempt count and next attempt
// time. A temporary failure waits minimal_backoff_time, doubled per attempt up to
// maximal_backoff_time, less a random part of up to a quarter (jitter, so that mail
// deferred together is not retried in lockstep). A message older than
// maximal_queue_lifetime (bounce_queue_lifetime for mail from <>) is tried once more
// and whatever is still deferred then is returned ("expired"); 0 means one attempt
// only, as in Postfix. delay_warning_time sends one delay notice per recipient.
//
// Notices: bounces, delay warnings and success reports go to the sender (bounce.h);
// the postmaster gets copies per notify_classes: "bounce" (the headers of every
// bounce), "delay" (of every delay notice), "2bounce" (a bounce that could not be
// delivered, whole). Postmaster notices are never themselves reported, so they
// cannot loop.
//
// Order of durable steps for one delivery attempt: the outcome is committed after
// the next hop answered; a bounce is queued (durably) before the recipient is
// marked bounced. A crash between the next hop's 250 and our commit repeats the
// delivery after the restart, which the XTERN-DELIVERY-ID extension of tern-mda
// turns into a no-op (see lmtp_client.h).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/loop.h"
#include "common/smtp_reply.h"
#include "mta/local_delivery.h"
#include "mta/queue_store.h"
#include "mta/recipients.h"
#include "mta/transport_smtp.h"

namespace tern::mta {

class LmtpInFlight;  // mta/lmtp_client.h

struct QmgrSettings {
  std::string myhostname;
  std::string mail_name;
  std::string lmtp_socket;            // from lmtp_destination "unix:PATH"
  uint64_t queue_run_delay_s = 300;
  uint64_t minimal_backoff_s = 300;
  uint64_t maximal_backoff_s = 4000;
  uint64_t maximal_queue_lifetime_s = 5 * 86400;
  uint64_t bounce_queue_lifetime_s = 5 * 86400;
  uint64_t delay_warning_s = 0;
  size_t active_limit = 20000;        // qmgr_message_active_limit
  size_t lmtp_concurrency = 20;
  size_t lmtp_recipient_limit = 50;
  uint64_t lmtp_connect_timeout_ms = 30000;
  uint64_t lmtp_timeout_ms = 600000;
  size_t bounce_size_limit = 50000;
  unsigned command_time_limit_s = 1000;
  // notify_classes and who gets each class (qualified with myorigin).
  bool notify_bounce = false, notify_2bounce = false, notify_delay = false;
  std::string bounce_notice_recipient, twobounce_notice_recipient, delay_notice_recipient;

  static common::Result<QmgrSettings> from_config(const common::Config& cfg);
};

class QueueManager {
 public:
  // `smtp` may be null: remote recipients then stay deferred.
  QueueManager(common::ev::Loop& loop, QmgrSettings settings, QueueStore& queue, RecipientTables& tables,
               std::unique_ptr<SmtpTransport> smtp);
  ~QueueManager();
  // Loads the queue and starts delivering.
  common::Status start();
  // A message was queued: try it now.
  void notify(const std::string& queue_id);
  // Retry everything deferred now (sendmail -q, ternctl queue flush, SIGHUP).
  void flush();
  // Retry one message now; false when it is not waiting (unknown, held or active).
  bool flush(const std::string& queue_id);

  // ternctl queue hold|release|delete (Postfix postsuper -h, -H, -d). A message being
  // delivered is held or deleted when its attempt ends.
  using Done = std::function<void(common::Status)>;
  void hold(const std::string& queue_id, Done done);
  void release(const std::string& queue_id, Done done);
  void remove(const std::string& queue_id, Done done);
  // The local socket's queue commands: verb FLUSH, HOLD, RELEASE or DELETE on a queue
  // id or ALL; the reply says how many messages it applied to.
  void admin(const std::string& verb, const std::string& arg, std::function<void(common::smtp::Reply)> done);

  // Runs a |command or /file delivery (blocking, on the threadpool): deliver_local
  // unless tern-mta has a local helper (local_helper.h) to run it as the table owner.
  using LocalRunner = std::function<LocalOutcome(const LocalJob&)>;
  void set_local_delivery(LocalRunner run) { local_ = std::move(run); }

  void stop();
  size_t active() const { return active_.size(); }
  const std::set<std::string>& active_ids() const { return active_; }

 private:
  void schedule(const std::string& queue_id, int64_t when_s);
  void unschedule(const std::string& queue_id);
  void run();
  void arm_timer();
  void deliver(const std::string& queue_id);
  void finish(const std::string& queue_id, Envelope env, std::vector<size_t> touched);
  void bounce_then_commit(Envelope env, std::vector<size_t> touched);
  void commit(Envelope env, std::vector<size_t> touched);
  int64_t backoff(uint32_t attempts);
  // Runs an LMTP delivery when a connection slot is free; it calls release() when done.
  void lmtp_slot(std::function<void(std::function<void()> release)> start);
  struct Notice;
  void queue_notice(const Notice& n, const std::shared_ptr<Envelope>& env, const std::string& original,
                    std::function<void(bool)> done);

  common::ev::Loop& loop_;
  QmgrSettings s_;
  QueueStore& queue_;
  RecipientTables& tables_;
  std::unique_ptr<SmtpTransport> smtp_;
  LocalRunner local_ = deliver_local;
  common::ev::Timer timer_;
  std::multimap<int64_t, std::string> due_;     // when (unix seconds) -> queue id
  std::map<std::string, int64_t> scheduled_;    // queue id -> when
  std::set<std::string> active_;                // being delivered now
  std::set<std::string> forced_;                // flushed: tried now whatever the backoff
  std::set<std::string> deleted_;               // deleted while active: removed after the attempt
  size_t lmtp_active_ = 0;
  std::deque<std::function<void()>> lmtp_waiting_;
  std::mt19937 rng_{std::random_device{}()};
  bool stopping_ = false;
  std::vector<std::weak_ptr<LmtpInFlight>> lmtp_in_flight_;  // for stop()
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tern::mta
