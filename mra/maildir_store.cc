#include "mra/maildir_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "common/log.h"
#include "common/mime.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "mra/imap_mutf7.h"

namespace tern::mra {

using common::ErrorKind;
using common::make_error;
using common::UniqueFd;
namespace maildir = common::maildir;
namespace index = common::index;

// --- ScanTracker -----------------------------------------------------------------

ScanTracker& ScanTracker::global() {
  static ScanTracker t;
  return t;
}

void ScanTracker::watch(const std::string& dir) { gens_[dir] = ++next_; }
void ScanTracker::unwatch(const std::string& dir) { gens_.erase(dir); }
void ScanTracker::touch(const std::string& dir) {
  auto it = gens_.find(dir);
  if (it != gens_.end()) it->second = ++next_;
}
void ScanTracker::touch_all() {
  for (auto& [d, g] : gens_) g = ++next_;
}
std::optional<uint64_t> ScanTracker::generation(const std::string& dir) {
  if (drain_) drain_();
  auto it = gens_.find(dir);
  if (it == gens_.end()) return std::nullopt;
  return it->second;
}

namespace {

// Reads a whole small file; "" when it does not exist.
Result<std::string> read_file(const std::string& path, size_t max) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::string();
    return common::errno_error("open " + path, errno);
  }
  std::string out;
  // One allocation and (usually) one read for the size the file has now; it may
  // still grow or shrink meanwhile, so read on until EOF.
  struct stat st;
  size_t expect = ::fstat(fd.get(), &st) == 0 && st.st_size > 0 ? static_cast<size_t>(st.st_size) : 0;
  if (expect > max) return make_error(ErrorKind::kTooBig, path + " is larger than " + std::to_string(max) + " bytes");
  out.resize(expect + 1);  // +1: EOF is seen by the same read when the size held
  size_t have = 0;
  while (true) {
    if (have == out.size()) out.resize(std::min(max + 1, out.size() * 2 + 65536));
    ssize_t n = ::read(fd.get(), out.data() + have, out.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("read " + path, errno);
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
    if (have > max) return make_error(ErrorKind::kTooBig, path + " is larger than " + std::to_string(max) + " bytes");
  }
  out.resize(have);
  return out;
}

// The start of a message file, at least through the blank line that ends its header
// section (Mailbox::read_header()): read in pieces until a complete empty line (LF or
// CRLF, as mime::header_section_end() sees one) or EOF. Missing file: "" as read_file().
Result<std::string> read_file_head(const std::string& path, size_t max) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return std::string();
    return common::errno_error("open " + path, errno);
  }
  std::string out;
  size_t line = 0;  // start of the first line not yet seen whole
  size_t chunk = 8192;
  while (true) {
    size_t have = out.size();
    out.resize(have + chunk);
    ssize_t n = ::read(fd.get(), out.data() + have, chunk);
    if (n < 0) {
      if (errno == EINTR) {
        out.resize(have);
        continue;
      }
      return common::errno_error("read " + path, errno);
    }
    out.resize(have + static_cast<size_t>(n));
    if (n == 0) break;
    if (out.size() > max) return make_error(ErrorKind::kTooBig, path + " is larger than " + std::to_string(max) + " bytes");
    while (const void* p = std::memchr(out.data() + line, '\n', out.size() - line)) {
      size_t lf = static_cast<size_t>(static_cast<const char*>(p) - out.data());
      if (lf == line || (lf == line + 1 && out[line] == '\r')) return out;
      line = lf + 1;
    }
    chunk = std::min<size_t>(chunk * 2, 1 << 20);  // long headers: fewer, bigger reads
  }
  return out;
}

// Replaces a small file atomically (tmp + rename), mode 0600.
Status write_file(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tern-tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return common::errno_error("create " + tmp, errno);
  if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    Status e = common::errno_error("write " + tmp, errno);
    ::unlink(tmp.c_str());
    return e;
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    Status e = common::errno_error("rename " + tmp, errno);
    ::unlink(tmp.c_str());
    return e;
  }
  return {};
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Removes a folder directory and what Maildir programs keep in it, without
// following symlinks (a symlink inside is removed, never its target).
Status remove_tree(const std::string& path) {
  UniqueFd dfd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) return common::errno_error("open " + path, errno);
  DIR* d = ::fdopendir(::dup(dfd.get()));
  if (!d) return common::errno_error("opendir " + path, errno);
  std::vector<std::pair<std::string, bool>> entries;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    struct stat st;
    if (::fstatat(dfd.get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    entries.emplace_back(n, S_ISDIR(st.st_mode));
  }
  ::closedir(d);
  for (const auto& [n, dir] : entries) {
    if (dir) {
      if (Status s = remove_tree(path + "/" + n); !s) return s;
    } else if (::unlinkat(dfd.get(), n.c_str(), 0) < 0 && errno != ENOENT) {
      return common::errno_error("unlink " + path + "/" + n, errno);
    }
  }
  if (::rmdir(path.c_str()) < 0 && errno != ENOENT) return common::errno_error("rmdir " + path, errno);
  return {};
}

