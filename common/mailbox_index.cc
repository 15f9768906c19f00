#include "common/mailbox_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <map>
#include <unordered_map>

#include "common/log.h"
#include "common/mime.h"
#include "common/text.h"

namespace tern::common::index {

// DBI handles, opened once per environment (LMDB forbids concurrent mdb_dbi_open).
struct MailboxIndex::Dbs {
  MDB_dbi mailboxes;  // name -> MailboxMeta
  MDB_dbi messages;   // id(be32) uid(be32) -> record
  MDB_dbi files;      // id(be32) base -> uid(be32)
  MDB_dbi expunged;   // id(be32) modseq(be64) uid(be32) -> ""
  MDB_dbi delivery_ids;  // tern-mda's delivery key -> decimal time recorded
};

namespace {

constexpr uint8_t kRecordVersion = 1;

// --- encoding --------------------------------------------------------------------
void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += static_cast<char>((v >> (i * 8)) & 0xff);
}
void put_u64(std::string& s, uint64_t v) {
  for (int i = 7; i >= 0; --i) s += static_cast<char>((v >> (i * 8)) & 0xff);
}
void put_str(std::string& s, std::string_view v) {
  put_u32(s, static_cast<uint32_t>(v.size()));
  s.append(v);
}

class Reader {
 public:
  explicit Reader(std::string_view d) : d_(d) {}
  bool u8(uint8_t& v) {
    if (d_.size() < 1) return fail();
    v = static_cast<uint8_t>(d_[0]);
    d_.remove_prefix(1);
    return true;
  }
  bool u32(uint32_t& v) {
    if (d_.size() < 4) return fail();
    v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(d_[i]);
    d_.remove_prefix(4);
    return true;
  }
  bool u64(uint64_t& v) {
    if (d_.size() < 8) return fail();
    v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(d_[i]);
    d_.remove_prefix(8);
    return true;
  }
  bool str(std::string& v) {
    uint32_t n;
    if (!u32(n) || d_.size() < n) return fail();
    v.assign(d_.substr(0, n));
    d_.remove_prefix(n);
    return true;
  }
  bool ok() const { return ok_; }
  // Every byte read and nothing failed: the value is exactly what was decoded.
  bool done() const { return ok_ && d_.empty(); }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  std::string_view d_;
  bool ok_ = true;
};

}  // namespace

struct MailboxIndex::Meta {
  uint32_t id = 0;
  MailboxStatus st;
};

std::string encode_meta(uint32_t id, const MailboxStatus& st) {
  std::string s;
  put_u32(s, id);
  put_u32(s, st.uid_validity);
  put_u32(s, st.uid_next);
  put_u64(s, st.highest_modseq);
  put_u32(s, st.messages);
  put_u64(s, st.bytes);
  return s;
}

bool decode_meta(std::string_view v, uint32_t& id, MailboxStatus& st) {
  Reader r(v);
  r.u32(id);
  r.u32(st.uid_validity);
  r.u32(st.uid_next);
  r.u64(st.highest_modseq);
  r.u32(st.messages);
  r.u64(st.bytes);
  return r.done();
}

std::string encode_record(const MessageRecord& m) {
  std::string s;
  s += static_cast<char>(kRecordVersion);
  s += static_cast<char>(m.in_new ? 1 : 0);
  put_u64(s, m.modseq);
  put_u64(s, m.size);
  put_u64(s, m.vsize);
  put_u64(s, static_cast<uint64_t>(m.internal_date));
  put_u64(s, static_cast<uint64_t>(m.save_date));
  put_str(s, m.base);
  put_str(s, m.file);
  put_str(s, m.flags);
  put_str(s, m.envelope);
  put_str(s, m.bodystructure);
  return s;
}

bool decode_record(std::string_view v, uint32_t uid, MessageRecord& m) {
  Reader r(v);
  uint8_t ver = 0, in_new = 0;
  uint64_t idate = 0, sdate = 0;
  r.u8(ver);
  r.u8(in_new);
  r.u64(m.modseq);
  r.u64(m.size);
  r.u64(m.vsize);
  r.u64(idate);
  r.u64(sdate);
  r.str(m.base);
  r.str(m.file);
  r.str(m.flags);
  r.str(m.envelope);
  r.str(m.bodystructure);
  m.uid = uid;
  m.in_new = in_new != 0;
  m.internal_date = static_cast<int64_t>(idate);
  m.save_date = static_cast<int64_t>(sdate);
  if (!r.done() || ver != kRecordVersion || in_new > 1) return false;
  // `file` is joined to the mailbox directory and renamed and unlinked there: a
  // record that names anything but a maildir entry of its own message (a path with
  // '/', "..", a dotfile) is corrupt, never a file to touch.
  return maildir::valid_entry_name(m.file) && maildir::parse_name(m.file).base == m.base;
}

