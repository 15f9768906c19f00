// The per-user mailbox index (DESIGN.md 3): one LMDB environment per user, next to
// the mail, holding for every mailbox (INBOX and each Maildir++ folder) the IMAP
// state that the file names alone cannot give:
//
//   UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, message count and bytes (for quota);
//   per message: UID <-> maildir base name, current file name, flags, MODSEQ,
//   size (as stored, LF) and virtual size (CRLF, RFC822.SIZE), internal date, save
//   date, and room for the cached IMAP ENVELOPE and BODYSTRUCTURE;
//   the expunge log (MODSEQ -> UID) for QRESYNC's VANISHED (RFC 7162).
//
// Who uses it:
//   - tern-mda / tern-deliver (the delivering writer): after a message is safely in
//     new/ (maildir::Delivery::commit), add_delivered() gives it the next UID, so
//     tern-mra sees it with that UID at once.
//   - tern-mra session workers (IMAP/POP3; reader and writer): sync() before
//     SELECT/NOOP/IDLE wake-ups, messages()/status()/changes_since() to build
//     views, set_flags() (renames the file to the new ":2,flags" and bumps MODSEQ),
//     expunge() (unlinks the file, logs the UID), set_cache() for fetched data.
//
// Consistency with the Maildir (which other programs may change behind our back:
// Dovecot, mutt, a shell user, an rsync):
//   - A file is identified by its maildir base name (the part before ":2,"), which
//     no Maildir program ever changes, so a flag rename or a new/ -> cur/ move is a
//     change of the same message, never a new one: never listed twice.
//   - sync() runs inside one LMDB write transaction, which is also the
//     cross-process writer lock (LMDB allows one writer at a time, across
//     processes, and recovers the lock from a writer killed with -9). The directory
//     scan happens while it is held, so two syncs, or a sync and a delivery, cannot
//     interleave their view of the directory.
//   - A file present in the index but missing from a scan is only expunged if a
//     second scan misses it too (readdir may miss an entry renamed while the scan
//     runs: POSIX leaves it unspecified). New files get UIDs in name order (the
//     names start with the delivery time). UIDNEXT only grows: a UID is never reused,
//     not even after an expunge or a re-add of the same base name.
//   - A delivery renames into new/ first and indexes second. A crash in between
//     leaves a file the index does not know; the next sync adds it: never lost.
//     add_delivered() for a base that a sync already added returns the existing UID.
//   - If the index is lost, it is rebuilt by sync() with a new UIDVALIDITY (seconds
//     since the epoch, as Dovecot does), so IMAP clients resynchronise.
//
// Concurrency inside one process: LMDB allows one environment per file per process,
// so open() returns a shared instance per path; its methods are safe to call from
// several threads (the environment is opened MDB_NOTLS; each call runs its own
// transaction). Read calls use short read transactions and never block writers.
//
// File layout: "<root maildir>/tern-index" and "tern-index-lock" (MDB_NOSUBDIR),
// owned by the mailbox owner, mode 0600.
//
// Not here: parsing messages (the cached envelope/bodystructure are opaque bytes
// produced by tern-mra), IMAP sequence numbers (a session's view), keywords' names
// (maildir keyword letters are stored in `flags` as Dovecot does; the letter-to-name
// map is dovecot-keywords, read by tern-mra).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/lmdb.h"
#include "common/maildir.h"
#include "common/result.h"

namespace tern::common::index {

struct MailboxStatus {
  uint32_t uid_validity = 0;
  uint32_t uid_next = 1;
  uint64_t highest_modseq = 1;   // RFC 7162: starts at 1; every change makes it bigger
  uint32_t messages = 0;
  uint64_t bytes = 0;            // sum of sizes as stored
};

struct MessageRecord {
  uint32_t uid = 0;
  std::string base;              // maildir base name (stable)
  std::string file;              // current file name within new/ or cur/
  bool in_new = false;           // in new/ (\Recent in IMAP4rev1 terms)
  std::string flags;             // maildir flag letters, normalised: D F P R S T and a-z keywords
  uint64_t modseq = 0;
  uint64_t size = 0;             // bytes as stored (LF line ends)
  uint64_t vsize = 0;            // RFC822.SIZE (CRLF line ends)
  int64_t internal_date = 0;     // seconds since the epoch
  int64_t save_date = 0;         // when it entered this mailbox
  std::string envelope;          // cached IMAP ENVELOPE; empty when not cached
  std::string bodystructure;     // cached IMAP BODYSTRUCTURE; empty when not cached