struct FlagLetter {
  const char* name;
  char letter;
};
constexpr FlagLetter kSystemFlags[] = {
    {"\\Draft", 'D'}, {"\\Flagged", 'F'}, {"$Forwarded", 'P'}, {"\\Answered", 'R'}, {"\\Seen", 'S'}, {"\\Deleted", 'T'},
};

bool has_letter(const std::string& letters, char c) { return letters.find(c) != std::string::npos; }

SpecialUse special_use_of(const std::string& name) {
  if (name == "Drafts") return SpecialUse::kDrafts;
  if (name == "Junk") return SpecialUse::kJunk;
  if (name == "Sent") return SpecialUse::kSent;
  if (name == "Trash") return SpecialUse::kTrash;
  if (name == "Archive") return SpecialUse::kArchive;
  return SpecialUse::kNone;
}

// A disk name (components in modified UTF-7) back to UTF-8.
std::optional<std::string> utf8_name(const std::string& disk) {
  std::string out;
  for (const std::string& part : common::split(disk, '/')) {
    std::optional<std::string> d = imap::mutf7_decode(part);
    if (!d) return std::nullopt;
    if (!out.empty()) out += '/';
    out += *d;
  }
  return out;
}

}  // namespace

// --- Keywords ----------------------------------------------------------------------

void Keywords::reload() {
  const std::string path = dir_ + "/dovecot-keywords";
  struct stat st;
  int64_t mt = -2;
  if (::stat(path.c_str(), &st) == 0) mt = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mt == mtime_ns_) return;
  mtime_ns_ = mt;
  by_index_.clear();
  Result<std::string> text = read_file(path, 64 << 10);
  if (!text) return;
  // Dovecot's format: "<index> <name>" a line, index 0..25 = letters a..z.
  for (const std::string& line : common::split(*text, '\n')) {
    size_t sp = line.find(' ');
    if (sp == std::string::npos) continue;
    std::optional<uint64_t> i = common::parse_u64(std::string_view(line).substr(0, sp));
    if (!i || *i >= 26) continue;
    by_index_[static_cast<int>(*i)] = line.substr(sp + 1);
  }
}

std::optional<char> Keywords::letter(const std::string& name, bool create) {
  reload();
  for (const auto& [i, n] : by_index_) {
    if (common::iequals(n, name)) return static_cast<char>('a' + i);
  }
  if (!create) return std::nullopt;
  int free_index = -1;
  for (int i = 0; i < 26; ++i) {
    if (!by_index_.count(i)) {
      free_index = i;
      break;
    }
  }
  if (free_index < 0) return std::nullopt;
  by_index_[free_index] = name;
  std::string text;
  for (const auto& [i, n] : by_index_) text += std::to_string(i) + " " + n + "\n";
  if (Status s = write_file(dir_ + "/dovecot-keywords", text); !s) {
    common::log::warning("%s", s.error().message.c_str());
    by_index_.erase(free_index);
    return std::nullopt;
  }
  mtime_ns_ = -1;  // re-read next time (our own write)
  return static_cast<char>('a' + free_index);
}

