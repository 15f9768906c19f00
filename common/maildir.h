// Maildir++ on disk: delivering into it and reading it, in the format Dovecot,
// Courier, Postfix's local(8) and mutt share.
//
// Layout: a maildir is a directory with cur/ new/ tmp/. Maildir++ folders live in
// the root maildir as ".Name" (hierarchy separator '.', so "Lists/tern" is
// ".Lists.tern"), each a maildir of its own with an empty `maildirfolder` file.
//
// File names (cr.yp.to/proto/maildir.html, Maildir++, Dovecot's extensions):
//   <base>[:2,<flags>]     base = <sec>.M<usec>P<pid>Q<n>.<host>[,S=<size>][,W=<vsize>]
// The base never changes after delivery; flags change by renaming within cur/.
// Flags are the letters D F P R S T (draft, flagged, passed, replied, seen, trashed)
// in ASCII order, plus Dovecot's keyword letters a-z. S= is the file size and W= the
// size with CRLF line ends (what IMAP reports as RFC822.SIZE); both are optional
// when reading (Postfix writes neither).
//
// Delivery (the spec's order, which makes it crash-safe): write the message into
// tmp/ under a unique name, fsync the file, rename it into new/ without replacing
// anything (renameat2 RENAME_NOREPLACE), then fsync new/ so the name survives a crash.
// Only then may a delivery be acknowledged. The directory fsync is the expensive
// part, so DirSyncer lets deliveries that finish at the same moment share one fsync
// of the same directory (group commit). A failure at any step unlinks the tmp/ file:
// nothing is left half-written.
//
// Messages are stored with LF line ends (as every maildir reader expects).
//
// Not here: which user or mailbox a recipient maps to (tern-mda), the UID index
// (mailbox_index.h), quota policy.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common::maildir {

// A parsed file name.
struct FileName {
  std::string base;                 // everything before ":2," (stable for the message's life)
  std::string flags;                // the letters after ":2,", sorted; empty when none
  bool has_info = false;            // ":2," was present
  std::optional<uint64_t> size;     // ,S=
  std::optional<uint64_t> vsize;    // ,W=
};
FileName parse_name(std::string_view name);
// "<base>:2,<flags>" with flags normalised (sorted, unique, only valid letters).
std::string make_name(std::string_view base, std::string_view flags);
std::string normalize_flags(std::string_view flags);
// A file name that is safe to use as a maildir entry (no '/', no NUL, not . or ..,
// not a dotfile).
bool valid_entry_name(std::string_view name);

// A new unique base name (sec.MusecPpidQn.host,S=size,W=vsize). `host` is sanitised
// as the spec says ('/' -> \057, ':' -> \072).
std::string unique_base(uint64_t size, uint64_t vsize);
std::string sanitize_host(std::string_view host);
// The base name of a delivery that must happen at most once (tern-mda's
// XTERN-DELIVERY-ID pairs, mda/delivery_ids.h): "<sec>.K<token>.<host>", the same
// for every attempt of the same pair, so a retry after a crash finds the copy the
// interrupted attempt left (Delivery::commit_once). No ,S=/,W=: they could differ
// between attempts (the Received: date), and readers measure a file without them.
// `token` must be a file-name-safe string ([0-9A-Za-z] only).
std::string keyed_base(uint64_t seconds, std::string_view token);

// Folder name ("INBOX", "Sent", "Lists/tern") to its directory under the root
// maildir. Refuses names that could leave the root ("..", "/", leading '.', control
// bytes): kDenied.
Result<std::string> folder_path(const std::string& root, std::string_view folder);
// Maildir folder directory name (".Sent") back to the folder name ("Sent").
std::optional<std::string> folder_name(std::string_view dirname);

// Creates cur/ new/ tmp/ (mode 0700) under `path` (which is created too); for a
// folder also the maildirfolder file. Existing directories are fine.
Status create(const std::string& path, bool is_folder);
// A new root maildir with the special-use folders (Drafts Junk Sent Trash),
// subscribed, as DESIGN.md 3 asks. Idempotent and safe against concurrent callers;
// a maildir that already has a `subscriptions` file is left as it is.
Status create_root(const std::string& root);
inline constexpr const char* kSpecialFolders[] = {"Drafts", "Junk", "Sent", "Trash"};
// The folders of a root maildir (without INBOX), from its .Name directories.
Result<std::vector<std::string>> list_folders(const std::string& root);

// Refuses a path that resolves (through symlinks) outside `home`: the deepest
// existing ancestor of `path` is resolved with realpath(3) and must be `home` itself
// or below it. kDenied with a message naming both paths.
Status check_within(const std::string& home, const std::string& path);