  std::string path(const std::string& mailbox_dir) const {
    return mailbox_dir + (in_new ? "/new/" : "/cur/") + file;
  }
};

// The stored forms, exposed for the unit tests and the fuzz target
// (tests/fuzz/mailbox_index_record_fuzz.cc). A message record is the value under
// (mailbox id, UID); a mailbox's meta record the value under its name. Both are
// fixed-width big-endian integers and u32-length-prefixed strings, behind a version
// byte for the message record. The index file belongs to the mailbox owner and
// other programs can write it, so a decoder treats its bytes as untrusted: false for
// anything the encoder could not have written, and nothing is read past the value.
std::string encode_record(const MessageRecord& rec);
bool decode_record(std::string_view v, uint32_t uid, MessageRecord& rec);
std::string encode_meta(uint32_t id, const MailboxStatus& st);
bool decode_meta(std::string_view v, uint32_t& id, MailboxStatus& st);

// What a sync changed.
struct SyncResult {
  uint32_t added = 0;
  uint32_t expunged = 0;
  uint32_t changed = 0;   // flags or location changed by another program
};

// How set_flags() combines (IMAP STORE FLAGS / +FLAGS / -FLAGS).
enum class FlagMode { kReplace, kAdd, kRemove };

// A change since a MODSEQ, for CONDSTORE/QRESYNC and for IDLE.
struct Changes {
  std::vector<MessageRecord> changed;   // added or flag-changed, MODSEQ > since
  std::vector<uint32_t> expunged;       // UIDs expunged with MODSEQ > since
  MailboxStatus status;
};

// Group commit, as mta/queue_store.cc does for the queue: writers on several
// threads hand their changes to whichever of them is committing, and one LMDB write
// transaction (one sync of the data pages, one of the meta page) carries them all.
// Each writer returns only when the transaction holding its change is durable, so
// nothing is acknowledged earlier than before. When a shared transaction fails,
// every change in it is retried in a transaction of its own: one writer's error is
// never another's.
class GroupCommit {
 public:
  using Change = std::function<Status(lmdb::Txn&)>;
  explicit GroupCommit(lmdb::Env& env) : env_(env) {}
  // Blocking, thread-safe. `change` runs in a write transaction shared with the
  // changes submitted meanwhile; it may run more than once (after a failed shared
  // transaction, or when LMDB's map grows), each time in a fresh transaction, so it
  // must set (not accumulate) whatever it reports to its caller.
  Status write(Change change);
  // For tests: transactions committed, and changes waiting for the next one.
  uint64_t commits() const;
  size_t waiting() const;

 private:
  struct Slot;
  void run_batch(std::vector<std::shared_ptr<Slot>>& batch);
  lmdb::Env& env_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Slot>> pending_;
  bool running_ = false;
  uint64_t commits_ = 0;
};

class MailboxIndex {
 public:
  struct Options {
    maildir::Fsync fsync = maildir::Fsync::kYes;  // kNo opens LMDB with MDB_NOSYNC
  };
  // Opens (creating) the index of the user whose root maildir is `root`; one shared
  // instance per path in this process.
  static Result<std::shared_ptr<MailboxIndex>> open(const std::string& root, Options options);
  static Result<std::shared_ptr<MailboxIndex>> open(const std::string& root) { return open(root, Options{}); }
  ~MailboxIndex();

  const std::string& root() const { return root_; }
  // The directory of a mailbox ("INBOX", "Sent", "Lists/tern").
  Result<std::string> mailbox_dir(std::string_view mailbox) const;

  // --- the delivering writer ------------------------------------------------
  // Records a file just committed into `mailbox` and returns its UID (the existing
  // one when a sync already found it).
  Result<uint32_t> add_delivered(std::string_view mailbox, const std::string& file, bool in_new, uint64_t size,
                                 uint64_t vsize, int64_t internal_date);
  // The same, and records `delivery_key` (tern-mda's XTERN-DELIVERY-ID pair, see
  // mda/delivery_ids.h) with the time `now` in the same transaction, so the record
  // is durable exactly when the UID is and costs no commit of its own. Additive: the
  // keys live in a database of their own ("delivery-ids") that other readers ignore.
  Result<uint32_t> add_delivered(std::string_view mailbox, const std::string& file, bool in_new, uint64_t size,
                                 uint64_t vsize, int64_t internal_date, std::string_view delivery_key, int64_t now);
  // The UID of the message whose file base is `base`, nullopt when the index has
  // none.
  Result<std::optional<uint32_t>> uid_of_base(std::string_view mailbox, std::string_view base);
  // add_delivered() for a file an earlier, interrupted delivery left in new/ (a
  // keyed name, maildir::keyed_base()): its size and RFC822.SIZE are measured from
  // the file, as a sync would.
  Result<uint32_t> adopt_delivered(std::string_view mailbox, const std::string& file, std::string_view delivery_key,
                                   int64_t now);
  // Whether add_delivered recorded `delivery_key`.
  Result<bool> has_delivery_key(std::string_view delivery_key);
  // Removes delivery keys recorded before `before`.
  Status prune_delivery_keys(int64_t before);

