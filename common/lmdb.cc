#include "common/lmdb.h"

#include <sys/stat.h>

#include <cerrno>

#include <utility>

namespace tern::common::lmdb {
namespace {

MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view view(const MDB_val& v) { return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size); }

}  // namespace

Error mdb_error(const std::string& what, int rc) {
  // LMDB returns its own codes (negative) or an errno from the system call that failed.
  if (rc > 0) return errno_error(what, rc);
  ErrorKind kind = ErrorKind::kTemp;
  switch (rc) {
    case MDB_NOTFOUND: kind = ErrorKind::kNotFound; break;
    case MDB_MAP_FULL: kind = ErrorKind::kMapFull; break;
    case MDB_KEYEXIST: kind = ErrorKind::kExists; break;
    default: break;
  }
  return Error{kind, what + ": " + mdb_strerror(rc)};
}

Result<std::unique_ptr<Env>> Env::open(const std::string& path, Options options) {
  std::unique_ptr<Env> e(new Env);
  e->path_ = path;
  e->opt_ = options;
  int rc = mdb_env_create(&e->env_);
  if (rc) return mdb_error("mdb_env_create", rc);
  mdb_env_set_maxdbs(e->env_, options.max_dbs);
  mdb_env_set_maxreaders(e->env_, options.max_readers);
  // Start from the file's current size if it is larger (a map grown earlier).
  size_t size = options.map_size;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) > size) size = static_cast<size_t>(st.st_size);
  mdb_env_set_mapsize(e->env_, size);
  rc = mdb_env_open(e->env_, path.c_str(), options.flags, options.mode);
  if (rc) return mdb_error("open LMDB " + path, rc);
  MDB_envinfo info;
  mdb_env_info(e->env_, &info);
  e->map_size_ = info.me_mapsize;
  return e;
}

Env::~Env() {
  if (env_) mdb_env_close(env_);
}

Status Env::grow() {
  if (map_size_ >= opt_.max_map_size) {
    return make_error(ErrorKind::kMapFull, "LMDB " + path_ + " reached its largest map size");
  }
  size_t next = std::min(map_size_ * 2, opt_.max_map_size);
  int rc = mdb_env_set_mapsize(env_, next);
  if (rc) return mdb_error("grow LMDB " + path_, rc);
  map_size_ = next;
  return {};
}

Status Env::sync(bool force) {
  int rc = mdb_env_sync(env_, force ? 1 : 0);
  if (rc) return mdb_error("sync LMDB " + path_, rc);
  return {};
}

Result<Txn> Txn::begin(Env& env, bool read_only) {
  MDB_txn* t = nullptr;
  int rc = mdb_txn_begin(env.get(), nullptr, read_only ? MDB_RDONLY : 0, &t);
  if (rc == MDB_MAP_RESIZED) {
    // Another process grew the map: adopt its size and try again.
    mdb_env_set_mapsize(env.get(), 0);
    rc = mdb_txn_begin(env.get(), nullptr, read_only ? MDB_RDONLY : 0, &t);
  }
  if (rc) return mdb_error("begin transaction on " + env.path(), rc);
  return Txn(t);
}

Txn::Txn(Txn&& o) noexcept : txn_(std::exchange(o.txn_, nullptr)) {}
Txn& Txn::operator=(Txn&& o) noexcept {
  if (this != &o) {
    abort();
    txn_ = std::exchange(o.txn_, nullptr);
  }
  return *this;
}
Txn::~Txn() { abort(); }

void Txn::abort() {
  if (txn_) mdb_txn_abort(txn_);
  txn_ = nullptr;
}

Status Txn::commit() {
  int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
  if (rc) return mdb_error("commit", rc);
  return {};
}

Result<MDB_dbi> Txn::open_db(const char* name, bool create, unsigned flags) {
  MDB_dbi dbi;
  int rc = mdb_dbi_open(txn_, name, flags | (create ? MDB_CREATE : 0), &dbi);
  if (rc) return mdb_error(std::string("open database ") + (name ? name : "(main)"), rc);
  return dbi;
}

Result<std::string_view> Txn::get(MDB_dbi dbi, std::string_view key) {
  MDB_val k = val(key), v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc) return mdb_error("get", rc);
  return view(v);
}

Status Txn::put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = val(key), v = val(value);
  int rc = mdb_put(txn_, dbi, &k, &v, flags);
  if (rc) return mdb_error("put", rc);
  return {};
}

Status Txn::del(MDB_dbi dbi, std::string_view key) {
  MDB_val k = val(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc) return mdb_error("delete", rc);
  return {};
}

Result<Cursor> Cursor::open(Txn& txn, MDB_dbi dbi) {
  MDB_cursor* c = nullptr;
  int rc = mdb_cursor_open(txn.get(), dbi, &c);
  if (rc) return mdb_error("open cursor", rc);
  return Cursor(c);
}

Cursor::Cursor(Cursor&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
Cursor::~Cursor() {
  if (c_) mdb_cursor_close(c_);
}

Cursor::Entry Cursor::op(MDB_cursor_op o, std::string_view key) {
  MDB_val k = val(key), v{};
  if (mdb_cursor_get(c_, &k, &v, o) != 0) return std::nullopt;
  return std::make_pair(view(k), view(v));
}

Cursor::Entry Cursor::first() { return op(MDB_FIRST); }
Cursor::Entry Cursor::next() { return op(MDB_NEXT); }
Cursor::Entry Cursor::last() { return op(MDB_LAST); }
Cursor::Entry Cursor::prev() { return op(MDB_PREV); }
Cursor::Entry Cursor::seek(std::string_view key) {
  // LMDB refuses an empty key (MDB_BAD_VALSIZE); every key is >= "".
  if (key.empty()) return first();
  return op(MDB_SET_RANGE, key);
}

Status Cursor::del() {
  int rc = mdb_cursor_del(c_, 0);
  if (rc) return mdb_error("cursor delete", rc);
  return {};
}

Status write(Env& env, const std::function<Status(Txn&)>& body) {
  for (int attempt = 0;; ++attempt) {
    Result<Txn> t = Txn::begin(env, false);
    if (!t) return t.take_error();
    Status s = body(*t);
    if (s) s = t->commit();
    if (s || s.error().kind != ErrorKind::kMapFull || attempt >= 8) return s;
    t->abort();
    if (Status g = env.grow(); !g) return g;
  }
}

Status read(Env& env, const std::function<Status(Txn&)>& body) {
  Result<Txn> t = Txn::begin(env, true);
  if (!t) return t.take_error();
  return body(*t);
}

}  // namespace tern::common::lmdb