namespace {

std::string msg_key(uint32_t id, uint32_t uid) {
  std::string k;
  put_u32(k, id);
  put_u32(k, uid);
  return k;
}

std::string file_key(uint32_t id, std::string_view base) {
  std::string k;
  put_u32(k, id);
  k.append(base);
  return k;
}

std::string id_prefix(uint32_t id) {
  std::string k;
  put_u32(k, id);
  return k;
}

uint32_t key_uid(std::string_view key) {
  Reader r(key.substr(4));
  uint32_t uid = 0;
  r.u32(uid);
  return uid;
}

Error corrupt(const std::string& what) { return make_error(ErrorKind::kTemp, "mailbox index corrupt: " + what); }

// Registry of open environments: one per path per process (LMDB's rule).
std::mutex g_registry_mu;
std::map<std::string, std::weak_ptr<MailboxIndex>>& registry() {
  static std::map<std::string, std::weak_ptr<MailboxIndex>> r;
  return r;
}

std::string normalize_mailbox(std::string_view mailbox) {
  if (mailbox.empty() || iequals(mailbox, "INBOX")) return "INBOX";
  return std::string(mailbox);
}

// The file's size and virtual size, from its name when it has S=/W= (ours, Dovecot's),
// else by reading it (Postfix and mutt write neither).
Status measure(const std::string& path, const maildir::FileName& fn, MessageRecord& rec) {
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return errno_error("stat " + path, errno);
  rec.internal_date = static_cast<int64_t>(st.st_mtime);
  rec.size = fn.size ? *fn.size : static_cast<uint64_t>(st.st_size);
  if (fn.vsize) {
    rec.vsize = *fn.vsize;
    return {};
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errno_error("open " + path, errno);
  // RFC822.SIZE: the octets to_crlf() makes of the file, which adds a CR to each bare
  // LF only (a file written with CRLF, as migration tools and some MDAs do, is served
  // as it is).
  uint64_t size = 0, bare_lfs = 0;
  bool after_cr = false;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error("read " + path, errno);
    }
    if (n == 0) break;
    size += static_cast<uint64_t>(n);
    bare_lfs += mime::count_bare_lf(std::string_view(buf, static_cast<size_t>(n)), after_cr);
    after_cr = buf[n - 1] == '\r';
  }
  rec.size = size;
  rec.vsize = size + bare_lfs;
  return {};
}

}  // namespace


MailboxIndex::MailboxIndex() = default;
MailboxIndex::~MailboxIndex() = default;

namespace {
// Keys in "mailboxes" that are not mailbox names start with NUL (never in a name).
const std::string kNextIdKey("\0next_id", 8);
const std::string kLastValidityKey("\0last_uidvalidity", 17);

std::string scalar_u32(uint32_t v) {
  std::string s;
  put_u32(s, v);
  return s;
}

uint32_t read_scalar(lmdb::Txn& txn, MDB_dbi dbi, const std::string& key) {
  Result<std::string_view> v = txn.get(dbi, key);
  if (!v) return 0;
  Reader r(*v);
  uint32_t x = 0;
  r.u32(x);
  return x;
}
}  // namespace

Result<std::shared_ptr<MailboxIndex>> MailboxIndex::open(const std::string& root, Options options) {
  std::lock_guard<std::mutex> lk(g_registry_mu);
  auto& reg = registry();
  if (auto it = reg.find(root); it != reg.end()) {
    if (std::shared_ptr<MailboxIndex> live = it->second.lock()) return live;
  }
  std::shared_ptr<MailboxIndex> idx(new MailboxIndex);
  idx->root_ = root;
  idx->fsync_ = options.fsync;
  lmdb::Env::Options eo;
  eo.map_size = 256u << 20;  // virtual; the file grows only as records are written
  eo.max_dbs = 8;
  eo.flags = MDB_NOSUBDIR | MDB_NOTLS | (options.fsync == maildir::Fsync::kNo ? MDB_NOSYNC : 0);
  eo.mode = 0600;
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(root + "/tern-index", eo);
  if (!env) return env.take_error();
  idx->env_ = std::move(env).value();
  int dead = 0;
  mdb_reader_check(idx->env_->get(), &dead);  // reader slots of processes killed with -9
  idx->dbs_ = std::make_unique<Dbs>();
  Status s = lmdb::write(*idx->env_, [&](lmdb::Txn& txn) -> Status {
    Result<MDB_dbi> a = txn.open_db("mailboxes", true);
    if (!a) return a.take_error();
    Result<MDB_dbi> b = txn.open_db("messages", true);
    if (!b) return b.take_error();
    Result<MDB_dbi> c = txn.open_db("files", true);
    if (!c) return c.take_error();
    Result<MDB_dbi> d = txn.open_db("expunged", true);
    if (!d) return d.take_error();
    Result<MDB_dbi> e = txn.open_db("delivery-ids", true);
    if (!e) return e.take_error();
    *idx->dbs_ = Dbs{*a, *b, *c, *d, *e};
    return {};
  });
  if (!s) return s.take_error();
  idx->group_ = std::make_unique<GroupCommit>(*idx->env_);
  reg[root] = idx;
  return idx;
}