std::optional<std::string> Keywords::name(char letter) {
  reload();
  auto it = by_index_.find(letter - 'a');
  if (it == by_index_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> Keywords::names() {
  reload();
  std::vector<std::string> out;
  for (const auto& [i, n] : by_index_) out.push_back(n);
  return out;
}

std::string flags_to_letters(const std::vector<std::string>& flags, Keywords& kw, bool create_keywords) {
  std::string out;
  for (const std::string& f : flags) {
    bool system = false;
    for (const FlagLetter& s : kSystemFlags) {
      if (common::iequals(f, s.name)) {
        out += s.letter;
        system = true;
        break;
      }
    }
    if (system || f.empty() || f[0] == '\\') continue;  // \Recent and unknown system flags are not stored
    if (std::optional<char> l = kw.letter(f, create_keywords)) out += *l;
  }
  return maildir::normalize_flags(out);
}

std::vector<std::string> letters_to_flags(std::string_view letters, Keywords& kw) {
  std::vector<std::string> out;
  for (const FlagLetter& s : kSystemFlags) {
    if (letters.find(s.letter) != std::string_view::npos) out.emplace_back(s.name);
  }
  for (char c : letters) {
    if (c >= 'a' && c <= 'z') {
      if (std::optional<std::string> n = kw.name(c)) out.push_back(*n);
    }
  }
  return out;
}

// --- the mailbox handle ---------------------------------------------------------------

namespace {

class MaildirMailbox : public Mailbox {
 public:
  MaildirMailbox(MaildirStore& store, std::string disk, std::string dir, OpenMode mode, UniqueFd pop3_lock)
      : store_(store), disk_(std::move(disk)), dir_(std::move(dir)), mode_(mode), kw_(dir_),
        pop3_lock_(std::move(pop3_lock)) {}
  ~MaildirMailbox() override { flush_cache(); }

  bool read_only() const override { return mode_ == OpenMode::kReadOnly; }
  uint32_t uid_validity() const override { return st_.uid_validity; }
  uint32_t uid_next() const override { return st_.uid_next; }
  uint64_t highest_modseq() const override { return st_.highest_modseq; }
  std::vector<std::string> keywords() const override { return kw_.names(); }

  Result<MailboxChanges> sync() override {
    flush_cache();
    if (Status s = store_.maybe_scan(disk_, dir_, &scan_gen_); !s) return s.take_error();
    index::MailboxIndex& idx = store_.index();
    MailboxChanges out;
    if (!first_done_) {
      Result<index::Changes> all = idx.changes_since(disk_, 0);
      if (!all) return all.take_error();
      st_ = all->status;
      std::vector<index::MessageRecord>& recs = all->changed;
      std::sort(recs.begin(), recs.end(), [](const auto& a, const auto& b) { return a.uid < b.uid; });
      std::set<uint32_t> recent = claim(recs);
      out.added.reserve(recs.size());
      for (const index::MessageRecord& r : recs) {
        MessageMeta m = meta_of(r);
        m.recent = recent.count(r.uid) > 0;
        out.added.push_back(std::move(m));
      }
      first_done_ = true;
      return out;
    }
    Result<index::MailboxStatus> now = idx.status(disk_);
    if (!now) return now.take_error();
    if (now->highest_modseq == st_.highest_modseq && now->uid_next == st_.uid_next) {
      st_ = *now;
      return out;
    }
    Result<index::Changes> ch = idx.changes_since(disk_, st_.highest_modseq);
    if (!ch) return ch.take_error();
    const uint32_t known_next = st_.uid_next;
    std::vector<index::MessageRecord>& recs = ch->changed;
    std::sort(recs.begin(), recs.end(), [](const auto& a, const auto& b) { return a.uid < b.uid; });
    std::vector<index::MessageRecord> fresh;
    for (index::MessageRecord& r : recs) {
      if (r.uid >= known_next) {
        fresh.push_back(std::move(r));
        continue;
      }
      auto own = own_.find(r.uid);
      if (own != own_.end() && own->second == r.modseq) continue;  // our own STORE, answered already
      out.changed.push_back(meta_of(r));
    }
    std::set<uint32_t> recent = claim(fresh);
    for (const index::MessageRecord& r : fresh) {
      MessageMeta m = meta_of(r);
      m.recent = recent.count(r.uid) > 0;
      out.added.push_back(std::move(m));
    }
    for (uint32_t uid : ch->expunged) {
      if (uid < known_next) out.expunged.push_back(uid);
    }
    std::sort(out.expunged.begin(), out.expunged.end());
    out.expunged.erase(std::unique(out.expunged.begin(), out.expunged.end()), out.expunged.end());
    own_.clear();
    st_ = ch->status;
    return out;
  }

  Result<std::vector<MessageMeta>> fetch_meta(const std::vector<uint32_t>& uids) override {
    Result<std::vector<index::MessageRecord>> recs = store_.index().messages(disk_, uids);
    if (!recs) return recs.take_error();
    std::vector<MessageMeta> out;
    out.reserve(recs->size());
    for (const index::MessageRecord& r : *recs) out.push_back(meta_of(r));
    return out;
  }

  Result<std::string> read(uint32_t uid) override { return read_message(uid, false); }
  Result<std::string> read_header(uint32_t uid) override { return read_message(uid, true); }

  Result<std::string> read_message(uint32_t uid, bool header_only) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      Result<index::MessageRecord> rec = store_.index().message(disk_, uid);
      if (!rec) return rec.take_error();
      // Bounded by the largest message tern-mda or APPEND accepts; 1 GiB guards against
      // a file someone else put there.
      Result<std::string> data = header_only ? read_file_head(rec->path(dir_), size_t{1} << 30)
                                             : read_file(rec->path(dir_), size_t{1} << 30);
      if (!data) return data.take_error();
      struct stat st;
      if (!data->empty() || ::stat(rec->path(dir_).c_str(), &st) == 0) return data;
      // Renamed or removed by another program since we indexed it: rescan once.
      if (Result<index::SyncResult> s = store_.index().sync(disk_); !s) return s.take_error();
    }
    return make_error(ErrorKind::kNotFound, "message " + std::to_string(uid) + " is gone");
  }

  Result<StoreResult> store(const std::vector<uint32_t>& uids, StoreMode mode, const std::vector<std::string>& flags,
                            std::optional<uint64_t> unchanged_since) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    std::string letters = flags_to_letters(flags, kw_, mode != StoreMode::kRemove);
    // A keyword that cannot get a letter (all 26 taken) is refused rather than lost.
    size_t wanted_keywords = 0;
    for (const std::string& f : flags) {
      if (!f.empty() && f[0] != '\\' && !common::iequals(f, "$Forwarded")) ++wanted_keywords;
    }
    size_t got_keywords = 0;
    for (char c : letters) got_keywords += (c >= 'a' && c <= 'z') ? 1 : 0;
    if (mode != StoreMode::kRemove && got_keywords < wanted_keywords) {
      return make_error(ErrorKind::kLimit, "too many keywords in this mailbox (26 at most)");
    }
    index::FlagMode fm = mode == StoreMode::kReplace ? index::FlagMode::kReplace
                         : mode == StoreMode::kAdd   ? index::FlagMode::kAdd
                                                     : index::FlagMode::kRemove;
    Result<index::MailboxIndex::FlagsResult> r = store_.index().set_flags(disk_, uids, letters, fm, unchanged_since);
    if (!r) return r.take_error();
    StoreResult out;
    out.modified = r->refused;
    for (const index::MessageRecord& rec : r->updated) {
      own_[rec.uid] = rec.modseq;
      out.updated.push_back(meta_of(rec));
    }
    return out;
  }

  Result<CopyResult> copy(const std::vector<uint32_t>& uids, const std::string& dest) override {
    Result<std::vector<index::MessageRecord>> recs = store_.index().messages(disk_, uids);
    if (!recs) return recs.take_error();
    return store_.copy_records(*recs, dir_, kw_, dest);
  }

  Result<CopyResult> move(const std::vector<uint32_t>& uids, const std::string& dest) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    Result<CopyResult> c = copy(uids, dest);
    if (!c) return c;
    Result<std::vector<uint32_t>> gone = store_.index().expunge(disk_, c->src_uids);
    if (!gone) return gone.take_error();
    return c;
  }

  Result<std::vector<uint32_t>> expunge(const std::optional<std::vector<uint32_t>>& only) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    Result<std::vector<index::MessageRecord>> recs =
        only ? store_.index().messages(disk_, *only) : store_.index().messages(disk_);
    if (!recs) return recs.take_error();
    std::vector<uint32_t> doomed;
    for (const index::MessageRecord& r : *recs) {
      if (has_letter(r.flags, 'T')) doomed.push_back(r.uid);
    }
    if (doomed.empty()) return doomed;
    return store_.index().expunge(disk_, doomed);
  }

  std::optional<std::string> cache_get(uint32_t uid, std::string_view field) override {
    const bool env = field == "imap.envelope";
    if (!env && field != "imap.bodystructure") return std::nullopt;
    for (const index::MailboxIndex::CacheEntry& e : pending_) {
      if (e.uid == uid && !(env ? e.envelope : e.bodystructure).empty()) return env ? e.envelope : e.bodystructure;
    }
    Result<index::MessageRecord> rec = store_.index().message(disk_, uid);
    if (!rec) return std::nullopt;
    const std::string& v = env ? rec->envelope : rec->bodystructure;
    if (v.empty()) return std::nullopt;
    return v;
  }

  void cache_put(uint32_t uid, std::string_view field, std::string_view value) override {
    const bool env = field == "imap.envelope";
    if (!env && field != "imap.bodystructure") return;
    // Bounded: a pathological message's structure is not worth keeping.
    if (value.empty() || value.size() > 16384) return;
    index::MailboxIndex::CacheEntry e;
    e.uid = uid;
    (env ? e.envelope : e.bodystructure) = std::string(value);
    pending_.push_back(std::move(e));
    // Stored in batches: one index commit per 256 rendered items, not one each.
    if (pending_.size() >= 256) flush_cache();
  }

 private:
  MessageMeta meta_of(const index::MessageRecord& r) {
    MessageMeta m;
    m.uid = r.uid;
    m.modseq = r.modseq;
    m.flags = letters_to_flags(r.flags, kw_);
    m.size = r.vsize;
    m.internal_date = r.internal_date;
    return m;
  }

  // The first read-write session that sees a message in new/ moves it to cur/ and
  // gets its \Recent; read-only sessions show new/ as \Recent without taking it.
  std::set<uint32_t> claim(const std::vector<index::MessageRecord>& recs) {
    std::set<uint32_t> out;
    std::vector<uint32_t> candidates;
    for (const index::MessageRecord& r : recs) {
      if (r.in_new) candidates.push_back(r.uid);
    }
    if (candidates.empty()) return out;
    if (mode_ == OpenMode::kReadOnly) return {candidates.begin(), candidates.end()};
    Result<std::vector<uint32_t>> got = store_.index().claim_new(disk_, candidates);
    if (!got) {
      common::log::warning("%s: moving new mail to cur/: %s", dir_.c_str(), got.error().message.c_str());
      return out;
    }
    return {got->begin(), got->end()};
  }

  void flush_cache() {
    if (pending_.empty()) return;
    if (Status s = store_.index().set_cache(disk_, pending_); !s) {
      common::log::warning("%s: caching ENVELOPE/BODYSTRUCTURE: %s", dir_.c_str(), s.error().message.c_str());
    }
    pending_.clear();
    pending_.shrink_to_fit();
  }

  MaildirStore& store_;
  std::string disk_;
  std::string dir_;
  OpenMode mode_;
  mutable Keywords kw_;
  UniqueFd pop3_lock_;
  bool first_done_ = false;
  std::optional<uint64_t> scan_gen_;
  index::MailboxStatus st_;
  std::unordered_map<uint32_t, uint64_t> own_;  // UID -> MODSEQ our store() produced
  std::vector<index::MailboxIndex::CacheEntry> pending_;
};

}  // namespace

