// The durable queue: serialisation, inline and large bodies, group commit, removal,
// crash leftovers, growth of the LMDB map.
#include "mta/queue_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "common/loop.h"
#include "common/record.h"

using namespace tern;
using mta::Envelope;
using mta::QueueStore;
using mta::Recipient;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/tern-queue-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

int count_files(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

Envelope make_env(const std::string& sender, std::initializer_list<const char*> rcpts) {
  Envelope e;
  e.sender = sender;
  e.arrival_us = 1700000000000000;
  e.origin = "smtpd";
  e.client = "client.example[192.0.2.7]";
  for (const char* r : rcpts) {
    Recipient x;
    x.address = r;
    x.orig_address = r;
    e.rcpts.push_back(x);
  }
  return e;
}

// Runs the loop until `cond` holds (every test operation completes within a few turns).
template <class F>
void run_until(common::ev::Loop& loop, F cond) {
  for (int i = 0; i < 100000 && !cond(); ++i) uv_run(loop.get(), UV_RUN_ONCE);
  REQUIRE(cond());
}

}  // namespace

TEST_CASE("envelope round-trips through its record encoding") {
  Envelope e = make_env("alice@example.org", {"bob@example.net", "carol@example.net"});
  e.queue_id = "4Xq9Kp2TyrzK1bc";
  e.size = 12345;
  e.body_8bit = true;
  e.smtputf8 = true;
  e.envid = "abc123";
  e.ret = "HDRS";
  e.sasl_user = "alice";
  e.rcpts[1].notify = mta::kNotifySuccess | mta::kNotifyFailure;
  e.rcpts[1].state = Recipient::State::kBounced;
  e.rcpts[1].attempts = 3;
  e.rcpts[1].next_attempt = 1700000999;
  e.rcpts[1].last_reply = "550 5.1.1 <carol@example.net>: Recipient address rejected";
  e.rcpts[1].dsn_status = "5.1.1";
  e.rcpts[1].orcpt = "rfc822;carol@example.net";
  e.rcpts[1].delay_warned = true;
  common::Result<Envelope> d = mta::decode_envelope(mta::encode_envelope(e));
  REQUIRE(d.ok());
  CHECK(d->queue_id == e.queue_id);
  CHECK(d->sender == e.sender);
  CHECK(d->size == 12345);
  CHECK(d->body_8bit);
  CHECK(d->smtputf8);
  CHECK(d->envid == "abc123");
  CHECK(d->ret == "HDRS");
  CHECK(d->client == e.client);
  CHECK(d->sasl_user == "alice");
  REQUIRE(d->rcpts.size() == 2);
  CHECK(d->rcpts[0].address == "bob@example.net");
  CHECK(d->rcpts[0].state == Recipient::State::kPending);
  CHECK(d->rcpts[1].notify == (mta::kNotifySuccess | mta::kNotifyFailure));
  CHECK(d->rcpts[1].state == Recipient::State::kBounced);
  CHECK(d->rcpts[1].attempts == 3);
  CHECK(d->rcpts[1].next_attempt == 1700000999);
  CHECK(d->rcpts[1].last_reply == e.rcpts[1].last_reply);
  CHECK(d->rcpts[1].dsn_status == "5.1.1");
  CHECK(d->rcpts[1].orcpt == "rfc822;carol@example.net");
  CHECK(d->rcpts[1].delay_warned);
}

TEST_CASE("envelope decoding skips unknown fields and rejects truncation") {
  Envelope e = make_env("", {"x@example.net"});
  e.queue_id = "BCDFGH";
  std::string rec = mta::encode_envelope(e);
  common::RecordWriter extra;
  extra.bytes(99, "from a newer version");
  common::Result<Envelope> d = mta::decode_envelope(rec + extra.data());
  REQUIRE(d.ok());
  CHECK(d->rcpts.size() == 1);
  CHECK(d->sender.empty());
  for (size_t cut = 1; cut < rec.size(); ++cut) {
    common::Result<Envelope> t = mta::decode_envelope(std::string_view(rec).substr(0, cut));
    // Either an error, or (cut exactly between fields) a record missing later fields.
    if (t.ok()) CHECK(t->rcpts.size() <= 1);
  }
  CHECK_FALSE(mta::decode_envelope(std::string("\x01\x7f", 2)).ok());
}

