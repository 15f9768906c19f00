// lmdb.h: environment, transactions that abort unless committed, cursors, typed
// errors, and map-full handled by growing the map in lmdb::write().
#include "common/lmdb.h"

#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

using namespace tern::common;

namespace {

// A fresh directory for one test, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/tern-lmdb-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::unique_ptr<lmdb::Env> open_env(const std::string& path, lmdb::Env::Options o = {}) {
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(path, o);
  if (!env) FAIL(env.error().message);
  return std::move(env).value();
}

}  // namespace

TEST_CASE("put, get, commit, and read back in a new transaction", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  MDB_dbi dbi = 0;
  REQUIRE(lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
    Result<MDB_dbi> db = t.open_db("users", true);
    if (!db) return db.take_error();
    dbi = *db;
    if (Status s = t.put(dbi, "alice", "1001"); !s) return s;
    return t.put(dbi, "bob", std::string("10\0" "02", 5));
  }));
  Status r = lmdb::read(*env, [&](lmdb::Txn& t) -> Status {
    Result<std::string_view> a = t.get(dbi, "alice");
    REQUIRE(a);
    CHECK(*a == "1001");
    Result<std::string_view> b = t.get(dbi, "bob");
    REQUIRE(b);
    CHECK(*b == std::string("10\0" "02", 5));  // values are bytes, NUL included
    return {};
  });
  CHECK(r);
}

TEST_CASE("a missing key is kNotFound", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  Result<lmdb::Txn> t = lmdb::Txn::begin(*env, false);
  REQUIRE(t);
  Result<MDB_dbi> db = t->open_db(nullptr, false);
  REQUIRE(db);
  Result<std::string_view> g = t->get(*db, "nobody");
  REQUIRE_FALSE(g);
  CHECK(g.error().kind == ErrorKind::kNotFound);
  CHECK(g.error().message.find("MDB_NOTFOUND") != std::string::npos);
  Status del = t->del(*db, "nobody");
  REQUIRE_FALSE(del);
  CHECK(del.error().kind == ErrorKind::kNotFound);
  // A named database that does not exist, opened without create.
  Result<MDB_dbi> none = t->open_db("absent", false);
  REQUIRE_FALSE(none);
  CHECK(none.error().kind == ErrorKind::kNotFound);
  CHECK(none.error().message.rfind("open database absent: ", 0) == 0);
}

TEST_CASE("MDB_NOOVERWRITE on an existing key is kExists", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  Status s = lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
    MDB_dbi dbi = *t.open_db(nullptr, false);
    REQUIRE(t.put(dbi, "k", "v1"));
    Status again = t.put(dbi, "k", "v2", MDB_NOOVERWRITE);
    REQUIRE_FALSE(again);
    CHECK(again.error().kind == ErrorKind::kExists);
    return {};
  });
  CHECK(s);
}

TEST_CASE("a transaction aborts on destruction unless committed", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  MDB_dbi dbi;
  {
    Result<lmdb::Txn> t = lmdb::Txn::begin(*env, false);
    REQUIRE(t);
    dbi = *t->open_db(nullptr, false);
    REQUIRE(t->put(dbi, "lost", "x"));
    REQUIRE(t->commit());
    CHECK_FALSE(t->active());
  }
  {
    Result<lmdb::Txn> t = lmdb::Txn::begin(*env, false);
    REQUIRE(t);
    REQUIRE(t->put(dbi, "never", "x"));
    // No commit: the destructor aborts.
  }
  {
    Result<lmdb::Txn> t = lmdb::Txn::begin(*env, false);
    REQUIRE(t);
    REQUIRE(t->put(dbi, "moved", "x"));
    lmdb::Txn moved = std::move(t).value();  // ownership moves; one abort only
    CHECK(moved.active());
  }
  {
    // A write transaction can begin again: the earlier ones released the lock.
    Result<lmdb::Txn> t = lmdb::Txn::begin(*env, true);
    REQUIRE(t);
    CHECK(t->get(dbi, "lost"));
    CHECK(t->get(dbi, "never").error().kind == ErrorKind::kNotFound);
    CHECK(t->get(dbi, "moved").error().kind == ErrorKind::kNotFound);
  }
}

TEST_CASE("lmdb::write does not commit when the body fails", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  Status s = lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
    REQUIRE(t.put(*t.open_db(nullptr, false), "k", "v"));
    return make_error(ErrorKind::kPerm, "changed my mind");
  });
  REQUIRE_FALSE(s);
  CHECK(s.error().message == "changed my mind");
  CHECK(lmdb::read(*env, [&](lmdb::Txn& t) -> Status {
    CHECK(t.get(*t.open_db(nullptr, false), "k").error().kind == ErrorKind::kNotFound);
    return {};
  }));
}

