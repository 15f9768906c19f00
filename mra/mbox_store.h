// MboxStore: the MailStore (mail_store.h) for users whose mail_location is mbox
// (`mbox:~/mail:INBOX=/var/mail/%u`). Runs in the session worker, as the mail owner.
//
// On disk it is the mboxrd that tern-mda appends to (common/mbox.h) and that mutt and
// Dovecot read, with Dovecot's conventions so all three agree:
//   - INBOX is the file given by INBOX=; mailbox "a/b" is the file <root>/a/b
//     (directories are \NoSelect parents). Names with a component starting with '.'
//     or ending in ".lock" are refused: they are our, Dovecot's or the locks' files.
//   - UIDs live in the file, as Dovecot keeps them: "X-IMAPbase: <uidvalidity>
//     <uidnext>" in the first message, "X-UID: <uid>" in each. A message without a
//     valid X-UID (a fresh delivery, a message mutt wrote), or with one not above its
//     predecessor's, gets the next UID. X-IMAPbase's uidnext is kept above every
//     X-UID (Dovecot renumbers an X-UID at or above it as broken), rewritten with
//     each new UID, zero-padded to 10 digits as Dovecot writes it so that only those
//     bytes change; reading, we take max(it, highest X-UID + 1), so a stale one from
//     another program cannot make us reuse a UID. This survives worker
//     restarts and other programs, unlike an index keyed by offsets. (An mbox emptied
//     entirely loses its X-IMAPbase; the worker remembers it while it runs, otherwise
//     the next message starts a new UIDVALIDITY, which IMAP allows.)
//   - Flags: "Status: R" (\Seen) "O" (old: not \Recent), "X-Status: A" (\Answered)
//     "F" (\Flagged) "T" (\Draft) "D" (\Deleted), "X-Keywords:" for keywords. These
//     headers (and X-UID, X-IMAPbase) are not shown to IMAP/POP3 clients.
//   - \Recent goes to the first read-write session that sees a message without O;
//     that session's sync writes O.
//   - MODSEQs are not stored in mbox: they count in memory from the time the worker
//     first read the mailbox (microseconds), so they still grow across restarts.
//
// Every access is under the locks tern-mda uses (the dotlock "<file>.lock", then an
// fcntl write lock on the file; LockOptions from mbox_write_locks), so a delivery
// waits for a rewrite and a rewrite never sees half a delivery. The file is only
// re-read when its inode, size or mtime changed since we last looked.
//
// Rewrites (flag changes, expunges, new X-UIDs) happen in place: the unchanged head of
// the file stays, the rest is written from the first changed message on and the file
// is ftruncated to its new length. The file is never replaced by a rename (a delivery
// waiting on the old file's lock would be lost). Crash safety is a journal in
// <root>/.tern-mbox/: before the first byte of the mbox changes, the journal holds the
// old bytes from the first changed offset to the end, the old and the new length and
// a phase byte, fsynced; the phase is set once the file has its new length (growing) or
// once the new bytes are complete, before the ftruncate (shrinking). A journal
// found when the mailbox is next locked means a rewrite was interrupted: the old tail
// is put back (head + journal + whatever tern-mda appended after the crash), by a
// rewrite journaled the same way (journal name + ".r"), so a crash during recovery is
// recovered too. Nothing is lost; at worst a flag change or expunge is undone.
//
// Safety: names arrive checked by check_mailbox_name(); every path is checked with
// maildir::check_within() against the mail root (the INBOX file against its own
// directory), files are opened O_NOFOLLOW and must be regular with one link, and
// LIST does not follow symlinks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/maildir.h"
#include "common/mbox.h"
#include "mra/mail_store.h"