TEST_CASE("enqueue stores inline and large bodies durably, readable after reopen") {
  std::string dir = temp_dir();
  std::string small(700, 's'), large(5000, 'L');
  std::string id_small, id_large;
  {
    common::ev::Loop loop;
    QueueStore::Options o;
    o.inline_limit = 1024;
    auto q = QueueStore::open(loop, dir, o);
    REQUIRE(q.ok());
    int done = 0;
    auto b1 = (*q)->new_body();
    REQUIRE(b1->append(small).ok());
    id_small = b1->queue_id();
    auto b2 = (*q)->new_body();
    for (int i = 0; i < 5; ++i) REQUIRE(b2->append(large.substr(i * 1000, 1000)).ok());
    id_large = b2->queue_id();
    (*q)->enqueue(make_env("a@example.org", {"b@example.net"}), std::move(b1), [&](common::Status s) {
      CHECK(s.ok());
      ++done;
    });
    (*q)->enqueue(make_env("a@example.org", {"c@example.net"}), std::move(b2), [&](common::Status s) {
      CHECK(s.ok());
      ++done;
    });
    run_until(loop, [&] { return done == 2; });
    CHECK(count_files(dir + "/large") == 1);
  }
  common::ev::Loop loop;
  auto q = QueueStore::open(loop, dir, QueueStore::Options{});
  REQUIRE(q.ok());
  auto e1 = (*q)->envelope(id_small);
  REQUIRE(e1.ok());
  CHECK_FALSE(e1->large_body);
  CHECK(e1->size == 700);
  CHECK((*q)->body(id_small).value() == small);
  auto e2 = (*q)->envelope(id_large);
  REQUIRE(e2.ok());
  CHECK(e2->large_body);
  CHECK(e2->size == 5000);
  CHECK((*q)->body(id_large).value() == large);
  int n = 0;
  REQUIRE((*q)->for_each([&](const Envelope& e) {
    ++n;
    CHECK((e.queue_id == id_small || e.queue_id == id_large));
  }).ok());
  CHECK(n == 2);
  CHECK((*q)->envelope("NoSuchId").error().kind == common::ErrorKind::kNotFound);
  // Another process's read-only view (mailq, ternctl queue show) sees the same.
  auto ro = QueueStore::open_read_only(dir);
  REQUIRE(ro.ok());
  n = 0;
  REQUIRE((*ro)->for_each([&](const Envelope&) { ++n; }).ok());
  CHECK(n == 2);
  CHECK((*ro)->body(id_small).value() == small);
  CHECK((*ro)->body(id_large).value() == large);
}

TEST_CASE("operations queued while a commit runs share the next commit") {
  std::string dir = temp_dir();
  common::ev::Loop loop;
  auto q = QueueStore::open(loop, dir, QueueStore::Options{});
  REQUIRE(q.ok());
  const int kMessages = 64;
  int done = 0;
  for (int i = 0; i < kMessages; ++i) {
    auto b = (*q)->new_body();
    REQUIRE(b->append("Subject: " + std::to_string(i) + "\r\n\r\nbody\r\n").ok());
    (*q)->enqueue(make_env("a@example.org", {"b@example.net"}), std::move(b), [&](common::Status s) {
      CHECK(s.ok());
      ++done;
    });
  }
  run_until(loop, [&] { return done == kMessages; });
  // The first operation starts a commit at once; the other 63 wait for it and then
  // share one: two commits, not 64.
  CHECK((*q)->commits() <= 2);
  int n = 0;
  REQUIRE((*q)->for_each([&](const Envelope&) { ++n; }).ok());
  CHECK(n == kMessages);
}