// --- group commit --------------------------------------------------------------

struct GroupCommit::Slot {
  Change change;
  bool done = false;
  Status status;
};

Status GroupCommit::write(Change change) {
  auto slot = std::make_shared<Slot>();
  slot->change = std::move(change);
  std::unique_lock<std::mutex> lk(mu_);
  pending_.push_back(slot);
  while (!slot->done) {
    if (running_) {
      cv_.wait(lk);
      continue;
    }
    // Nobody is committing: this writer commits everything waiting, its own
    // change included.
    running_ = true;
    std::vector<std::shared_ptr<Slot>> batch;
    batch.swap(pending_);
    lk.unlock();
    run_batch(batch);
    lk.lock();
    for (auto& b : batch) b->done = true;
    running_ = false;
    cv_.notify_all();
  }
  return slot->status;
}

void GroupCommit::run_batch(std::vector<std::shared_ptr<Slot>>& batch) {
  auto count = [this] {
    std::lock_guard<std::mutex> lk(mu_);
    ++commits_;
  };
  if (batch.size() > 1) {
    Status s = lmdb::write(env_, [&](lmdb::Txn& txn) -> Status {
      for (auto& b : batch) {
        if (Status c = b->change(txn); !c) return c;
      }
      return {};
    });
    if (s) {
      count();
      return;  // every slot's status stays OK
    }
  }
  for (auto& b : batch) {
    b->status = lmdb::write(env_, b->change);
    if (b->status) count();
  }
}

uint64_t GroupCommit::commits() const {
  std::lock_guard<std::mutex> lk(mu_);
  return commits_;
}

size_t GroupCommit::waiting() const {
  std::lock_guard<std::mutex> lk(mu_);
  return pending_.size();
}

Result<std::string> MailboxIndex::mailbox_dir(std::string_view mailbox) const {
  return maildir::folder_path(root_, mailbox);
}

Result<MailboxIndex::Meta> MailboxIndex::get_meta(lmdb::Txn& txn, const std::string& mailbox, bool create) {
  Meta m;
  Result<std::string_view> v = txn.get(dbs_->mailboxes, mailbox);
  if (v) {
    if (!decode_meta(*v, m.id, m.st)) return corrupt("mailbox " + mailbox);
    return m;
  }
  if (v.error().kind != ErrorKind::kNotFound) return v.take_error();
  if (!create) return make_error(ErrorKind::kNotFound, "mailbox " + mailbox + " is not in the index");
  m.id = read_scalar(txn, dbs_->mailboxes, kNextIdKey) + 1;
  if (Status s = txn.put(dbs_->mailboxes, kNextIdKey, scalar_u32(m.id)); !s) return s.take_error();
  // UIDVALIDITY: the time, and never the same value twice in this index, so a
  // mailbox deleted and recreated within a second still gets a new one.
  uint32_t now = static_cast<uint32_t>(::time(nullptr));
  uint32_t last = read_scalar(txn, dbs_->mailboxes, kLastValidityKey);
  m.st.uid_validity = now > last ? now : last + 1;
  if (Status s = txn.put(dbs_->mailboxes, kLastValidityKey, scalar_u32(m.st.uid_validity)); !s) return s.take_error();
  m.st.uid_next = 1;
  m.st.highest_modseq = 1;
  if (Status s = put_meta(txn, mailbox, m); !s) return s.take_error();
  return m;
}

Status MailboxIndex::put_meta(lmdb::Txn& txn, const std::string& mailbox, const Meta& meta) {
  return txn.put(dbs_->mailboxes, mailbox, encode_meta(meta.id, meta.st));
}