// --- the store -------------------------------------------------------------------------

Result<std::unique_ptr<MaildirStore>> MaildirStore::open(StoreSettings settings) {
  std::unique_ptr<MaildirStore> s(new MaildirStore(std::move(settings)));
  if (Status c = maildir::create_root(s->settings_.root); !c) return c.take_error();
  Result<std::shared_ptr<index::MailboxIndex>> idx =
      index::MailboxIndex::open(s->settings_.root, index::MailboxIndex::Options{s->settings_.fsync});
  if (!idx) return idx.take_error();
  s->index_ = std::move(idx).value();
  return s;
}

MaildirStore::~MaildirStore() = default;

Result<std::string> MaildirStore::disk_name(const std::string& name) const {
  if (name.empty() || common::iequals(name, "INBOX")) return std::string("INBOX");
  std::string out;
  for (const std::string& part : common::split(name, '/')) {
    if (part.find('.') != std::string::npos) {
      return make_error(ErrorKind::kDenied, "a '.' cannot be stored in a Maildir++ folder name");
    }
    std::optional<std::string> enc = imap::mutf7_encode(part);
    if (!enc) return make_error(ErrorKind::kDenied, "mailbox name is not valid UTF-8");
    if (!out.empty()) out += '/';
    out += *enc;
  }
  return out;
}