  // --- readers and the IMAP writer -----------------------------------------
  // Reconciles the index with the mailbox directory (see the header comment).
  // kNotFound when the mailbox directory does not exist (nothing is expunged).
  Result<SyncResult> sync(std::string_view mailbox);
  Result<MailboxStatus> status(std::string_view mailbox);
  // Every message, by ascending UID.
  Result<std::vector<MessageRecord>> messages(std::string_view mailbox);
  Result<MessageRecord> message(std::string_view mailbox, uint32_t uid);
  Result<Changes> changes_since(std::string_view mailbox, uint64_t modseq);
  // Changes a message's flags: renames the file (into cur/) and bumps MODSEQ. With
  // unchanged_since (CONDSTORE UNCHANGEDSINCE), a message whose MODSEQ is greater is
  // left alone and kExists is returned. kNotFound for an unknown UID or a file that
  // is gone (it was expunged by another program: sync).
  Result<MessageRecord> set_flags(std::string_view mailbox, uint32_t uid, std::string_view flags, FlagMode mode,
                                  std::optional<uint64_t> unchanged_since = std::nullopt);
  // Removes messages: unlinks the files, drops the records, logs the UIDs.
  // Unknown UIDs are ignored. Returns the UIDs actually expunged.
  Result<std::vector<uint32_t>> expunge(std::string_view mailbox, const std::vector<uint32_t>& uids);
  // Stores cached ENVELOPE / BODYSTRUCTURE (empty leaves a field as it is).
  Status set_cache(std::string_view mailbox, uint32_t uid, std::string_view envelope, std::string_view bodystructure);
  // Bytes and messages in every mailbox of the user, for quota.
  struct Usage {
    uint64_t bytes = 0;
    uint64_t messages = 0;
  };
  Result<Usage> usage();
  // Mailboxes known to the index.
  Result<std::vector<std::string>> mailboxes();

  // --- batch calls for tern-mra's sessions ------------------------------------
  // The records of `uids` (ascending) in one read transaction; unknown UIDs are left
  // out. IMAP FETCH of flags for a range costs one transaction, not one per message.
  Result<std::vector<MessageRecord>> messages(std::string_view mailbox, const std::vector<uint32_t>& uids);
  // set_flags() for many messages in one write transaction (one commit: one fsync for
  // a STORE of a thousand messages). Messages whose MODSEQ exceeds unchanged_since are
  // left alone and listed in `refused`; unknown UIDs and files gone are skipped.
  struct FlagsResult {
    std::vector<MessageRecord> updated;
    std::vector<uint32_t> refused;
  };
  Result<FlagsResult> set_flags(std::string_view mailbox, const std::vector<uint32_t>& uids, std::string_view flags,
                                FlagMode mode, std::optional<uint64_t> unchanged_since);
  // Moves the given messages that are still in new/ to cur/ (an IMAP session has seen
  // them) and returns the UIDs this call moved. Done under the writer lock, so of two
  // sessions that race for a new message exactly one gets it: that one shows \Recent
  // (RFC 3501 2.3.2). Flags and MODSEQ do not change.
  Result<std::vector<uint32_t>> claim_new(std::string_view mailbox, const std::vector<uint32_t>& uids);
  // Forgets a mailbox (IMAP DELETE, the old name of a RENAME): its state, records,
  // file map and expunge log. A mailbox created later under that name gets a new
  // UIDVALIDITY (RFC 3501 2.3.1.1). The files are the caller's business.
  Status remove_mailbox(std::string_view mailbox);
  // set_cache() for many messages in one write transaction (FETCH ENVELOPE of a whole
  // mailbox stores its results in one commit). Unknown UIDs are skipped.
  struct CacheEntry {
    uint32_t uid = 0;
    std::string envelope;       // empty leaves the field as it is
    std::string bodystructure;  // likewise
  };
  Status set_cache(std::string_view mailbox, const std::vector<CacheEntry>& entries);

  struct Meta;  // a mailbox's stored state (internal)

 private:
  struct Dbs;
  MailboxIndex();
  // The mailbox's meta record, created (with a new UIDVALIDITY) when absent.
  Result<Meta> get_meta(lmdb::Txn& txn, const std::string& mailbox, bool create);
  Status put_meta(lmdb::Txn& txn, const std::string& mailbox, const Meta& meta);
  Result<MessageRecord> get_record(lmdb::Txn& txn, uint32_t id, uint32_t uid);
  Status put_record(lmdb::Txn& txn, uint32_t id, const MessageRecord& rec);
  Status drop_record(lmdb::Txn& txn, Meta& meta, const MessageRecord& rec);
  // One message's flag change inside a write transaction (set_flags' body).
  Result<MessageRecord> change_flags(lmdb::Txn& txn, Meta& meta, const std::string& dir, MessageRecord rec,
                                     std::string_view flags, FlagMode mode);
  std::string root_;
  maildir::Fsync fsync_ = maildir::Fsync::kYes;
  std::unique_ptr<lmdb::Env> env_;
  std::unique_ptr<Dbs> dbs_;
  std::unique_ptr<GroupCommit> group_;  // add_delivered: concurrent deliveries share a commit
};

}  // namespace tern::common::index