// Group commit of directory fsyncs: sync(dir) returns once an fsync of `dir` that
// started after the call has finished; concurrent callers for the same directory
// share one. Thread-safe (deliveries run on the threadpool).
class DirSyncer {
 public:
  Status sync(const std::string& dir);
  uint64_t fsyncs() const;  // how many were done (for tests and benchmarks)
  static DirSyncer& global();

 private:
  struct State {
    uint64_t requested = 0;
    uint64_t synced = 0;
    bool running = false;
    int last_errno = 0;
  };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, State> dirs_;
  uint64_t fsyncs_ = 0;
};

// Whether deliveries fsync (Dovecot's mail_fsync: "optimized" and "always" do,
// "never" does not; only for benchmarks and throwaway test setups).
enum class Fsync { kYes, kNo };

// One message being delivered into tmp/.
class Delivery {
 public:
  static Result<Delivery> begin(const std::string& maildir);
  Delivery(Delivery&&) noexcept;
  Delivery& operator=(Delivery&&) noexcept;
  Delivery(const Delivery&) = delete;
  ~Delivery();  // aborts unless committed

  // Appends bytes (buffered). LF line ends expected; written as given.
  Status write(std::string_view data);
  // fsync the file, rename it into new/ (or cur/ with flags when `flags` is set),
  // sync the directory. Returns the final file name (without the directory).
  // Into::kNew puts a message with flags in new/ all the same, its flags in the name
  // (":2,S"): IMAP APPEND, COPY and MOVE do, because a message in new/ is \Recent for
  // the first session that sees it (RFC 3501 6.3.11, 6.4.7), as delivered mail is.
  // Dovecot, mutt and our index read the flags of a new/ name and keep them when they
  // move it to cur/. No flags (or empty ones) in new/ give the plain base name.
  enum class Into { kByFlags, kNew };
  Result<std::string> commit(Fsync fsync, DirSyncer* syncer, std::optional<std::string_view> flags = std::nullopt,
                             Into into = Into::kByFlags);
  // commit() under a name chosen by the caller (keyed_base()), in new/, replacing
  // nothing. When the name exists already, an earlier attempt of the same delivery
  // put it there: this attempt's tmp file is dropped, new/ is synced (the earlier
  // attempt may have died before its directory fsync), and `existed` says so.
  struct Committed {
    std::string name;
    bool existed = false;
  };
  Result<Committed> commit_once(const std::string& name, Fsync fsync, DirSyncer* syncer);
  // Commits into another maildir of the same Maildir++ tree (a folder, when the
  // message was begun in the root's tmp/ before its folder was known): the rename
  // stays on one file system.
  void retarget(std::string maildir) { maildir_ = std::move(maildir); }
  // Unlinks the tmp file.
  void abort();
  uint64_t size() const { return size_; }
  // The size IMAP and POP3 serve (mime::to_crlf()): one more octet per bare LF.
  uint64_t vsize() const { return size_ + bare_lfs_; }
  const std::string& tmp_path() const { return tmp_path_; }

 private:
  Delivery() = default;
  Status flush();
  std::string maildir_;
  std::string tmp_path_;
  UniqueFd fd_;
  std::string buf_;
  uint64_t size_ = 0;
  uint64_t bare_lfs_ = 0;  // LFs not preceded by CR, across write() calls
  bool last_cr_ = false;   // the last byte written was a CR
  bool done_ = false;
};

// One message file found in a maildir.
struct Entry {
  bool in_new = false;   // in new/ (not yet seen by a reader) rather than cur/
  std::string name;      // file name within new/ or cur/
  FileName parsed;
  std::string path(const std::string& maildir) const { return maildir + (in_new ? "/new/" : "/cur/") + name; }
};
// Every message in new/ and cur/ (new/ is read first, so a concurrent move from new/
// to cur/ is seen at least once). Names that are not valid entries are skipped.
Result<std::vector<Entry>> list(const std::string& maildir);

// Removes files in tmp/ older than `max_age_seconds` (the Maildir spec: 36 hours),
// left by deliveries that crashed mid-write. Returns how many were removed.
Result<unsigned> clean_tmp(const std::string& maildir, int64_t max_age_seconds = 36 * 3600);

// Renames a message to carry `flags`, moving it to cur/ (Maildir "info" change).
// Returns the new name. kNotFound when the file is gone (someone else renamed or
// removed it: the caller rescans).
Result<std::string> set_flags(const std::string& maildir, const Entry& entry, std::string_view flags);

}  // namespace tern::common::maildir