TEST_CASE("a message goes away when no recipient is pending, large body included") {
  std::string dir = temp_dir();
  common::ev::Loop loop;
  QueueStore::Options o;
  o.inline_limit = 10;
  auto q = QueueStore::open(loop, dir, o);
  REQUIRE(q.ok());
  auto b = (*q)->new_body();
  REQUIRE(b->append("a body longer than ten bytes").ok());
  std::string id = b->queue_id();
  bool ok = false;
  (*q)->enqueue(make_env("a@example.org", {"b@example.net", "c@example.net"}), std::move(b),
                [&](common::Status s) { ok = s.ok(); });
  run_until(loop, [&] { return ok; });
  auto env = (*q)->envelope(id);
  REQUIRE(env.ok());
  // One delivered, one deferred: the message stays.
  std::vector<Recipient> r = env->rcpts;
  r[0].state = Recipient::State::kDelivered;
  r[1].attempts = 1;
  r[1].next_attempt = 1700001000;
  r[1].last_reply = "451 4.3.0 try later";
  bool updated = false;
  (*q)->update(id, r, [&](common::Status s) { updated = s.ok(); });
  run_until(loop, [&] { return updated; });
  auto after = (*q)->envelope(id);
  REQUIRE(after.ok());
  CHECK(after->rcpts[0].state == Recipient::State::kDelivered);
  CHECK(after->rcpts[1].last_reply == "451 4.3.0 try later");
  CHECK(count_files(dir + "/large") == 1);
  // The second bounces: nothing pending, the message and its body file are removed.
  r[1].state = Recipient::State::kBounced;
  updated = false;
  (*q)->update(id, r, [&](common::Status s) { updated = s.ok(); });
  run_until(loop, [&] { return updated; });
  CHECK((*q)->envelope(id).error().kind == common::ErrorKind::kNotFound);
  CHECK(count_files(dir + "/large") == 0);
  // Updating a message that is gone is an error for that caller only.
  common::Status st;
  bool got = false;
  (*q)->update(id, r, [&](common::Status s) {
    st = s;
    got = true;
  });
  run_until(loop, [&] { return got; });
  CHECK(st.error().kind == common::ErrorKind::kNotFound);
}

TEST_CASE("hold and remove") {
  std::string dir = temp_dir();
  common::ev::Loop loop;
  auto q = QueueStore::open(loop, dir, QueueStore::Options{});
  REQUIRE(q.ok());
  auto b = (*q)->new_body();
  REQUIRE(b->append("x").ok());
  std::string id = b->queue_id();
  int done = 0;
  (*q)->enqueue(make_env("", {"b@example.net"}), std::move(b), [&](common::Status) { ++done; });
  (*q)->set_hold(id, true, [&](common::Status s) {
    CHECK(s.ok());
    ++done;
  });
  run_until(loop, [&] { return done == 2; });
  CHECK((*q)->envelope(id)->hold);
  (*q)->remove(id, [&](common::Status s) {
    CHECK(s.ok());
    ++done;
  });
  run_until(loop, [&] { return done == 3; });
  CHECK_FALSE((*q)->envelope(id).ok());
}

TEST_CASE("bodies never committed leave nothing behind") {
  std::string dir = temp_dir();
  common::ev::Loop loop;
  QueueStore::Options o;
  o.inline_limit = 4;
  auto q = QueueStore::open(loop, dir, o);
  REQUIRE(q.ok());
  {
    auto b = (*q)->new_body();
    REQUIRE(b->append("spilled to a file").ok());
    CHECK(count_files(dir + "/large") == 1);
  }  // the client went away before the end of DATA
  CHECK(count_files(dir + "/large") == 0);
  // A file left by a crash between write and commit is removed at the next open.
  FILE* f = std::fopen((dir + "/large/BCDFGHJKLMN").c_str(), "w");
  std::fputs("orphan", f);
  std::fclose(f);
  q->reset();
  auto q2 = QueueStore::open(loop, dir, o);
  REQUIRE(q2.ok());
  CHECK(count_files(dir + "/large") == 0);
}

TEST_CASE("the LMDB map grows when it fills") {
  std::string dir = temp_dir();
  common::ev::Loop loop;
  QueueStore::Options o;
  o.initial_map_size = 256 << 10;  // far too small for what follows
  auto q = QueueStore::open(loop, dir, o);
  REQUIRE(q.ok());
  std::string body(20000, 'b');
  int done = 0, failed = 0;
  for (int i = 0; i < 100; ++i) {
    auto b = (*q)->new_body();
    REQUIRE(b->append(body).ok());
    (*q)->enqueue(make_env("a@example.org", {"b@example.net"}), std::move(b), [&](common::Status s) {
      if (s.ok()) ++done; else ++failed;
    });
  }
  run_until(loop, [&] { return done + failed == 100; });
  CHECK(failed == 0);
  int n = 0;
  REQUIRE((*q)->for_each([&](const Envelope&) { ++n; }).ok());
  CHECK(n == 100);
}
