// The durable mail queue (DESIGN.md §3).
//
// One LMDB environment ($queue_directory/queue.lmdb) holds each message's envelope,
// its recipients' delivery state and, up to inline_limit bytes, its body; a larger
// body is a file of its own under $queue_directory/large/, fsynced with its
// directory. Measured on the development machines (bench/fsync_probe.cc): a file per
// message costs ~460 us of fsyncs, one LMDB commit shared by 16 messages ~59 us per
// 1 KB message and ~416 us per 100 KB one, and LMDB reuses its pages, so mass
// deletes do not leave the slow new inodes that ext4 without a journal suffers from.
//
// Group commit: enqueue(), update() and remove() only queue an operation. One write
// transaction at a time runs on the libuv threadpool; everything queued while it runs
// goes into the next one, so under load many sessions share one commit and no
// message waits for a timer. Delivery-state updates with no message to share a
// commit with wait up to lazy_commit_ms for one (nobody is waiting on them). A
// callback runs (on the loop thread) only after its operation is durable: an SMTP
// server sends 250 from it and nothing else.
//
// The store is the MTA's alone (one process writes). Readers in other processes
// (mailq, ternctl queue) open the same environment read-only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/lmdb.h"
#include "common/loop.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::mta {

// DSN NOTIFY bits (RFC 3461 4.1); 0 means not given (default: FAILURE, DELAY).
enum NotifyBits : uint8_t {
  kNotifyNever = 1,
  kNotifySuccess = 2,
  kNotifyFailure = 4,
  kNotifyDelay = 8,
};

struct Recipient {
  // Where the recipient stands.
  enum class State : uint8_t {
    kPending = 0,    // to be delivered (first attempt or retry)
    kDelivered = 1,  // a 2xx from the next hop
    kBounced = 2,    // a permanent failure (5xx, or lifetime expired); a bounce was made
  };
  // What `address` is.
  enum class Kind : uint8_t {
    kAddress = 0,  // an envelope address
    kCommand = 1,  // a shell command from the alias table ("|command" without the bar)
    kFile = 2,     // a file from the alias table
    kError = 3,    // undeliverable from the start (alias rules); last_reply says why
  };
  Kind kind = Kind::kAddress;
  uint32_t owner = UINT32_MAX;  // kCommand/kFile: uid owning the alias or include file
  std::string address;       // the envelope recipient to deliver to
  std::string orig_address;  // as the client gave it, before aliases (log orig_to=)
  std::string orcpt;         // DSN ORCPT, as received ("rfc822;user@example.org")
  uint8_t notify = 0;        // NotifyBits
  State state = State::kPending;
  uint32_t attempts = 0;
  int64_t next_attempt = 0;  // unix seconds; 0: as soon as possible
  std::string last_reply;    // the last reply or error text, for mailq and bounces
  std::string dsn_status;    // RFC 3463 code of the last outcome: "4.4.1"
  bool delay_warned = false;
  // SMTP deliveries, for the delivery status notification (RFC 3464 2.3.5, 2.3.6):
  std::string remote_mta;    // the server that gave the last reply ("mx.example.org")
  std::string diagnostic;    // its reply, as it said it ("550 5.1.1 <x>: User unknown")
  bool relayed = false;      // handed to a next hop (RFC 3464 "relayed" for NOTIFY=SUCCESS)
};

struct Envelope {
  std::string queue_id;
  int64_t arrival_us = 0;    // unix microseconds
  std::string sender;        // "" is the null sender <>
  uint64_t size = 0;         // body bytes as stored
  bool body_8bit = false;    // BODY=8BITMIME (or 8-bit content from a local program)
  bool smtputf8 = false;     // SMTPUTF8 transaction
  bool hold = false;         // on hold: not delivered until released
  std::string envid;         // DSN ENVID
  std::string ret;           // DSN RET: "FULL" or "HDRS"
  std::string origin;        // "smtpd", "pickup", "bounce"
  std::string client;        // "name[addr]" for logs
  std::string sasl_user;
  bool large_body = false;   // the body is the file large/<queue_id>, not in LMDB
  std::vector<Recipient> rcpts;

