// MaildirStore: the real MailStore (mail_store.h) over a user's Maildir++ and the
// per-user LMDB mailbox index (common/mailbox_index.h). Runs in the session worker,
// as the mail owner; one store per user, shared by all of that user's sessions in
// the worker.
//
// On disk it is the Maildir++ that Dovecot, Courier, mutt and tern-mda share:
//   - mailbox "a/b" is the folder directory ".a.b" under the root; each component is
//     stored in modified UTF-7, as Dovecot stores folder names, so both servers show
//     the same names. A '.' inside a name cannot be stored (it is Maildir++'s
//     hierarchy separator) and is refused.
//   - flags live in the file names (":2,FRST" and Dovecot's keyword letters a-z,
//     named by the folder's dovecot-keywords file), so a STORE is visible to mutt and
//     Dovecot, and theirs to us. \Seen S, \Answered R, \Flagged F, \Deleted T,
//     \Draft D, $Forwarded P.
//   - `subscriptions` in the root lists subscribed names, one a line.
//   - new/ is "not yet seen by any reader": the first read-write session that sees a
//     message moves it to cur/ (MailboxIndex::claim_new) and is the one that shows it
//     \Recent.
// UIDs, MODSEQs, sizes and dates come from the index (tern-mda assigns UIDs at
// delivery; sync() picks up files other programs added, renamed or removed), so a
// flag FETCH or an idle session never reads a message file.
//
// Safety: names arrive checked by check_mailbox_name() (no "..", no absolute path, no
// NUL); maildir::folder_path() refuses them again, and every folder directory is
// resolved with realpath and must lie inside the mail root (check_within), so a
// symlink planted in the Maildir cannot lead a session to other files.
//
// Change detection: a sync() rescans the directory only when ScanTracker says it may
// have changed (the worker's inotify watch saw an event) or when nothing watches it;
// otherwise it only reads the index's changes since the handle's last MODSEQ.
//
// Not here: mbox (mail_location = mbox:...), which needs an index of its own.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/mailbox_index.h"
#include "common/maildir.h"
#include "mra/mail_store.h"

namespace tern::mra {

// Which watched maildirs changed since a handle last looked (single-threaded: the
// worker's loop). The worker's inotify code calls watch()/unwatch()/touch().
class ScanTracker {
 public:
  static ScanTracker& global();
  // `dir` is watched from now on; its generation starts new, so every handle scans
  // once more (changes before the watch existed are not lost).
  void watch(const std::string& dir);
  void unwatch(const std::string& dir);
  void touch(const std::string& dir);
  void touch_all();  // the watcher lost events (inotify queue overflow)
  // The generation of a watched dir; nullopt when nothing watches it (scan always).
  // Reads the watcher's pending events first, so a change that happened before a
  // client's command is seen by that command (no race with the event loop's order).
  std::optional<uint64_t> generation(const std::string& dir);
  void set_drain(std::function<void()> drain) { drain_ = std::move(drain); }

 private:
  std::function<void()> drain_;
  std::unordered_map<std::string, uint64_t> gens_;
  uint64_t next_ = 1;
};

// The dovecot-keywords file of one maildir: keyword names for the letters a-z.
class Keywords {
 public:
  explicit Keywords(std::string dir) : dir_(std::move(dir)) {}
  // The letter of `name` (case-insensitive), adding it to the file when `create`;
  // nullopt when unknown (or all 26 letters are taken).
  std::optional<char> letter(const std::string& name, bool create);
  std::optional<std::string> name(char letter);
  std::vector<std::string> names();

 private:
  void reload();
  std::string dir_;
  int64_t mtime_ns_ = -1;
  std::map<int, std::string> by_index_;
};

struct StoreSettings {
  std::string root;              // the root maildir (INBOX)
  common::maildir::Fsync fsync = common::maildir::Fsync::kYes;
  uint64_t quota_bytes = 0;      // 0: no limit (userdb quota_rule, else the config's)
  uint64_t quota_messages = 0;
};

class MaildirStore : public MailStore {
 public:
  // Opens (creating the root and its special folders, as tern-mda would) the store.
  static Result<std::unique_ptr<MaildirStore>> open(StoreSettings settings);
  ~MaildirStore() override;

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
  // The spool is a file in the root's tmp/, renamed into the folder's new/ at the end.
  Result<std::unique_ptr<Spool>> begin_spool(uint64_t size) override;
  Result<AppendResult> append_spool(const std::string& name, std::unique_ptr<Spool> spool,
                                    const std::vector<std::string>& flags, std::optional<int64_t> internal_date) override;

  // The mailbox's name in the index and on disk (components in modified UTF-7).
  Result<std::string> disk_name(const std::string& name) const;
  // The mailbox's directory, checked to lie inside the root.
  Result<std::string> dir_of(const std::string& name) const;
  common::index::MailboxIndex& index() { return *index_; }
  const StoreSettings& settings() const { return settings_; }
  // Scans the directory if it may have changed since `*gen` (updated).
  Status maybe_scan(const std::string& disk, const std::string& dir, std::optional<uint64_t>* gen);
  // Over quota with `bytes` and `messages` more?
  Status check_quota(uint64_t bytes, uint64_t messages);
  // Copies index records into mailbox `dest` (hard links when possible).
  Result<CopyResult> copy_records(const std::vector<common::index::MessageRecord>& recs, const std::string& src_dir,
                                  Keywords& src_kw, const std::string& dest);

 private:
  explicit MaildirStore(StoreSettings s) : settings_(std::move(s)) {}
  Result<std::vector<std::string>> read_subscriptions() const;
  Status write_subscriptions(const std::vector<std::string>& names) const;
  // append()'s and append_spool()'s end: the written file into the folder's new/,
  // its INTERNALDATE, the index.
  Result<AppendResult> commit_append(const std::string& disk, const std::string& dir, common::maildir::Delivery& d,
                                     const std::string& letters, std::optional<int64_t> internal_date);
  StoreSettings settings_;
  std::shared_ptr<common::index::MailboxIndex> index_;
};

// Flags between IMAP names and maildir letters.
std::string flags_to_letters(const std::vector<std::string>& flags, Keywords& kw, bool create_keywords);
std::vector<std::string> letters_to_flags(std::string_view letters, Keywords& kw);

}  // namespace tern::mra