Result<MessageRecord> MailboxIndex::get_record(lmdb::Txn& txn, uint32_t id, uint32_t uid) {
  Result<std::string_view> v = txn.get(dbs_->messages, msg_key(id, uid));
  if (!v) return v.take_error();
  MessageRecord rec;
  if (!decode_record(*v, uid, rec)) return corrupt("message " + std::to_string(uid));
  return rec;
}

Status MailboxIndex::put_record(lmdb::Txn& txn, uint32_t id, const MessageRecord& rec) {
  return txn.put(dbs_->messages, msg_key(id, rec.uid), encode_record(rec));
}

Status MailboxIndex::drop_record(lmdb::Txn& txn, Meta& meta, const MessageRecord& rec) {
  if (Status s = txn.del(dbs_->messages, msg_key(meta.id, rec.uid)); !s) return s;
  if (Status s = txn.del(dbs_->files, file_key(meta.id, rec.base)); !s && s.error().kind != ErrorKind::kNotFound) {
    return s;
  }
  std::string ek = id_prefix(meta.id);
  put_u64(ek, ++meta.st.highest_modseq);
  put_u32(ek, rec.uid);
  if (Status s = txn.put(dbs_->expunged, ek, ""); !s) return s;
  if (meta.st.messages > 0) --meta.st.messages;
  meta.st.bytes = meta.st.bytes >= rec.size ? meta.st.bytes - rec.size : 0;
  return {};
}

Result<uint32_t> MailboxIndex::add_delivered(std::string_view mailbox, const std::string& file, bool in_new,
                                             uint64_t size, uint64_t vsize, int64_t internal_date) {
  return add_delivered(mailbox, file, in_new, size, vsize, internal_date, {}, 0);
}

Result<bool> MailboxIndex::has_delivery_key(std::string_view delivery_key) {
  bool found = false;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<std::string_view> v = txn.get(dbs_->delivery_ids, delivery_key);
    if (!v && v.error().kind != ErrorKind::kNotFound) return v.take_error();
    found = v.ok();
    return {};
  });
  if (!s) return s.take_error();
  return found;
}

Status MailboxIndex::prune_delivery_keys(int64_t before) {
  return lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<lmdb::Cursor> c = lmdb::Cursor::open(txn, dbs_->delivery_ids);
    if (!c) return c.take_error();
    for (auto e = c->first(); e; e = c->next()) {
      std::optional<uint64_t> when = parse_u64(e->second);
      if (!when || static_cast<int64_t>(*when) < before) {
        if (Status d = c->del(); !d) return d;
      }
    }
    return {};
  });
}

Result<uint32_t> MailboxIndex::add_delivered(std::string_view mailbox_in, const std::string& file, bool in_new,
                                             uint64_t size, uint64_t vsize, int64_t internal_date,
                                             std::string_view delivery_key, int64_t now) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  maildir::FileName fn = maildir::parse_name(file);
  uint32_t uid = 0;
  // Shares a commit with the deliveries to this user that finish meanwhile; sets
  // uid afresh each time it runs.
  Status s = group_->write([&](lmdb::Txn& txn) -> Status {
    uid = 0;
    if (!delivery_key.empty()) {
      if (Status st = txn.put(dbs_->delivery_ids, delivery_key, std::to_string(now)); !st) return st;
    }
    Result<Meta> meta = get_meta(txn, mailbox, true);
    if (!meta) return meta.take_error();
    const std::string fk = file_key(meta->id, fn.base);
    if (Result<std::string_view> have = txn.get(dbs_->files, fk); have) {
      Reader r(*have);
      r.u32(uid);
      return {};  // a sync got there first
    }
    MessageRecord rec;
    rec.uid = uid = meta->st.uid_next++;
    rec.base = fn.base;
    rec.file = file;
    rec.in_new = in_new;
    rec.flags = fn.flags;
    rec.modseq = ++meta->st.highest_modseq;
    rec.size = size;
    rec.vsize = vsize;
    rec.internal_date = internal_date;
    rec.save_date = static_cast<int64_t>(::time(nullptr));
    if (Status st = put_record(txn, meta->id, rec); !st) return st;
    if (Status st = txn.put(dbs_->files, fk, scalar_u32(uid)); !st) return st;
    ++meta->st.messages;
    meta->st.bytes += size;
    return put_meta(txn, mailbox, *meta);
  });
  if (!s) return s.take_error();
  return uid;
}