Result<std::string> MaildirStore::dir_of(const std::string& name) const {
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = maildir::folder_path(settings_.root, *disk);
  if (!dir) return dir.take_error();
  // A folder that is a symlink out of the mail root (planted by the user or another
  // program) is refused: a session never leaves the root.
  if (Status c = maildir::check_within(settings_.root, *dir); !c) return c.take_error();
  return dir;
}

Status MaildirStore::maybe_scan(const std::string& disk, const std::string& dir, std::optional<uint64_t>* gen) {
  std::optional<uint64_t> now = ScanTracker::global().generation(dir);
  if (now && gen->has_value() && **gen == *now) return {};
  Result<index::SyncResult> r = index_->sync(disk);
  if (!r) return r.take_error();
  *gen = now;
  return {};
}

Status MaildirStore::check_quota(uint64_t bytes, uint64_t messages) {
  if (!settings_.quota_bytes && !settings_.quota_messages) return {};
  Result<index::MailboxIndex::Usage> u = index_->usage();
  if (!u) return u.take_error();
  if ((settings_.quota_bytes && u->bytes + bytes > settings_.quota_bytes) ||
      (settings_.quota_messages && u->messages + messages > settings_.quota_messages)) {
    return make_error(ErrorKind::kNoQuota, "quota exceeded");
  }
  return {};
}

Result<std::vector<std::string>> MaildirStore::read_subscriptions() const {
  Result<std::string> text = read_file(settings_.root + "/subscriptions", 1 << 20);
  if (!text) return text.take_error();
  std::vector<std::string> out;
  for (const std::string& line : common::split(*text, '\n')) {
    // Dovecot's newer format starts with a "V\t2" header and separates levels by TAB.
    if (line.empty() || line.starts_with("V\t")) continue;
    std::string n = line;
    std::replace(n.begin(), n.end(), '\t', '/');
    out.push_back(n);
  }
  return out;
}

Status MaildirStore::write_subscriptions(const std::vector<std::string>& names) const {
  std::string text;
  for (const std::string& n : names) text += n + "\n";
  return write_file(settings_.root + "/subscriptions", text);
}

Result<std::vector<MailboxInfo>> MaildirStore::list() {
  Result<std::vector<std::string>> folders = maildir::list_folders(settings_.root);
  if (!folders) return folders.take_error();
  Result<std::vector<std::string>> subs = read_subscriptions();
  if (!subs) return subs.take_error();
  std::set<std::string> subscribed;
  for (const std::string& s : *subs) {
    if (std::optional<std::string> u = utf8_name(s)) subscribed.insert(*u);
  }
  std::map<std::string, MailboxInfo> out;
  out["INBOX"] = MailboxInfo{"INBOX", SpecialUse::kNone, subscribed.count("INBOX") > 0, false};
  for (const std::string& f : *folders) {
    std::optional<std::string> u = utf8_name(f);
    if (!u) continue;  // not a name we could have written (not modified UTF-7)
    out[*u] = MailboxInfo{*u, special_use_of(*u), subscribed.count(*u) > 0, false};
  }
  // Maildir++ keeps ".a.b" without ".a": show "a" as a \Noselect parent.
  std::vector<std::string> names;
  for (const auto& [n, i] : out) names.push_back(n);
  for (const std::string& n : names) {
    for (size_t p = n.find('/'); p != std::string::npos; p = n.find('/', p + 1)) {
      std::string parent = n.substr(0, p);
      if (!out.count(parent)) out[parent] = MailboxInfo{parent, SpecialUse::kNone, subscribed.count(parent) > 0, true};
    }
  }
  for (const std::string& u : subscribed) {
    if (!out.count(u)) out[u] = MailboxInfo{u, SpecialUse::kNone, true, false, true};
  }
  std::vector<MailboxInfo> v;
  for (auto& [n, i] : out) v.push_back(std::move(i));
  return v;
}

Status MaildirStore::create(const std::string& name) {
  if (common::iequals(name, "INBOX")) return make_error(ErrorKind::kExists, "INBOX exists");
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (is_dir(*dir)) return make_error(ErrorKind::kExists, "mailbox exists");
  return maildir::create(*dir, true);
}