namespace tern::mra {

struct MboxSettings {
  std::string root;   // ~/mail: folders, .subscriptions, .tern-mbox/
  std::string inbox;  // /var/mail/%u
  common::mbox::LockOptions locks;
  common::maildir::Fsync fsync = common::maildir::Fsync::kYes;
  uint64_t quota_bytes = 0;  // 0: no limit
};

// One message of a parsed mbox, as offsets into the file.
struct MboxMessage {
  uint64_t offset = 0;       // the From_ line
  uint64_t header_off = 0;   // after the From_ line
  uint64_t body_off = 0;     // after the blank line ending the header
  uint64_t end = 0;          // the next message's From_ line (or the end of the file)
  uint32_t uid = 0;          // X-UID (0: none)
  bool has_base = false;     // carries X-IMAPbase
  uint32_t base_validity = 0, base_next = 0;
  bool old = false;          // Status: O
  std::vector<std::string> flags;
  int64_t date = 0;          // from the From_ line
  uint64_t size = 0;         // RFC822.SIZE of what clients see
};

// Pure helpers (unit-tested on their own).
namespace mboxfmt {
std::vector<MboxMessage> parse(const std::string& data);
// What a client sees of message `m`: the header without Status, X-Status, X-UID,
// X-IMAPbase, X-Keywords, Content-Length, and the body with one '>' taken off
// /^>+From / lines.
std::string client_view(const std::string& data, const MboxMessage& m);
// The message rewritten with our headers (X-IMAPbase when base_next != 0).
std::string render(const std::string& data, const MboxMessage& m, uint32_t base_validity, uint32_t base_next);
// A new message (APPEND, COPY) in file form: From_ line, header, body (LF, quoted).
std::string new_message(std::string_view content, int64_t date);
}  // namespace mboxfmt

struct MboxState;

class MboxStore : public MailStore {
 public:
  static Result<std::unique_ptr<MboxStore>> open(MboxSettings settings);
  ~MboxStore() override;

  Result<std::vector<MailboxInfo>> list() override;
  Status create(const std::string& name) override;
  Status remove(const std::string& name) override;
  Status rename(const std::string& from, const std::string& to) override;
  Status subscribe(const std::string& name, bool subscribed) override;
  Result<std::unique_ptr<Mailbox>> open(const std::string& name, OpenMode mode) override;
  Result<MailboxStatus> status(const std::string& name) override;
  Result<AppendResult> append(const std::string& name, std::string_view message,
                              const std::vector<std::string>& flags, std::optional<int64_t> internal_date) override;
  Result<QuotaInfo> quota() override;

  // The mailbox's file, checked.
  Result<std::string> path_of(const std::string& name) const;
  const MboxSettings& settings() const { return settings_; }

  // One locked read-modify-write of a mailbox (see the header comment). `edit` gets
  // the parsed messages (UIDs assigned) and may change flags, drop messages (set
  // uid to 0 after noting it) or add new ones; `claim` sets O on messages without
  // it and reports them in *claimed.
  struct Edit {
    std::vector<MboxMessage>* msgs;
    const std::string* data;
    std::vector<std::pair<MboxMessage, std::string>> appended;  // message + its bytes (new_message())
    std::vector<uint32_t> removed;
    uint32_t uid_validity = 0;
    uint32_t uid_next = 0;
  };
  Status update(MboxState& st, bool claim, std::vector<uint32_t>* claimed,
                const std::function<Status(Edit&)>& edit);
  // Re-reads the mailbox if the file changed (and assigns missing UIDs).
  Status refresh(MboxState& st, bool claim, std::vector<uint32_t>* claimed);
  std::shared_ptr<MboxState> state(const std::string& name, const std::string& path);

 private:
  explicit MboxStore(MboxSettings s) : settings_(std::move(s)) {}
  std::string journal_of(const std::string& path) const;
  Result<std::vector<std::string>> read_subscriptions() const;
  Status write_subscriptions(const std::vector<std::string>& names) const;
  MboxSettings settings_;
  std::map<std::string, std::weak_ptr<MboxState>> states_;
  std::map<std::string, std::shared_ptr<MboxState>> keep_;  // remembered UIDVALIDITY of emptied boxes
};

// The journaled in-place rewrite (exposed for the unit tests): replaces the bytes of
// `fd` from `from` on with new_data[from..], old_data being the current content.
Status mbox_rewrite(int fd, const std::string& path, const std::string& journal, const std::string& old_data,
                    const std::string& new_data, uint64_t from, common::maildir::Fsync fsync,
                    int crash_after_step = -1);
// Puts back an interrupted rewrite of `fd` (locked) from `journal` (and its ".r"s).
Status mbox_recover(int fd, const std::string& path, const std::string& journal, common::maildir::Fsync fsync);

}  // namespace tern::mra