Result<std::optional<uint32_t>> MailboxIndex::uid_of_base(std::string_view mailbox_in, std::string_view base) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  std::optional<uint32_t> uid;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) {
      if (meta.error().kind == ErrorKind::kNotFound) return {};
      return meta.take_error();
    }
    Result<std::string_view> have = txn.get(dbs_->files, file_key(meta->id, std::string(base)));
    if (!have) {
      if (have.error().kind == ErrorKind::kNotFound) return {};
      return have.take_error();
    }
    uint32_t u = 0;
    Reader r(*have);
    if (!r.u32(u)) return corrupt("file record");
    uid = u;
    return {};
  });
  if (!s) return s.take_error();
  return uid;
}

Result<uint32_t> MailboxIndex::adopt_delivered(std::string_view mailbox, const std::string& file,
                                               std::string_view delivery_key, int64_t now) {
  Result<std::string> dir = mailbox_dir(normalize_mailbox(mailbox));
  if (!dir) return dir.take_error();
  const maildir::FileName fn = maildir::parse_name(file);
  MessageRecord rec;
  if (Status m = measure(*dir + "/new/" + file, fn, rec); !m) return m.take_error();
  return add_delivered(mailbox, file, true, rec.size, rec.vsize, rec.internal_date, delivery_key, now);
}

Result<SyncResult> MailboxIndex::sync(std::string_view mailbox_in) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Result<std::string> dir = mailbox_dir(mailbox);
  if (!dir) return dir.take_error();
  struct stat st;
  if (::stat((*dir + "/cur").c_str(), &st) < 0 || ::stat((*dir + "/new").c_str(), &st) < 0) {
    return make_error(ErrorKind::kNotFound, "mailbox " + mailbox + ": " + *dir + " is not a maildir");
  }
  // Leftovers of deliveries that crashed mid-write (the Maildir spec's 36 hours).
  (void)maildir::clean_tmp(*dir);
  SyncResult result;
  Status s = lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    result = SyncResult();
    Result<Meta> meta_r = get_meta(txn, mailbox, true);
    if (!meta_r) return meta_r.take_error();
    Meta meta = *meta_r;

    auto scan = [&](std::unordered_map<std::string, maildir::Entry>& out) -> Status {
      Result<std::vector<maildir::Entry>> list = maildir::list(*dir);
      if (!list) return list.take_error();
      for (maildir::Entry& e : *list) {
        auto it = out.find(e.parsed.base);
        // One base in both new/ and cur/ (a move seen half-way, or a copy left by
        // a crashed program): one message; cur/ wins as the later state.
        if (it == out.end()) {
          out.emplace(e.parsed.base, std::move(e));
        } else if (it->second.in_new && !e.in_new) {
          it->second = std::move(e);
        }
      }
      return {};
    };
    std::unordered_map<std::string, maildir::Entry> seen;
    if (Status sc = scan(seen); !sc) return sc;

    std::vector<MessageRecord> recs;
    {
      Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbs_->messages);
      if (!cur) return cur.take_error();
      const std::string prefix = id_prefix(meta.id);
      for (auto e = cur->seek(prefix); e && e->first.substr(0, 4) == prefix; e = cur->next()) {
        MessageRecord rec;
        if (!decode_record(e->second, key_uid(e->first), rec)) return corrupt("message record");
        recs.push_back(std::move(rec));
      }
    }
    auto update = [&](MessageRecord& rec, const maildir::Entry& e) -> Status {
      if (rec.file == e.name && rec.in_new == e.in_new) return {};
      rec.file = e.name;
      rec.in_new = e.in_new;
      if (rec.flags != e.parsed.flags) {
        rec.flags = e.parsed.flags;
        rec.modseq = ++meta.st.highest_modseq;
      }
      ++result.changed;
      return put_record(txn, meta.id, rec);
    };
    std::vector<MessageRecord*> missing;
    for (MessageRecord& rec : recs) {
      auto it = seen.find(rec.base);
      if (it == seen.end()) {
        missing.push_back(&rec);
        continue;
      }
      if (Status u = update(rec, it->second); !u) return u;
      seen.erase(it);
    }
    if (!missing.empty()) {
      std::unordered_map<std::string, maildir::Entry> again;
      if (Status sc = scan(again); !sc) return sc;
      for (MessageRecord* rec : missing) {
        auto it = again.find(rec->base);
        if (it != again.end()) {
          if (Status u = update(*rec, it->second); !u) return u;
          seen.erase(rec->base);
        } else {
          if (Status d = drop_record(txn, meta, *rec); !d) return d;
          ++result.expunged;
        }
      }
    }
    // What is left in `seen` is new to the index: UIDs in name (delivery time) order.
    std::vector<maildir::Entry*> fresh;
    for (auto& [base, e] : seen) fresh.push_back(&e);
    std::sort(fresh.begin(), fresh.end(),
              [](const maildir::Entry* a, const maildir::Entry* b) { return a->parsed.base < b->parsed.base; });
    for (maildir::Entry* e : fresh) {
      const std::string fk = file_key(meta.id, e->parsed.base);
      if (txn.get(dbs_->files, fk)) continue;  // cannot happen while we hold the write lock; be safe
      MessageRecord rec;
      if (Status m = measure(e->path(*dir), e->parsed, rec); !m) {
        if (m.error().kind == ErrorKind::kNotFound) continue;  // gone again; a later sync sees the truth
        return m;
      }
      rec.uid = meta.st.uid_next++;
      rec.base = e->parsed.base;
      rec.file = e->name;
      rec.in_new = e->in_new;
      rec.flags = e->parsed.flags;
      rec.modseq = ++meta.st.highest_modseq;
      rec.save_date = static_cast<int64_t>(::time(nullptr));
      if (Status p = put_record(txn, meta.id, rec); !p) return p;
      if (Status p = txn.put(dbs_->files, fk, scalar_u32(rec.uid)); !p) return p;
      ++meta.st.messages;
      meta.st.bytes += rec.size;
      ++result.added;
    }
    return put_meta(txn, mailbox, meta);
  });
  if (!s) return s.take_error();
  return result;
}