Status MaildirStore::remove(const std::string& name) {
  if (common::iequals(name, "INBOX")) return make_error(ErrorKind::kDenied, "INBOX cannot be deleted");
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir)) {
    // A \Noselect parent (Maildir++ keeps ".a.b" without ".a") exists as far as
    // LIST shows: deleting it is refused as RFC 3501 6.3.4 says, not "no such mailbox".
    Result<std::vector<std::string>> folders = maildir::list_folders(settings_.root);
    if (!folders) return folders.take_error();
    for (const std::string& f : *folders) {
      if (f.starts_with(*disk + "/")) {
        return make_error(ErrorKind::kProtocol, "Mailbox has children and no messages of its own, delete the children first");
      }
    }
    return make_error(ErrorKind::kNotFound, "no such mailbox");
  }
  // Rename first, so no other program delivers into a half-removed folder.
  const std::string doomed = settings_.root + "/.tern-deleting." + std::to_string(::getpid()) + "." +
                             std::to_string(reinterpret_cast<uintptr_t>(this));
  if (::rename(dir->c_str(), doomed.c_str()) < 0) return common::errno_error("rename " + *dir, errno);
  ScanTracker::global().touch(*dir);
  if (Status s = index_->remove_mailbox(*disk); !s) common::log::warning("%s", s.error().message.c_str());
  return remove_tree(doomed);
}

Status MaildirStore::rename(const std::string& from, const std::string& to) {
  Result<std::string> from_dir = dir_of(from), to_dir = dir_of(to);
  if (!from_dir) return from_dir.take_error();
  if (!to_dir) return to_dir.take_error();
  Result<std::string> from_disk = disk_name(from), to_disk = disk_name(to);
  if (!from_disk) return from_disk.take_error();
  if (!to_disk) return to_disk.take_error();
  if (common::iequals(to, "INBOX") || is_dir(*to_dir)) return make_error(ErrorKind::kExists, "mailbox exists");
  if (common::iequals(from, "INBOX")) {
    // RFC 3501 6.3.5: INBOX's messages move to the new mailbox; INBOX stays, empty.
    if (Status c = maildir::create(*to_dir, true); !c) return c;
    // The keyword letters in the file names mean what INBOX's dovecot-keywords says:
    // the new mailbox gets the same map before the first file arrives, so every
    // message keeps exactly its keywords (INBOX keeps its map too, as Dovecot does).
    Result<std::string> keywords = read_file(*from_dir + "/dovecot-keywords", 64 << 10);
    if (!keywords) return keywords.take_error();
    if (!keywords->empty()) {
      if (Status w = write_file(*to_dir + "/dovecot-keywords", *keywords); !w) return w;
    }
    Result<std::vector<maildir::Entry>> list = maildir::list(*from_dir);
    if (!list) return list.take_error();
    for (const maildir::Entry& e : *list) {
      std::string dest = *to_dir + (e.in_new ? "/new/" : "/cur/") + e.name;
      if (::rename(e.path(*from_dir).c_str(), dest.c_str()) < 0 && errno != ENOENT) {
        return common::errno_error("rename " + e.path(*from_dir), errno);
      }
    }
    ScanTracker::global().touch(*from_dir);
    if (Result<index::SyncResult> s = index_->sync("INBOX"); !s) return s.take_error();
    return {};
  }
  // The mailbox and its children (".a" and ".a.*" are separate directories; a
  // \Noselect parent has only children).
  Result<std::vector<std::string>> folders = maildir::list_folders(settings_.root);
  if (!folders) return folders.take_error();
  std::vector<std::pair<std::string, std::string>> moves;  // disk names
  for (const std::string& f : *folders) {
    if (f == *from_disk || f.starts_with(*from_disk + "/")) {
      moves.emplace_back(f, *to_disk + f.substr(from_disk->size()));
    }
  }
  if (moves.empty()) return make_error(ErrorKind::kNotFound, "no such mailbox");
  for (const auto& [a, b] : moves) {
    Result<std::string> da = maildir::folder_path(settings_.root, a), db = maildir::folder_path(settings_.root, b);
    if (!da || !db) return make_error(ErrorKind::kDenied, "invalid mailbox name");
    if (is_dir(*db)) return make_error(ErrorKind::kExists, "mailbox exists");
  }
  for (const auto& [a, b] : moves) {
    Result<std::string> da = maildir::folder_path(settings_.root, a), db = maildir::folder_path(settings_.root, b);
    if (::rename(da->c_str(), db->c_str()) < 0) return common::errno_error("rename " + *da, errno);
    ScanTracker::global().touch(*da);
    // The new name starts with a new UIDVALIDITY (allowed by RFC 3501 6.3.5).
    if (Status s = index_->remove_mailbox(a); !s) common::log::warning("%s", s.error().message.c_str());
  }
  return {};
}