  bool done() const;  // no recipient pending
};

// A body being received. Bytes go to memory up to the inline limit, then to a file.
class BodyWriter {
 public:
  BodyWriter(std::string queue_id, std::string large_dir, uint64_t inline_limit);
  ~BodyWriter();
  BodyWriter(const BodyWriter&) = delete;
  BodyWriter& operator=(const BodyWriter&) = delete;
  // Fails only when spilling to a file fails (disk full: a temporary error).
  common::Status append(std::string_view data);
  uint64_t size() const { return size_; }
  const std::string& queue_id() const { return queue_id_; }

 private:
  friend class QueueStore;
  std::string queue_id_;
  std::string large_dir_;
  uint64_t inline_limit_;
  uint64_t size_ = 0;
  std::string mem_;
  common::UniqueFd file_;
  std::string path_;
  bool committed_ = false;
};

class QueueStore {
 public:
  struct Options {
    uint64_t inline_limit = 1 << 20;  // bodies up to this size live inside LMDB
    size_t initial_map_size = 64u << 20;
    // update(), set_hold() and remove() alone wait this long for an enqueue() to
    // share a commit with (0: commit at once).
    uint64_t lazy_commit_ms = 20;
  };
  // Opens (creating) the store in `dir`; removes large-body files that no committed
  // message owns (left by a crash before commit).
  static common::Result<std::unique_ptr<QueueStore>> open(common::ev::Loop& loop, const std::string& dir,
                                                          Options options);
  // Read-only access for other processes (mailq): no loop, no writes.
  static common::Result<std::unique_ptr<QueueStore>> open_read_only(const std::string& dir);
  ~QueueStore();

  // A new body with a fresh queue id.
  std::unique_ptr<BodyWriter> new_body();

  using Done = std::function<void(common::Status)>;
  // Stores the message durably; env.queue_id and env.size are taken from the body.
  void enqueue(Envelope env, std::unique_ptr<BodyWriter> body, Done done);
  // Replaces the recipients' states; when none is pending any more, removes the
  // message (body included).
  void update(const std::string& queue_id, std::vector<Recipient> rcpts, Done done);
  void set_hold(const std::string& queue_id, bool hold, Done done);
  void remove(const std::string& queue_id, Done done);

  common::Result<Envelope> envelope(const std::string& queue_id);
  // The body bytes (read into memory; large bodies are read from their file).
  common::Result<std::string> body(const std::string& queue_id);
  // An fd positioned at the body start and its size, for streaming large bodies.
  common::Result<std::pair<common::UniqueFd, uint64_t>> body_fd(const std::string& queue_id);
  // Every message, in queue-id (arrival) order.
  common::Status for_each(const std::function<void(const Envelope&)>& fn);

  // Operations queued or in flight (for tests and graceful stop).
  size_t pending_ops() const { return queued_.size() + (in_flight_ ? in_flight_->size() : 0); }
  uint64_t commits() const { return commits_; }

  struct Op;  // one queued operation (defined in queue_store.cc)

 private:
  struct Core;  // what the threadpool work shares with the store; outlives it if need be
  QueueStore() = default;
  void kick();

  common::ev::Loop* loop_ = nullptr;
  Options opt_;
  std::shared_ptr<Core> core_;
  std::vector<std::unique_ptr<Op>> queued_;
  // The group being committed on the threadpool; the work holds its own reference,
  // so destroying the store meanwhile does not pull the ops from under it.
  std::shared_ptr<std::vector<std::unique_ptr<Op>>> in_flight_;
  bool committing_ = false;
  bool force_next_ = false;                       // the lazy timer fired: commit what is queued
  std::unique_ptr<common::ev::Timer> lazy_timer_;
  uint64_t commits_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Serialisation of envelopes (exposed for tests and mailq).
std::string encode_envelope(const Envelope& env);
common::Result<Envelope> decode_envelope(std::string_view data);

}  // namespace tern::mta