Result<MailboxStatus> MailboxIndex::status(std::string_view mailbox_in) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  MailboxStatus out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> m = get_meta(txn, mailbox, false);
    if (!m) return m.take_error();
    out = m->st;
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<std::vector<MessageRecord>> MailboxIndex::messages(std::string_view mailbox_in) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  std::vector<MessageRecord> out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> m = get_meta(txn, mailbox, false);
    if (!m) return m.take_error();
    Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbs_->messages);
    if (!cur) return cur.take_error();
    const std::string prefix = id_prefix(m->id);
    for (auto e = cur->seek(prefix); e && e->first.substr(0, 4) == prefix; e = cur->next()) {
      MessageRecord rec;
      if (!decode_record(e->second, key_uid(e->first), rec)) return corrupt("message record");
      out.push_back(std::move(rec));
    }
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<MessageRecord> MailboxIndex::message(std::string_view mailbox_in, uint32_t uid) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  MessageRecord out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> m = get_meta(txn, mailbox, false);
    if (!m) return m.take_error();
    Result<MessageRecord> r = get_record(txn, m->id, uid);
    if (!r) return r.take_error();
    out = std::move(r).value();
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<Changes> MailboxIndex::changes_since(std::string_view mailbox_in, uint64_t since) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Changes out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> m = get_meta(txn, mailbox, false);
    if (!m) return m.take_error();
    out.status = m->st;
    const std::string prefix = id_prefix(m->id);
    Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbs_->messages);
    if (!cur) return cur.take_error();
    for (auto e = cur->seek(prefix); e && e->first.substr(0, 4) == prefix; e = cur->next()) {
      MessageRecord rec;
      if (!decode_record(e->second, key_uid(e->first), rec)) return corrupt("message record");
      if (rec.modseq > since) out.changed.push_back(std::move(rec));
    }
    Result<lmdb::Cursor> ex = lmdb::Cursor::open(txn, dbs_->expunged);
    if (!ex) return ex.take_error();
    std::string from = prefix;
    put_u64(from, since + 1);
    for (auto e = ex->seek(from); e && e->first.substr(0, 4) == prefix; e = ex->next()) {
      Reader r(e->first.substr(12));
      uint32_t uid = 0;
      r.u32(uid);
      out.expunged.push_back(uid);
    }
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<MessageRecord> MailboxIndex::change_flags(lmdb::Txn& txn, Meta& meta, const std::string& dir, MessageRecord rec,
                                                 std::string_view flags, FlagMode mode) {
  std::string want;
  const std::string given = maildir::normalize_flags(flags);
  if (mode == FlagMode::kReplace) {
    want = given;
  } else if (mode == FlagMode::kAdd) {
    want = maildir::normalize_flags(rec.flags + given);
  } else {
    for (char c : rec.flags) {
      if (given.find(c) == std::string::npos) want += c;
    }
  }
  if (want == rec.flags && !rec.in_new) return rec;
  maildir::Entry e;
  e.in_new = rec.in_new;
  e.name = rec.file;
  e.parsed = maildir::parse_name(rec.file);
  Result<std::string> name = maildir::set_flags(dir, e, want);
  if (!name && name.error().kind == ErrorKind::kNotFound) {
    // Renamed behind our back (another program changed its flags): find it by base.
    Result<std::vector<maildir::Entry>> list = maildir::list(dir);
    if (!list) return list.take_error();
    for (const maildir::Entry& x : *list) {
      if (x.parsed.base == rec.base) {
        name = maildir::set_flags(dir, x, want);
        break;
      }
    }
  }
  if (!name) return name.take_error();
  const bool flags_changed = want != rec.flags;
  rec.file = *name;
  rec.in_new = false;
  rec.flags = want;
  if (flags_changed) rec.modseq = ++meta.st.highest_modseq;
  if (Status p = put_record(txn, meta.id, rec); !p) return p.take_error();
  return rec;
}

