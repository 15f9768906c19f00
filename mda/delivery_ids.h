// The deliveries tern-mda made under an XTERN-DELIVERY-ID (Tern's private LMTP
// extension, mta/lmtp_client.h): (delivery id, recipient) pairs with the time they
// were delivered, in a small LMDB file. tern-mta sends its queue id as the delivery
// id; when it crashed after our 250 and before it recorded the delivery, it sends
// the same message again after its restart, and the session answers 250 for the
// pairs found here without delivering a second copy.
//
// A pair is recorded (durably) before the 250 goes out, and kept for `keep_s`
// seconds (tern-mta retries a message for at most maximal_queue_lifetime, but the
// window this closes is a crash of tern-mta, so days are plenty).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/lmdb.h"
#include "common/mailbox_index.h"
#include "common/result.h"

namespace tern::mda {

// How long a pair is kept (here and in the mailbox indexes, see mda/delivery.h).
inline constexpr int64_t kDeliveryIdKeepSeconds = 7 * 86400;

class DeliveryIds {
 public:
  static common::Result<std::unique_ptr<DeliveryIds>> open(const std::string& path, int64_t keep_s);
  // Whether (id, recipient) was delivered; false also when the store cannot be read
  // (delivering twice is better than not delivering).
  bool seen(const std::string& id, const std::string& recipient);
  // Records the pairs; an error means the 250 must not go out as "recorded".
  // Blocking (an fdatasync), so never on the event loop; thread-safe: records made
  // at the same time share one commit (common::index::GroupCommit).
  common::Status record(const std::string& id, const std::vector<std::string>& recipients, int64_t now);
  // Removes pairs older than keep_s.
  void prune(int64_t now);

 private:
  DeliveryIds() = default;
  std::unique_ptr<common::lmdb::Env> env_;
  std::unique_ptr<common::index::GroupCommit> group_;  // after env_: destroyed first
  MDB_dbi dbi_ = 0;
  int64_t keep_s_ = 0;
  std::atomic<uint64_t> writes_{0};
};

// The LMDB key of a pair: id, NUL, the recipient lower-cased.
std::string delivery_key(const std::string& id, const std::string& recipient);

}  // namespace tern::mda
