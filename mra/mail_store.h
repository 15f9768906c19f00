// The mail store as the IMAP and POP3 sessions see it: an abstract MailStore (one
// user's mailboxes) and Mailbox (one opened mailbox, a view for one session).
//
// This is the seam between protocol logic and storage. The sessions (imap_session.h,
// pop3_session.h) are written against it and tested with an in-memory fixture; the
// real implementation over Maildir++/mbox and the per-user LMDB index lives with the
// index, in the session worker, which runs as the mail owner. Nothing here does I/O.
//
// Contract, for implementers:
//  - Mailbox names are UTF-8 with '/' as the hierarchy separator, already checked by
//    check_mailbox_name() (no "..", no absolute paths, no NUL). "INBOX" is canonical.
//    Mapping them to the disk (Maildir++ ".a.b", escaping) is the store's business.
//  - A message's `size` is its RFC822.SIZE: octets with CRLF line ends, whatever the
//    file holds, because IMAP and POP3 serve the CRLF form (mime::to_crlf()).
//  - UIDs are strictly ascending per mailbox and never reused while UIDVALIDITY stays;
//    MODSEQ values (RFC 7162) grow with every change to a message and are non-zero.
//  - Mailbox::sync() reports what changed since the previous sync() of this handle;
//    the first call after open() returns every message as `added`. Flag changes made
//    through this handle's store() are not reported again (the session has answered
//    them); everything else is, expunges through this handle included. The session
//    keeps its own sequence-number view and applies these changes when the protocol
//    lets it (RFC 3501 7.4.1: no EXPUNGE during FETCH, STORE or SEARCH), so several
//    sessions on one mailbox each see the others' changes.
//  - The session keeps only UIDs (and \Recent) per message, about 8 bytes each, and
//    asks fetch_meta() for flags, sizes and dates when a command needs them: with
//    the index shared by all of a user's sessions (LMDB is memory-mapped), a
//    thousand idle sessions on a big INBOX cost a thousand small UID arrays, not a
//    thousand copies of the index.
//  - Errors carry an ErrorKind the session maps to a response code: kNotFound ->
//    NO [NONEXISTENT] (or [TRYCREATE] for COPY/APPEND targets), kExists ->
//    [ALREADYEXISTS], kNoQuota -> [OVERQUOTA], kDenied -> [NOPERM], kInUse -> [INUSE],
//    kTooBig -> [TOOBIG], kLimit -> [LIMIT], kTemp -> [UNAVAILABLE], others [SERVERBUG].
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::mra {

using tern::common::Result;
using tern::common::Status;

// RFC 6154 special uses (the folders every user has, DESIGN.md 3).
enum class SpecialUse {
  kNone,     // an ordinary mailbox
  kDrafts,   // \Drafts
  kJunk,     // \Junk
  kSent,     // \Sent
  kTrash,    // \Trash
  kArchive,  // \Archive
};

struct MessageMeta {
  uint32_t uid = 0;
  uint64_t modseq = 1;
  std::vector<std::string> flags;  // "\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", keywords; no "\\Recent"
  bool recent = false;             // \Recent for this session (RFC 3501 2.3.2); the store decides who gets it
  uint64_t size = 0;               // RFC822.SIZE: octets in CRLF form
  int64_t internal_date = 0;       // UNIX time of delivery
  int internal_date_zone = 0;      // minutes east of UTC to show it in
};

struct MailboxInfo {
  std::string name;  // UTF-8, '/'-separated
  SpecialUse special_use = SpecialUse::kNone;
  bool subscribed = false;
  bool noselect = false;  // exists only as a parent of other mailboxes
  // Only a subscription: RFC 3501 6.3.6 keeps a subscribed name whose mailbox is
  // gone (or never was), and LSUB / LIST (SUBSCRIBED) show it (\Noselect /
  // \NonExistent, RFC 5258 3.1), so that it can be unsubscribed. Plain LIST does not.
  bool nonexistent = false;
};

struct MailboxStatus {
  uint32_t messages = 0;
  uint32_t recent = 0;
  uint32_t uid_next = 1;
  uint32_t uid_validity = 1;
  uint32_t unseen = 0;
  uint64_t size = 0;             // STATUS=SIZE (RFC 8438): sum of RFC822.SIZE
  uint32_t deleted = 0;          // messages with \Deleted (RFC 9051 STATUS DELETED)
  uint64_t highest_modseq = 1;   // CONDSTORE
};

struct MailboxChanges {
  std::vector<uint32_t> expunged;    // UIDs gone since the last sync, ascending
  std::vector<MessageMeta> added;    // new messages, ascending UID
  std::vector<MessageMeta> changed;  // messages whose flags (and modseq) changed
};

enum class StoreMode {
  kReplace,  // FLAGS
  kAdd,      // +FLAGS
  kRemove,   // -FLAGS
};

struct StoreResult {
  std::vector<MessageMeta> updated;  // messages whose flags are now as given (changed or not)
  std::vector<uint32_t> modified;    // refused by UNCHANGEDSINCE (RFC 7162 3.1.3 [MODIFIED])
};

struct CopyResult {
  uint32_t uid_validity = 0;       // of the destination (UIDPLUS COPYUID)
  std::vector<uint32_t> src_uids;  // in the order copied
  std::vector<uint32_t> dst_uids;  // the new UIDs, same order
};

struct AppendResult {
  uint32_t uid_validity = 0;  // UIDPLUS APPENDUID
  uint32_t uid = 0;
};

struct QuotaInfo {
  uint64_t storage_used = 0;   // bytes
  uint64_t storage_limit = 0;  // bytes; 0 = no limit
  uint64_t messages_used = 0;
  uint64_t messages_limit = 0;  // 0 = no limit
};

// How a mailbox is opened.
enum class OpenMode {
  kReadWrite,  // IMAP SELECT
  kReadOnly,   // IMAP EXAMINE: no flag changes, no expunges, \Recent untouched
  kPop3,       // POP3: read-write and exclusive; a second POP3 open gets kInUse
};

// One opened mailbox: the session's handle.
class Mailbox {
 public:
  virtual ~Mailbox() = default;

  virtual bool read_only() const = 0;
  virtual uint32_t uid_validity() const = 0;
  virtual uint32_t uid_next() const = 0;
  virtual uint64_t highest_modseq() const = 0;
  // Keywords in use in this mailbox, for the FLAGS response.
  virtual std::vector<std::string> keywords() const = 0;

  // Changes since the previous sync() (everything, as `added`, on the first call).
  virtual Result<MailboxChanges> sync() = 0;

  // Current metadata of the given UIDs (ascending), in ascending UID order; UIDs that
  // no longer exist are left out. `recent` is not meaningful here.
  virtual Result<std::vector<MessageMeta>> fetch_meta(const std::vector<uint32_t>& uids) = 0;

  // The message as stored (LF or CRLF line ends). kNotFound once it is expunged.
  virtual Result<std::string> read(uint32_t uid) = 0;
  // The start of the message as stored: at least its whole header section
  // (mime::header_section_end() of what is returned is the header's end, not the
  // end of a cut-off read), possibly more. For FETCH of headers, so a store need
  // not read a large body. The default reads it all.
  virtual Result<std::string> read_header(uint32_t uid) { return read(uid); }

  // Changes flags of the given UIDs; UIDs that no longer exist are skipped. With
  // `unchanged_since`, messages whose modseq is higher are not changed but listed in
  // `modified` (RFC 7162 3.1.3).
  virtual Result<StoreResult> store(const std::vector<uint32_t>& uids, StoreMode mode,
                                    const std::vector<std::string>& flags,
                                    std::optional<uint64_t> unchanged_since) = 0;

  // Copies messages to another mailbox of the same store (kNotFound if it does not exist).
  virtual Result<CopyResult> copy(const std::vector<uint32_t>& uids, const std::string& dest) = 0;
  // Moves them (RFC 6851): copy and expunge as one operation.
  virtual Result<CopyResult> move(const std::vector<uint32_t>& uids, const std::string& dest) = 0;

  // Removes the messages flagged \Deleted, only those among `only` when given (UID
  // EXPUNGE). Returns the UIDs removed, ascending.
  virtual Result<std::vector<uint32_t>> expunge(const std::optional<std::vector<uint32_t>>& only) = 0;

  // Optional cache of derived data (rendered ENVELOPE, BODYSTRUCTURE) keyed by UID
  // and a field name; the index keeps it so FETCH need not re-read and re-parse.
  virtual std::optional<std::string> cache_get(uint32_t /*uid*/, std::string_view /*field*/) { return std::nullopt; }
  virtual void cache_put(uint32_t /*uid*/, std::string_view /*field*/, std::string_view /*value*/) {}
};

// An APPEND message too big to hold in memory (ImapReader's spool_above), written as
// its bytes arrive, CRLF line ends and all. The store's append_spool() takes it
// whole; dropped unused, it leaves nothing behind.
class Spool {
 public:
  virtual ~Spool() = default;
  virtual Status write(std::string_view data) = 0;
};

// The Spool of a store without a place of its own to put one: the message in memory.
class MemorySpool : public Spool {
 public:
  Status write(std::string_view data) override {
    data_.append(data);
    return {};
  }
  const std::string& data() const { return data_; }

 private:
  std::string data_;
};

// One user's mail.
class MailStore {
 public:
  virtual ~MailStore() = default;

  virtual Result<std::vector<MailboxInfo>> list() = 0;
  virtual Status create(const std::string& name) = 0;
  // RFC 3501 6.3.4: a mailbox with children may be deleted, its children stay.
  virtual Status remove(const std::string& name) = 0;
  // RFC 3501 6.3.5: renaming INBOX moves its messages into a new mailbox.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Status subscribe(const std::string& name, bool subscribed) = 0;
  virtual Result<std::unique_ptr<Mailbox>> open(const std::string& name, OpenMode mode) = 0;
  virtual Result<MailboxStatus> status(const std::string& name) = 0;
  virtual Result<AppendResult> append(const std::string& name, std::string_view message,
                                      const std::vector<std::string>& flags, std::optional<int64_t> internal_date) = 0;
  virtual Result<QuotaInfo> quota() = 0;
  // A spool for an APPEND message of `size` bytes, refused (quota, disk) before any of
  // them is read. Maildir writes it into tmp/, where the message ends up anyway; the
  // default holds it in memory.
  virtual Result<std::unique_ptr<Spool>> begin_spool(uint64_t /*size*/) {
    return std::unique_ptr<Spool>(std::make_unique<MemorySpool>());
  }
  // APPEND (as append()) of a message spooled by begin_spool() of this store.
  virtual Result<AppendResult> append_spool(const std::string& name, std::unique_ptr<Spool> spool,
                                            const std::vector<std::string>& flags,
                                            std::optional<int64_t> internal_date) {
    auto* m = dynamic_cast<MemorySpool*>(spool.get());
    if (!m) return common::make_error(common::ErrorKind::kTemp, "spool of another store");
    return append(name, m->data(), flags, internal_date);
  }
};

}  // namespace tern::mra