Result<MessageRecord> MailboxIndex::set_flags(std::string_view mailbox_in, uint32_t uid, std::string_view flags,
                                              FlagMode mode, std::optional<uint64_t> unchanged_since) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Result<std::string> dir = mailbox_dir(mailbox);
  if (!dir) return dir.take_error();
  MessageRecord out;
  Status s = lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    Result<MessageRecord> rec = get_record(txn, meta->id, uid);
    if (!rec) return rec.take_error();
    if (unchanged_since && rec->modseq > *unchanged_since) {
      out = *rec;
      return make_error(ErrorKind::kExists, "message " + std::to_string(uid) + " changed since " +
                                                std::to_string(*unchanged_since));
    }
    Result<MessageRecord> changed = change_flags(txn, *meta, *dir, std::move(rec).value(), flags, mode);
    if (!changed) return changed.take_error();
    out = std::move(changed).value();
    return put_meta(txn, mailbox, *meta);
  });
  if (!s) return s.take_error();
  return out;
}

Result<MailboxIndex::FlagsResult> MailboxIndex::set_flags(std::string_view mailbox_in, const std::vector<uint32_t>& uids,
                                                          std::string_view flags, FlagMode mode,
                                                          std::optional<uint64_t> unchanged_since) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Result<std::string> dir = mailbox_dir(mailbox);
  if (!dir) return dir.take_error();
  FlagsResult out;
  Status s = lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    out = FlagsResult();
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    for (uint32_t uid : uids) {
      Result<MessageRecord> rec = get_record(txn, meta->id, uid);
      if (!rec) {
        if (rec.error().kind == ErrorKind::kNotFound) continue;
        return rec.take_error();
      }
      if (unchanged_since && rec->modseq > *unchanged_since) {
        out.refused.push_back(uid);
        continue;
      }
      Result<MessageRecord> changed = change_flags(txn, *meta, *dir, std::move(rec).value(), flags, mode);
      if (!changed) {
        if (changed.error().kind == ErrorKind::kNotFound) continue;  // expunged by another program
        return changed.take_error();
      }
      out.updated.push_back(std::move(changed).value());
    }
    return put_meta(txn, mailbox, *meta);
  });
  if (!s) return s.take_error();
  return out;
}

Result<std::vector<MessageRecord>> MailboxIndex::messages(std::string_view mailbox_in, const std::vector<uint32_t>& uids) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  std::vector<MessageRecord> out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    out.clear();
    Result<Meta> m = get_meta(txn, mailbox, false);
    if (!m) return m.take_error();
    out.reserve(uids.size());
    for (uint32_t uid : uids) {
      Result<MessageRecord> r = get_record(txn, m->id, uid);
      if (!r) {
        if (r.error().kind == ErrorKind::kNotFound) continue;
        return r.take_error();
      }
      out.push_back(std::move(r).value());
    }
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<std::vector<uint32_t>> MailboxIndex::claim_new(std::string_view mailbox_in, const std::vector<uint32_t>& uids) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Result<std::string> dir = mailbox_dir(mailbox);
  if (!dir) return dir.take_error();
  std::vector<uint32_t> claimed;
  Status s = lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    claimed.clear();
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    for (uint32_t uid : uids) {
      Result<MessageRecord> rec = get_record(txn, meta->id, uid);
      if (!rec) {
        if (rec.error().kind == ErrorKind::kNotFound) continue;
        return rec.take_error();
      }
      if (!rec->in_new) continue;  // someone else saw it first
      std::string flags = rec->flags;
      Result<MessageRecord> moved = change_flags(txn, *meta, *dir, std::move(rec).value(), flags, FlagMode::kReplace);
      if (!moved) {
        if (moved.error().kind == ErrorKind::kNotFound) continue;
        return moved.take_error();
      }
      claimed.push_back(uid);
    }
    return put_meta(txn, mailbox, *meta);
  });
  if (!s) return s.take_error();
  return claimed;
}