Status MaildirStore::subscribe(const std::string& name, bool on) {
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::vector<std::string>> subs = read_subscriptions();
  if (!subs) return subs.take_error();
  std::vector<std::string> v = std::move(subs).value();
  auto it = std::find(v.begin(), v.end(), *disk);
  if (on && it == v.end()) v.push_back(*disk);
  if (!on) {
    if (it == v.end()) return {};
    v.erase(it);
  }
  return write_subscriptions(v);
}

Result<std::unique_ptr<Mailbox>> MaildirStore::open(const std::string& name, OpenMode mode) {
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir + "/cur")) return make_error(ErrorKind::kNotFound, "no such mailbox");
  UniqueFd lock;
  if (mode == OpenMode::kPop3) {
    // RFC 1939 8: one POP3 session per maildrop. flock() conflicts between any two
    // opens, in one process or several, and goes away with a crashed holder.
    const std::string path = *dir + "/tern-pop3-lock";
    lock.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!lock) return common::errno_error("open " + path, errno);
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) < 0) {
      if (errno == EWOULDBLOCK) return make_error(ErrorKind::kInUse, "another POP3 session holds the maildrop");
      return common::errno_error("flock " + path, errno);
    }
  }
  // The first sync() of the handle scans the directory.
  return std::unique_ptr<Mailbox>(new MaildirMailbox(*this, *disk, *dir, mode, std::move(lock)));
}

Result<MailboxStatus> MaildirStore::status(const std::string& name) {
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir + "/cur")) return make_error(ErrorKind::kNotFound, "no such mailbox");
  std::optional<uint64_t> gen;
  if (Status s = maybe_scan(*disk, *dir, &gen); !s) return s.take_error();
  Result<index::Changes> all = index_->changes_since(*disk, 0);
  if (!all) return all.take_error();
  MailboxStatus st;
  st.uid_next = all->status.uid_next;
  st.uid_validity = all->status.uid_validity;
  st.highest_modseq = all->status.highest_modseq;
  for (const index::MessageRecord& r : all->changed) {
    ++st.messages;
    st.recent += r.in_new ? 1 : 0;
    st.unseen += has_letter(r.flags, 'S') ? 0 : 1;
    st.deleted += has_letter(r.flags, 'T') ? 1 : 0;
    st.size += r.vsize;
  }
  return st;
}

Result<AppendResult> MaildirStore::append(const std::string& name, std::string_view message,
                                          const std::vector<std::string>& flags, std::optional<int64_t> internal_date) {
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir + "/cur")) return make_error(ErrorKind::kNotFound, "no such mailbox");
  const std::string data = common::mime::to_lf(message);  // BODY[] gives `message` back
  if (Status q = check_quota(data.size(), 1); !q) return q.take_error();
  Keywords kw(*dir);
  const std::string letters = flags_to_letters(flags, kw, true);
  Result<maildir::Delivery> d = maildir::Delivery::begin(*dir);
  if (!d) return d.take_error();
  if (Status w = d->write(data); !w) return w.take_error();
  return commit_append(*disk, *dir, *d, letters, internal_date);
}

Result<AppendResult> MaildirStore::commit_append(const std::string& disk, const std::string& dir,
                                                 maildir::Delivery& d, const std::string& letters,
                                                 std::optional<int64_t> internal_date) {
  // Into new/: \Recent for the first session that sees it, as delivered mail.
  Result<std::string> file = d.commit(settings_.fsync, &maildir::DirSyncer::global(), std::string_view(letters),
                                      maildir::Delivery::Into::kNew);
  if (!file) return file.take_error();
  const int64_t date = internal_date.value_or(static_cast<int64_t>(::time(nullptr)));
  // The file's mtime is its INTERNALDATE for every Maildir reader (and for our own
  // index, should it be rebuilt).
  const std::string path = dir + "/new/" + *file;
  timespec times[2] = {{static_cast<time_t>(date), 0}, {static_cast<time_t>(date), 0}};
  ::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
  Result<uint32_t> uid = index_->add_delivered(disk, *file, true, d.size(), d.vsize(), date);
  if (!uid) return uid.take_error();
  Result<index::MailboxStatus> st = index_->status(disk);
  if (!st) return st.take_error();
  ScanTracker::global().touch(dir);
  return AppendResult{st->uid_validity, *uid};
}

namespace {

// A message spooled into the root's tmp/, its CRLFs made LF as it is written, by
// mime::to_lf()'s rule (the CR of a CRLF goes unless a CR precedes it), with a CR
// at the end of one write held until the next byte shows what it is.
class MaildirSpool : public Spool {
 public:
  explicit MaildirSpool(maildir::Delivery d) : d_(std::move(d)) {}
  Status write(std::string_view data) override {
    out_.clear();
    for (char c : data) {
      if (held_cr_) {
        held_cr_ = false;
        if (!(c == '\n' && before_cr_ != '\r')) out_ += '\r';
      }
      if (c == '\r') {
        held_cr_ = true;
        before_cr_ = prev_;
      } else {
        out_ += c;
      }
      prev_ = c;
    }
    return d_.write(out_);
  }
  // The last byte, and the Delivery to commit.
  Result<maildir::Delivery*> finish() {
    if (held_cr_) {
      held_cr_ = false;
      if (Status w = d_.write("\r"); !w) return w.take_error();
    }
    return &d_;
  }

