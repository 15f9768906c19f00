// LMDB with RAII: an environment, transactions that abort unless committed, cursors,
// and typed errors (MDB_NOTFOUND is kNotFound, MDB_MAP_FULL is kMapFull).
//
// Map-full handling: write() runs a write transaction and, when it fails with
// kMapFull, grows the map (doubling, up to max_map_size) and runs it again; callers
// write their transaction body as a function that can run twice.
//
// Read transactions are meant to be short: LMDB cannot reuse pages that an open
// reader still sees.
#pragma once

#include <lmdb.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::common::lmdb {

Error mdb_error(const std::string& what, int rc);

class Env {
 public:
  struct Options {
    size_t map_size = 16u << 20;          // initial map size
    size_t max_map_size = 64ull << 30;    // growth stops here
    unsigned max_dbs = 16;
    unsigned max_readers = 126;
    unsigned flags = MDB_NOSUBDIR;        // path names a file (plus path-lock)
    unsigned mode = 0600;
  };
  static Result<std::unique_ptr<Env>> open(const std::string& path, Options options);
  static Result<std::unique_ptr<Env>> open(const std::string& path) { return open(path, Options{}); }
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  MDB_env* get() const { return env_; }
  const std::string& path() const { return path_; }
  // Doubles the map size (up to max_map_size). No transaction may be open.
  Status grow();
  Status sync(bool force = true);
  size_t map_size() const { return map_size_; }

 private:
  Env() = default;
  MDB_env* env_ = nullptr;
  std::string path_;
  Options opt_;
  size_t map_size_ = 0;
};

class Txn {
 public:
  static Result<Txn> begin(Env& env, bool read_only);
  Txn(Txn&& o) noexcept;
  Txn& operator=(Txn&& o) noexcept;
  Txn(const Txn&) = delete;
  ~Txn();

  // Opens (or with create, creates) a named database. Names are per environment.
  Result<MDB_dbi> open_db(const char* name, bool create, unsigned flags = 0);

  // The value, or kNotFound. The view is valid until the transaction ends.
  Result<std::string_view> get(MDB_dbi dbi, std::string_view key);
  Status put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags = 0);
  // Deletes a key; kNotFound when absent.
  Status del(MDB_dbi dbi, std::string_view key);
  Status commit();
  void abort();
  MDB_txn* get() const { return txn_; }
  bool active() const { return txn_ != nullptr; }

 private:
  explicit Txn(MDB_txn* t) : txn_(t) {}
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  static Result<Cursor> open(Txn& txn, MDB_dbi dbi);
  Cursor(Cursor&& o) noexcept;
  Cursor(const Cursor&) = delete;
  ~Cursor();

  // Each positions the cursor and returns the entry there, or nullopt at the end.
  using Entry = std::optional<std::pair<std::string_view, std::string_view>>;
  Entry first();
  Entry next();
  Entry last();
  Entry prev();
  Entry seek(std::string_view key);  // first key >= key
  Status del();                      // the current entry
  MDB_cursor* get() const { return c_; }

 private:
  explicit Cursor(MDB_cursor* c) : c_(c) {}
  Entry op(MDB_cursor_op o, std::string_view key = {});
  MDB_cursor* c_ = nullptr;
};

// Runs body in a write transaction and commits; on kMapFull grows the map and runs
// it again (a few times at most).
Status write(Env& env, const std::function<Status(Txn&)>& body);
// Runs body in a read-only transaction.
Status read(Env& env, const std::function<Status(Txn&)>& body);

}  // namespace tern::common::lmdb