Status MailboxIndex::remove_mailbox(std::string_view mailbox_in) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  return lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.error().kind == ErrorKind::kNotFound ? Status() : Status(meta.take_error());
    const std::string prefix = id_prefix(meta->id);
    for (MDB_dbi dbi : {dbs_->messages, dbs_->files, dbs_->expunged}) {
      Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbi);
      if (!cur) return cur.take_error();
      for (auto e = cur->seek(prefix); e && e->first.substr(0, 4) == prefix; e = cur->seek(prefix)) {
        if (Status d = cur->del(); !d) return d;
      }
    }
    return txn.del(dbs_->mailboxes, mailbox);
  });
}

Result<std::vector<uint32_t>> MailboxIndex::expunge(std::string_view mailbox_in, const std::vector<uint32_t>& uids) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  Result<std::string> dir = mailbox_dir(mailbox);
  if (!dir) return dir.take_error();
  std::vector<uint32_t> done;
  Status s = lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    done.clear();
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    std::optional<std::vector<maildir::Entry>> listing;
    for (uint32_t uid : uids) {
      Result<MessageRecord> rec = get_record(txn, meta->id, uid);
      if (!rec) {
        if (rec.error().kind == ErrorKind::kNotFound) continue;
        return rec.take_error();
      }
      std::string path = rec->path(*dir);
      if (::unlink(path.c_str()) < 0) {
        if (errno != ENOENT) return errno_error("unlink " + path, errno);
        // Renamed by another program since we indexed it: unlink it by base, or it
        // would come back with a new UID at the next sync.
        if (!listing) {
          Result<std::vector<maildir::Entry>> l = maildir::list(*dir);
          if (!l) return l.take_error();
          listing = std::move(l).value();
        }
        for (const maildir::Entry& x : *listing) {
          if (x.parsed.base == rec->base) ::unlink(x.path(*dir).c_str());
        }
      }
      if (Status d = drop_record(txn, *meta, *rec); !d) return d;
      done.push_back(uid);
    }
    return put_meta(txn, mailbox, *meta);
  });
  if (!s) return s.take_error();
  return done;
}

Status MailboxIndex::set_cache(std::string_view mailbox_in, uint32_t uid, std::string_view envelope,
                               std::string_view bodystructure) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  return lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    Result<MessageRecord> rec = get_record(txn, meta->id, uid);
    if (!rec) return rec.take_error();
    if (!envelope.empty()) rec->envelope = std::string(envelope);
    if (!bodystructure.empty()) rec->bodystructure = std::string(bodystructure);
    return put_record(txn, meta->id, *rec);
  });
}

Status MailboxIndex::set_cache(std::string_view mailbox_in, const std::vector<CacheEntry>& entries) {
  const std::string mailbox = normalize_mailbox(mailbox_in);
  return lmdb::write(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<Meta> meta = get_meta(txn, mailbox, false);
    if (!meta) return meta.take_error();
    for (const CacheEntry& c : entries) {
      Result<MessageRecord> rec = get_record(txn, meta->id, c.uid);
      if (!rec) {
        if (rec.error().kind == ErrorKind::kNotFound) continue;
        return rec.take_error();
      }
      if (!c.envelope.empty()) rec->envelope = c.envelope;
      if (!c.bodystructure.empty()) rec->bodystructure = c.bodystructure;
      if (Status p = put_record(txn, meta->id, *rec); !p) return p;
    }
    return {};
  });
}

Result<MailboxIndex::Usage> MailboxIndex::usage() {
  Usage u;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbs_->mailboxes);
    if (!cur) return cur.take_error();
    for (auto e = cur->first(); e; e = cur->next()) {
      if (!e->first.empty() && e->first[0] == '\0') continue;
      Meta m;
      if (!decode_meta(e->second, m.id, m.st)) return corrupt("mailbox record");
      u.bytes += m.st.bytes;
      u.messages += m.st.messages;
    }
    return {};
  });
  if (!s) return s.take_error();
  return u;
}

Result<std::vector<std::string>> MailboxIndex::mailboxes() {
  std::vector<std::string> out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& txn) -> Status {
    Result<lmdb::Cursor> cur = lmdb::Cursor::open(txn, dbs_->mailboxes);
    if (!cur) return cur.take_error();
    for (auto e = cur->first(); e; e = cur->next()) {
      if (!e->first.empty() && e->first[0] == '\0') continue;
      out.emplace_back(e->first);
    }
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

}  // namespace tern::common::index