 private:
  maildir::Delivery d_;
  std::string out_;
  bool held_cr_ = false;
  char before_cr_ = 0;  // the byte before the held CR
  char prev_ = 0;
};

}  // namespace

Result<std::unique_ptr<Spool>> MaildirStore::begin_spool(uint64_t size) {
  // Before a byte is read: a client over quota is not made to upload first.
  if (Status q = check_quota(size, 1); !q) return q.take_error();
  Result<maildir::Delivery> d = maildir::Delivery::begin(settings_.root);
  if (!d) return d.take_error();
  return std::unique_ptr<Spool>(std::make_unique<MaildirSpool>(std::move(d).value()));
}

Result<AppendResult> MaildirStore::append_spool(const std::string& name, std::unique_ptr<Spool> spool,
                                                const std::vector<std::string>& flags,
                                                std::optional<int64_t> internal_date) {
  auto* m = dynamic_cast<MaildirSpool*>(spool.get());
  if (!m) return make_error(ErrorKind::kTemp, "spool of another store");
  Result<std::string> disk = disk_name(name);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(name);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir + "/cur")) return make_error(ErrorKind::kNotFound, "no such mailbox");
  Result<maildir::Delivery*> d = m->finish();
  if (!d) return d.take_error();
  if ((*d)->size() == 0) return make_error(ErrorKind::kProtocol, "Can't save an empty message");
  if (Status q = check_quota((*d)->size(), 1); !q) return q.take_error();
  Keywords kw(*dir);
  const std::string letters = flags_to_letters(flags, kw, true);
  (*d)->retarget(*dir);
  return commit_append(*disk, *dir, **d, letters, internal_date);
}

Result<CopyResult> MaildirStore::copy_records(const std::vector<index::MessageRecord>& recs, const std::string& src_dir,
                                              Keywords& src_kw, const std::string& dest) {
  Result<std::string> disk = disk_name(dest);
  if (!disk) return disk.take_error();
  Result<std::string> dir = dir_of(dest);
  if (!dir) return dir.take_error();
  if (!is_dir(*dir + "/cur")) return make_error(ErrorKind::kNotFound, "no such mailbox");
  uint64_t bytes = 0;
  for (const index::MessageRecord& r : recs) bytes += r.size;
  if (Status q = check_quota(bytes, recs.size()); !q) return q.take_error();
  Keywords dest_kw(*dir);
  // Files first (hard links where the file system allows, as Dovecot does), one
  // directory fsync for all of them, then the index.
  struct Made {
    uint32_t src_uid;
    std::string file;
    const index::MessageRecord* rec;
  };
  std::vector<Made> made;
  for (const index::MessageRecord& r : recs) {
    std::string letters = flags_to_letters(letters_to_flags(r.flags, src_kw), dest_kw, true);
    // Into new/, so the copy is \Recent for the first session that sees it (RFC 3501
    // 6.4.7; MOVE too, RFC 6851 3.3); its flags stay in the name.
    const std::string base = maildir::unique_base(r.size, r.vsize);
    std::string name = letters.empty() ? base : maildir::make_name(base, letters);
    std::string to = *dir + "/new/" + name;
    if (::link(r.path(src_dir).c_str(), to.c_str()) < 0) {
      if (errno == ENOENT) continue;  // expunged meanwhile: not copied
      Result<std::string> data = read_file(r.path(src_dir), size_t{1} << 30);
      if (!data) return data.take_error();
      Result<maildir::Delivery> d = maildir::Delivery::begin(*dir);
      if (!d) return d.take_error();
      if (Status w = d->write(*data); !w) return w.take_error();
      Result<std::string> f = d->commit(settings_.fsync, &maildir::DirSyncer::global(), std::string_view(letters),
                                        maildir::Delivery::Into::kNew);
      if (!f) return f.take_error();
      name = *f;
      to = *dir + "/new/" + name;
    }
    made.push_back(Made{r.uid, name, &r});
  }
  if (settings_.fsync == maildir::Fsync::kYes && !made.empty()) {
    if (Status s = maildir::DirSyncer::global().sync(*dir + "/new"); !s) return s.take_error();
  }
  CopyResult out;
  for (const Made& m : made) {
    Result<uint32_t> uid = index_->add_delivered(*disk, m.file, true, m.rec->size, m.rec->vsize, m.rec->internal_date);
    if (!uid) return uid.take_error();
    out.src_uids.push_back(m.src_uid);
    out.dst_uids.push_back(*uid);
  }
  Result<index::MailboxStatus> st = index_->status(*disk);
  if (!st) return st.take_error();
  out.uid_validity = st->uid_validity;
  ScanTracker::global().touch(*dir);
  return out;
}

Result<QuotaInfo> MaildirStore::quota() {
  Result<index::MailboxIndex::Usage> u = index_->usage();
  if (!u) return u.take_error();
  QuotaInfo q;
  q.storage_used = u->bytes;
  q.storage_limit = settings_.quota_bytes;
  q.messages_used = u->messages;
  q.messages_limit = settings_.quota_messages;
  return q;
}

}  // namespace tern::mra