TEST_CASE("cursors walk, seek and delete", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  REQUIRE(lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
    MDB_dbi dbi = *t.open_db(nullptr, false);
    for (const char* k : {"b", "d", "a", "c"}) REQUIRE(t.put(dbi, k, std::string("v") + k));
    Result<lmdb::Cursor> c = lmdb::Cursor::open(t, dbi);
    REQUIRE(c);
    std::vector<std::string> keys;
    for (auto e = c->first(); e; e = c->next()) keys.emplace_back(e->first);
    CHECK(keys == std::vector<std::string>{"a", "b", "c", "d"});
    keys.clear();
    for (auto e = c->last(); e; e = c->prev()) keys.emplace_back(e->first);
    CHECK(keys == std::vector<std::string>{"d", "c", "b", "a"});
    auto s = c->seek("bb");
    REQUIRE(s);
    CHECK(s->first == "c");
    CHECK(s->second == "vc");
    CHECK(c->seek("b")->first == "b");
    CHECK_FALSE(c->seek("e"));
    REQUIRE(c->seek("") );  // the empty key sorts first
    CHECK(c->seek("")->first == "a");
    REQUIRE(c->seek("c"));
    REQUIRE(c->del());
    keys.clear();
    for (auto e = c->first(); e; e = c->next()) keys.emplace_back(e->first);
    CHECK(keys == std::vector<std::string>{"a", "b", "d"});
    return {};
  }));
}

TEST_CASE("cursor on an empty database", "[lmdb]") {
  TempDir d;
  auto env = open_env(d.path + "/db");
  CHECK(lmdb::read(*env, [&](lmdb::Txn& t) -> Status {
    Result<lmdb::Cursor> c = lmdb::Cursor::open(t, *t.open_db(nullptr, false));
    REQUIRE(c);
    CHECK_FALSE(c->first());
    CHECK_FALSE(c->last());
    CHECK_FALSE(c->seek("x"));
    return {};
  }));
}

TEST_CASE("map full: a raw transaction sees kMapFull; lmdb::write grows the map and retries", "[lmdb]") {
  TempDir d;
  lmdb::Env::Options o;
  o.map_size = 64 << 10;        // tiny: a few dozen pages
  o.max_map_size = 64 << 20;
  auto env = open_env(d.path + "/db", o);
  const size_t initial = env->map_size();
  const std::string value(1000, 'v');

  SECTION("without write(): the error is typed") {
    Result<lmdb::Txn> t = lmdb::Txn::begin(*env, false);
    REQUIRE(t);
    MDB_dbi dbi = *t->open_db(nullptr, false);
    Status last;
    for (int i = 0; i < 10000 && last; ++i) last = t->put(dbi, "key" + std::to_string(i), value);
    REQUIRE_FALSE(last);
    CHECK(last.error().kind == ErrorKind::kMapFull);
    CHECK(last.error().message.find("MDB_MAP_FULL") != std::string::npos);
  }
  SECTION("write() grows and the whole body runs again") {
    int runs = 0;
    Status s = lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
      ++runs;
      MDB_dbi dbi = *t.open_db(nullptr, false);
      for (int i = 0; i < 2000; ++i) {
        if (Status p = t.put(dbi, "key" + std::to_string(i), value); !p) return p;
      }
      return {};
    });
    REQUIRE(s);
    CHECK(runs > 1);
    CHECK(env->map_size() > initial);
    CHECK(lmdb::read(*env, [&](lmdb::Txn& t) -> Status {
      Result<std::string_view> v = t.get(*t.open_db(nullptr, false), "key1999");
      REQUIRE(v);
      CHECK(*v == value);
      return {};
    }));
    // A reopened environment starts from the grown size.
    env.reset();
    auto again = open_env(d.path + "/db", o);
    CHECK(again->map_size() > initial);
  }
  SECTION("growth stops at max_map_size with a clear error") {
    lmdb::Env::Options small = o;
    small.max_map_size = 256 << 10;
    auto capped = open_env(d.path + "/capped", small);
    Status s = lmdb::write(*capped, [&](lmdb::Txn& t) -> Status {
      MDB_dbi dbi = *t.open_db(nullptr, false);
      for (int i = 0; i < 2000; ++i) {
        if (Status p = t.put(dbi, "key" + std::to_string(i), value); !p) return p;
      }
      return {};
    });
    REQUIRE_FALSE(s);
    CHECK(s.error().kind == ErrorKind::kMapFull);
    CHECK(s.error().message == "LMDB " + d.path + "/capped reached its largest map size");
  }
}

TEST_CASE("opening in a missing directory fails with the path", "[lmdb]") {
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open("/nonexistent-tern-dir/db");
  REQUIRE_FALSE(env);
  CHECK(env.error().message.rfind("open LMDB /nonexistent-tern-dir/db: ", 0) == 0);
  CHECK(env.error().kind == ErrorKind::kNotFound);
}
