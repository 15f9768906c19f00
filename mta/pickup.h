// Pickup of the maildrop directory (Postfix pickup(8)): files that sendmail left
// while tern-mta was down (or could not be reached) become queued messages. Scanned
// at start, on SIGHUP, and every few seconds; each file is removed only after its
// message is durably queued, so a crash in between queues it again (at least once,
// never lost).
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "common/config.h"
#include "common/loop.h"
#include "mta/queue_store.h"
#include "mta/recipients.h"

namespace tern::mta {

class Pickup {
 public:
  using OnQueued = std::function<void(const std::string& queue_id)>;
  static common::Result<std::unique_ptr<Pickup>> create(common::ev::Loop& loop, const common::Config& cfg,
                                                        QueueStore& queue, RecipientTables& tables, OnQueued on_queued);
  ~Pickup();
  void scan();
  void stop();

 private:
  Pickup(common::ev::Loop& loop, QueueStore& queue, RecipientTables& tables, OnQueued on_queued)
      : queue_(queue), tables_(tables), on_queued_(std::move(on_queued)), timer_(loop) {}
  void take(const std::string& name);

  QueueStore& queue_;
  RecipientTables& tables_;
  OnQueued on_queued_;
  common::ev::Timer timer_;
  std::string dir_;
  std::string myhostname_, mail_name_, myorigin_, message_id_domain_;
  size_t header_size_limit_ = 102400;
  std::vector<std::string> drop_headers_;  // message_drop_headers, lower case
  uint64_t message_size_limit_ = 0;
  std::set<std::string> busy_;
  bool stopped_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tern::mta
