// The per-user mailbox index: UIDs at delivery, sync with files other programs add,
// remove and rename, flag changes, expunges, MODSEQ, persistence, and two processes
// writing at once.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/mailbox_index.h"
#include "common/maildir.h"

using namespace tern::common;
using namespace tern::common::index;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/tern-index-test-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

// Delivers like tern-mda does: file first, then the index.
uint32_t deliver(MailboxIndex& idx, const std::string& dir, const std::string& text, std::string mailbox = "INBOX") {
  Result<maildir::Delivery> d = maildir::Delivery::begin(dir);
  REQUIRE(d.ok());
  REQUIRE(d->write(text).ok());
  Result<std::string> name = d->commit(maildir::Fsync::kNo, nullptr);
  REQUIRE(name.ok());
  Result<uint32_t> uid = idx.add_delivered(mailbox, *name, true, d->size(), d->vsize(), 1700000000);
  REQUIRE(uid.ok());
  return *uid;
}

// Every file in the maildir is in the index exactly once, and the reverse.
void check_agrees(MailboxIndex& idx, const std::string& dir, std::string mailbox = "INBOX") {
  auto files = maildir::list(dir);
  REQUIRE(files.ok());
  auto recs = idx.messages(mailbox);
  REQUIRE(recs.ok());
  std::set<std::string> fb, rb;
  std::set<uint32_t> uids;
  for (auto& f : *files) CHECK(fb.insert(f.parsed.base).second);
  for (auto& r : *recs) {
    CHECK(rb.insert(r.base).second);
    CHECK(uids.insert(r.uid).second);
    struct stat st;
    CHECK(::stat(r.path(dir).c_str(), &st) == 0);
  }
  CHECK(fb == rb);
  auto st = idx.status(mailbox);
  REQUIRE(st.ok());
  CHECK(st->messages == recs->size());
  if (!recs->empty()) CHECK(st->uid_next > recs->back().uid);
}

}  // namespace

TEST_CASE("UIDs are assigned at delivery, in order", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/Maildir";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  REQUIRE(idx.ok());
  CHECK(deliver(**idx, root, "a\n") == 1);
  CHECK(deliver(**idx, root, "b\nc\n") == 2);
  auto st = (*idx)->status("INBOX");
  REQUIRE(st.ok());
  CHECK(st->uid_next == 3);
  CHECK(st->messages == 2);
  CHECK(st->bytes == 6);
  CHECK(st->uid_validity > 0);
  CHECK(st->highest_modseq >= 3);
  auto recs = (*idx)->messages("inbox");
  REQUIRE(recs.ok());
  REQUIRE(recs->size() == 2);
  CHECK((*recs)[1].vsize == 6);
  CHECK((*recs)[1].in_new);
  // A sync right after finds nothing new: never listed twice.
  auto s = (*idx)->sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->added == 0);
  CHECK(s->expunged == 0);
  check_agrees(**idx, root);
  // The same instance is shared within the process.
  auto again = MailboxIndex::open(root);
  CHECK(again->get() == idx->get());
}

TEST_CASE("sync picks up files added, renamed and removed by other programs", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/Maildir";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  REQUIRE(idx.ok());
  MailboxIndex& ix = **idx;
  uint32_t u1 = deliver(ix, root, "one\n");
  // Postfix local(8) and a Dovecot-style file appear behind our back.
  std::ofstream(root + "/new/1700000100.V801I1M1.mail.example") << "pf\n";
  std::ofstream(root + "/cur/1700000200.M1P1.host,S=3,W=4:2,S") << "dv\n";
  auto s = ix.sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->added == 2);
  check_agrees(ix, root);
  auto recs = ix.messages("INBOX");
  REQUIRE(recs->size() == 3);
  CHECK((*recs)[1].base == "1700000100.V801I1M1.mail.example");  // name order
  CHECK((*recs)[1].vsize == 4);                                  // counted: no W= in a Postfix name
  CHECK((*recs)[2].flags == "S");
  const uint32_t pf_uid = (*recs)[1].uid;

  // mutt marks the first message read: new/X -> cur/X:2,S.
  auto st0 = ix.status("INBOX");
  auto r1 = ix.message("INBOX", u1);
  REQUIRE(r1.ok());
  REQUIRE(::rename(r1->path(root).c_str(), (root + "/cur/" + r1->base + ":2,RS").c_str()) == 0);
  s = ix.sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->changed == 1);
  CHECK(s->added == 0);
  auto r1b = ix.message("INBOX", u1);
  CHECK(r1b->flags == "RS");
  CHECK(!r1b->in_new);
  CHECK(r1b->modseq > st0->highest_modseq);

  // Someone deletes the Postfix file.
  REQUIRE(::unlink((root + "/new/1700000100.V801I1M1.mail.example").c_str()) == 0);
  s = ix.sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->expunged == 1);
  check_agrees(ix, root);
  auto ch = ix.changes_since("INBOX", st0->highest_modseq);
  REQUIRE(ch.ok());
  CHECK(ch->expunged == std::vector<uint32_t>{pf_uid});

  // The same file put back later is a new message with a new UID: UIDs never reused.
  std::ofstream(root + "/new/1700000100.V801I1M1.mail.example") << "pf\n";
  s = ix.sync("INBOX");
  REQUIRE(s->added == 1);
  auto recs2 = ix.messages("INBOX");
  CHECK(recs2->back().uid > pf_uid);
  CHECK(recs2->back().uid == ix.status("INBOX")->uid_next - 1);
  check_agrees(ix, root);
}

TEST_CASE("a file in both new/ and cur/ is one message", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  std::ofstream(root + "/new/1700000000.A.h") << "x\n";
  std::ofstream(root + "/cur/1700000000.A.h:2,S") << "x\n";
  auto s = (*idx)->sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->added == 1);
  auto recs = (*idx)->messages("INBOX");
  REQUIRE(recs->size() == 1);
  CHECK(recs->front().flags == "S");
}

TEST_CASE("add_delivered after a sync found the file returns the same UID", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  Result<maildir::Delivery> d = maildir::Delivery::begin(root);
  REQUIRE(d->write("x\n").ok());
  Result<std::string> name = d->commit(maildir::Fsync::kNo, nullptr);
  REQUIRE((*idx)->sync("INBOX")->added == 1);  // a reader got there between rename and index
  Result<uint32_t> uid = (*idx)->add_delivered("INBOX", *name, true, 2, 3, 0);
  REQUIRE(uid.ok());
  CHECK(*uid == 1);
  CHECK((*idx)->messages("INBOX")->size() == 1);
}

TEST_CASE("set_flags renames the file and bumps MODSEQ", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  MailboxIndex& ix = **idx;
  uint32_t uid = deliver(ix, root, "x\n");
  auto before = ix.message("INBOX", uid);
  auto r = ix.set_flags("INBOX", uid, "S", FlagMode::kAdd);
  REQUIRE(r.ok());
  CHECK(r->flags == "S");
  CHECK(r->file == r->base + ":2,S");
  CHECK(r->modseq > before->modseq);
  r = ix.set_flags("INBOX", uid, "FR", FlagMode::kAdd);
  CHECK(r->flags == "FRS");
  r = ix.set_flags("INBOX", uid, "R", FlagMode::kRemove);
  CHECK(r->flags == "FS");
  r = ix.set_flags("INBOX", uid, "T", FlagMode::kReplace);
  CHECK(r->flags == "T");
  check_agrees(ix, root);
  // CONDSTORE UNCHANGEDSINCE
  auto u = ix.set_flags("INBOX", uid, "S", FlagMode::kAdd, uint64_t{1});
  REQUIRE(!u.ok());
  CHECK(u.error().kind == ErrorKind::kExists);
  // Another program renamed the file: set_flags finds it by base.
  auto cur = ix.message("INBOX", uid);
  REQUIRE(::rename(cur->path(root).c_str(), (root + "/cur/" + cur->base + ":2,D").c_str()) == 0);
  r = ix.set_flags("INBOX", uid, "S", FlagMode::kReplace);
  REQUIRE(r.ok());
  CHECK(r->flags == "S");
  check_agrees(ix, root);
  CHECK(ix.set_flags("INBOX", 999, "S", FlagMode::kAdd).error().kind == ErrorKind::kNotFound);
}

TEST_CASE("expunge unlinks and logs", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  MailboxIndex& ix = **idx;
  uint32_t a = deliver(ix, root, "a\n"), b = deliver(ix, root, "b\n"), c = deliver(ix, root, "c\n");
  auto ms = ix.status("INBOX")->highest_modseq;
  // b was renamed by another program since indexing: still unlinked by base.
  auto rb = ix.message("INBOX", b);
  REQUIRE(::rename(rb->path(root).c_str(), (root + "/cur/" + rb->base + ":2,S").c_str()) == 0);
  auto e = ix.expunge("INBOX", {a, b, 77});
  REQUIRE(e.ok());
  CHECK(*e == std::vector<uint32_t>{a, b});
  check_agrees(ix, root);
  CHECK(ix.messages("INBOX")->size() == 1);
  CHECK(ix.messages("INBOX")->front().uid == c);
  auto ch = ix.changes_since("INBOX", ms);
  CHECK(ch->expunged == std::vector<uint32_t>{a, b});
  CHECK(ix.sync("INBOX")->added == 0);  // b does not come back
  CHECK(ix.usage()->messages == 1);
}

TEST_CASE("folders are separate mailboxes; usage sums them", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  MailboxIndex& ix = **idx;
  deliver(ix, root, "inbox\n");
  CHECK(deliver(ix, root + "/.Sent", "sent\n", "Sent") == 1);
  CHECK(ix.status("Sent")->messages == 1);
  auto u = ix.usage();
  CHECK(u->messages == 2);
  CHECK(u->bytes == 11);
  auto names = ix.mailboxes();
  CHECK(std::set<std::string>(names->begin(), names->end()) == std::set<std::string>{"INBOX", "Sent"});
  CHECK(ix.status("Sent")->uid_validity != 0);
  CHECK(ix.sync("Nope").error().kind == ErrorKind::kNotFound);
  CHECK(ix.status("Trash").error().kind == ErrorKind::kNotFound);
  CHECK(ix.set_cache("Sent", 1, "(env)", "(body)").ok());
  CHECK(ix.message("Sent", 1)->envelope == "(env)");
  CHECK(ix.message("Sent", 1)->bodystructure == "(body)");
}

TEST_CASE("the index persists and a lost index is rebuilt with a new UIDVALIDITY", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  uint32_t validity = 0;
  {
    auto idx = MailboxIndex::open(root);
    deliver(**idx, root, "a\n");
    deliver(**idx, root, "b\n");
    validity = (*idx)->status("INBOX")->uid_validity;
  }
  {
    auto idx = MailboxIndex::open(root);
    CHECK((*idx)->status("INBOX")->uid_validity == validity);
    CHECK((*idx)->messages("INBOX")->size() == 2);
  }
  ::unlink((root + "/tern-index").c_str());
  ::unlink((root + "/tern-index-lock").c_str());
  ::sleep(1);  // UIDVALIDITY is in seconds; the rebuilt one must differ
  auto idx = MailboxIndex::open(root);
  auto s = (*idx)->sync("INBOX");
  REQUIRE(s.ok());
  CHECK(s->added == 2);
  CHECK((*idx)->status("INBOX")->uid_validity != validity);
}

TEST_CASE("two processes delivering and syncing at once agree", "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  constexpr int kEach = 40;
  pid_t kids[2];
  for (int k = 0; k < 2; ++k) {
    kids[k] = ::fork();
    if (kids[k] == 0) {
      // A child opens its own environment (LMDB: never across fork).
      auto idx = MailboxIndex::open(root);
      if (!idx) ::_exit(1);
      for (int i = 0; i < kEach; ++i) {
        auto d = maildir::Delivery::begin(root);
        if (!d || !d->write("m\n")) ::_exit(2);
        auto name = d->commit(maildir::Fsync::kNo, nullptr);
        if (!name) ::_exit(3);
        // Every other message is left for the sync to find (a crash between
        // rename and index, or another delivery agent).
        if (i % 2 == 0 && !(*idx)->add_delivered("INBOX", *name, true, 2, 3, 0)) ::_exit(4);
        if (i % 5 == 0 && !(*idx)->sync("INBOX")) ::_exit(5);
      }
      ::_exit(0);
    }
  }
  for (pid_t p : kids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  auto idx = MailboxIndex::open(root);
  REQUIRE((*idx)->sync("INBOX").ok());
  auto recs = (*idx)->messages("INBOX");
  CHECK(recs->size() == 2 * kEach);
  check_agrees(**idx, root);
}

// --- group commit (shared by add_delivered and tern-mda's delivery ids) ---------

namespace {

// An LMDB environment with one unnamed database, for GroupCommit on its own.
struct GroupEnv {
  TempDir dir;
  std::unique_ptr<lmdb::Env> env;
  MDB_dbi dbi = 0;
  GroupEnv() {
    lmdb::Env::Options o;
    o.flags = MDB_NOSUBDIR | MDB_NOTLS;
    Result<std::unique_ptr<lmdb::Env>> e = lmdb::Env::open(dir.path + "/group.lmdb", o);
    REQUIRE(e.ok());
    env = std::move(e).value();
    REQUIRE(lmdb::write(*env, [&](lmdb::Txn& t) -> Status {
              Result<MDB_dbi> db = t.open_db(nullptr, false);
              if (!db) return db.take_error();
              dbi = *db;
              return {};
            }).ok());
  }
  bool has(const std::string& key) {
    bool found = false;
    REQUIRE(lmdb::read(*env, [&](lmdb::Txn& t) -> Status {
              found = t.get(dbi, key).ok();
              return {};
            }).ok());
    return found;
  }
};

// Waits (bounded) until the flag is set.
bool wait_flag(const std::atomic<bool>& f) {
  for (int i = 0; i < 20000 && !f; ++i) ::usleep(500);
  return f;
}

// Waits (bounded) until `n` changes are queued behind the running commit.
bool wait_waiting(const GroupCommit& g, size_t n) {
  for (int i = 0; i < 20000; ++i) {
    if (g.waiting() == n) return true;
    ::usleep(500);
  }
  return false;
}

}  // namespace

TEST_CASE("group commit: writers that arrive during a commit share the next one", "[mailbox_index][group]") {
  GroupEnv ge;
  GroupCommit g(*ge.env);
  constexpr int kWriters = 6;
  std::atomic<bool> release{false}, inside{false};
  std::vector<std::thread> threads;
  std::vector<Status> results(kWriters);
  // The first writer commits alone and holds its transaction open until the others
  // are all queued: they must then go in one transaction together.
  threads.emplace_back([&] {
    results[0] = g.write([&](lmdb::Txn& t) -> Status {
      inside = true;
      while (!release) ::usleep(200);
      return t.put(ge.dbi, "k0", "v");
    });
  });
  bool ordered = wait_flag(inside);
  for (int i = 1; i < kWriters; ++i) {
    threads.emplace_back([&, i] {
      results[i] = g.write([&, i](lmdb::Txn& t) -> Status { return t.put(ge.dbi, "k" + std::to_string(i), "v"); });
    });
  }
  // The first one is committing (it took its own slot), the others wait.
  bool queued = ordered && wait_waiting(g, kWriters - 1);
  release = true;
  for (auto& t : threads) t.join();
  REQUIRE(queued);
  for (int i = 0; i < kWriters; ++i) {
    CHECK(results[i].ok());
    CHECK(ge.has("k" + std::to_string(i)));
  }
  CHECK(g.commits() == 2);
}

TEST_CASE("group commit: one writer's failure is not the others'", "[mailbox_index][group]") {
  GroupEnv ge;
  GroupCommit g(*ge.env);
  std::atomic<bool> release{false}, inside{false};
  std::vector<std::thread> threads;
  Status first, good1, bad, good2;
  threads.emplace_back([&] {
    first = g.write([&](lmdb::Txn& t) -> Status {
      inside = true;
      while (!release) ::usleep(200);
      return t.put(ge.dbi, "first", "v");
    });
  });
  bool queued = wait_flag(inside);
  threads.emplace_back([&] { good1 = g.write([&](lmdb::Txn& t) { return t.put(ge.dbi, "good1", "v"); }); });
  queued = queued && wait_waiting(g, 1);
  threads.emplace_back([&] {
    bad = g.write([&](lmdb::Txn& t) -> Status {
      // Writes, then fails: its write must not survive.
      if (Status s = t.put(ge.dbi, "bad", "v"); !s) return s;
      return make_error(ErrorKind::kPerm, "this change fails");
    });
  });
  queued = queued && wait_waiting(g, 2);
  threads.emplace_back([&] { good2 = g.write([&](lmdb::Txn& t) { return t.put(ge.dbi, "good2", "v"); }); });
  queued = queued && wait_waiting(g, 3);
  release = true;
  for (auto& t : threads) t.join();
  REQUIRE(queued);
  CHECK(first.ok());
  CHECK(good1.ok());
  CHECK(good2.ok());
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message == "this change fails");
  CHECK(ge.has("first"));
  CHECK(ge.has("good1"));
  CHECK(ge.has("good2"));
  CHECK_FALSE(ge.has("bad"));
}

TEST_CASE("add_delivered from many threads: every message gets its own UID", "[mailbox_index][group]") {
  TempDir d;
  const std::string root = d.path + "/Maildir";
  REQUIRE(maildir::create_root(root).ok());
  Result<std::shared_ptr<MailboxIndex>> idx = MailboxIndex::open(root);
  REQUIRE(idx.ok());
  constexpr int kThreads = 4, kEach = 25;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<uint32_t> uids;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        Result<maildir::Delivery> dl = maildir::Delivery::begin(root);
        if (!dl || !dl->write("Subject: " + std::to_string(t) + "/" + std::to_string(i) + "\n\nbody\n")) {
          ++failures;
          continue;
        }
        Result<std::string> name = dl->commit(maildir::Fsync::kYes, nullptr);
        if (!name) {
          ++failures;
          continue;
        }
        Result<uint32_t> uid = (*idx)->add_delivered("INBOX", *name, true, dl->size(), dl->vsize(), 1700000000);
        if (!uid) {
          ++failures;
          continue;
        }
        std::lock_guard<std::mutex> lk(mu);
        uids.insert(*uid);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  // Distinct UIDs 1..N, and the index agrees.
  REQUIRE(uids.size() == kThreads * kEach);
  CHECK(*uids.begin() == 1);
  CHECK(*uids.rbegin() == kThreads * kEach);
  Result<MailboxStatus> st = (*idx)->status("INBOX");
  REQUIRE(st.ok());
  CHECK(st->messages == kThreads * kEach);
  CHECK(st->uid_next == kThreads * kEach + 1);
}

TEST_CASE("add_delivered records a delivery key in the UID's transaction; prune drops old keys",
          "[mailbox_index]") {
  TempDir t;
  std::string root = t.path + "/M";
  REQUIRE(maildir::create_root(root).ok());
  {
    auto idx = MailboxIndex::open(root);
    REQUIRE(idx.ok());
    CHECK_FALSE(*(*idx)->has_delivery_key(std::string("Q1\0a@x", 6)));
    Result<maildir::Delivery> d = maildir::Delivery::begin(root);
    REQUIRE(d->write("x\n").ok());
    Result<std::string> name = d->commit(maildir::Fsync::kNo, nullptr);
    REQUIRE(name.ok());
    Result<uint32_t> uid = (*idx)->add_delivered("INBOX", *name, true, 2, 3, 0, std::string("Q1\0a@x", 6), 1000);
    REQUIRE(uid.ok());
    CHECK(*uid == 1);
    // A file a sync indexed first still gets its key (the sync cannot know it).
    Result<maildir::Delivery> d2 = maildir::Delivery::begin(root);
    REQUIRE(d2->write("y\n").ok());
    Result<std::string> name2 = d2->commit(maildir::Fsync::kNo, nullptr);
    REQUIRE((*idx)->sync("INBOX")->added == 1);
    REQUIRE((*idx)->add_delivered("INBOX", *name2, true, 2, 3, 0, "Q2", 5000).ok());
    // Without a key nothing is recorded.
    deliver(**idx, root, "z\n");
  }
  auto idx = MailboxIndex::open(root);  // from disk again
  REQUIRE(idx.ok());
  CHECK(*(*idx)->has_delivery_key(std::string("Q1\0a@x", 6)));
  CHECK(*(*idx)->has_delivery_key("Q2"));
  CHECK_FALSE(*(*idx)->has_delivery_key("Q1"));
  CHECK((*idx)->messages("INBOX")->size() == 3);
  REQUIRE((*idx)->prune_delivery_keys(2000).ok());
  CHECK_FALSE(*(*idx)->has_delivery_key(std::string("Q1\0a@x", 6)));
  CHECK(*(*idx)->has_delivery_key("Q2"));
  CHECK((*idx)->messages("INBOX")->size() == 3);  // pruning touches only the keys
}

TEST_CASE("a file written with CRLF is measured as it will be served", "[mailbox_index][crlf]") {
  TempDir t;
  std::string root = t.path + "/Maildir";
  REQUIRE(maildir::create_root(root).ok());
  auto idx = MailboxIndex::open(root);
  REQUIRE(idx.ok());
  // A migration tool writes CRLF files, with neither S= nor W= in the name; one has
  // a stray CR before its CRLF and one mixes LF and CRLF lines.
  std::ofstream(root + "/cur/1700000100.M1P1.mig:2,S", std::ios::binary) << "Subject: crlf-file\r\nFrom: a@b\r\n\r\nline1\r\nline2\r\n";
  std::ofstream(root + "/cur/1700000101.M1P1.mig:2,S", std::ios::binary) << "Subject: cr\r\n\r\nx\r\r\ny\r\n";
  std::ofstream(root + "/cur/1700000102.M1P1.mig:2,S", std::ios::binary) << "Subject: mixed\n\r\nx\ny\r\n";
  REQUIRE((*idx)->sync("INBOX").ok());
  auto recs = (*idx)->messages("INBOX");
  REQUIRE(recs.ok());
  REQUIRE(recs->size() == 3);
  CHECK((*recs)[0].size == 47);
  CHECK((*recs)[0].vsize == 47);
  CHECK((*recs)[1].vsize == 22);
  CHECK((*recs)[2].size == 22);
  CHECK((*recs)[2].vsize == 24);
}

TEST_CASE("record decoding: a record is refused unless the encoder could have written it", "[mailbox_index][record]") {
  MessageRecord m;
  m.uid = 3;
  m.base = "1700000000.M1P2Q3.host,S=120,W=124";
  m.file = m.base + ":2,FS";
  m.flags = "FS";
  m.modseq = 5;
  m.size = 120;
  m.vsize = 124;
  m.internal_date = 1700000000;
  m.save_date = -1;
  m.envelope = "(NIL)";
  const std::string v = encode_record(m);
  MessageRecord back;
  REQUIRE(decode_record(v, 3, back));
  CHECK(encode_record(back) == v);
  CHECK(back.file == m.file);
  CHECK(back.save_date == -1);
  // Truncated anywhere: refused.
  for (size_t n = 0; n < v.size(); ++n) CHECK_FALSE(decode_record(v.substr(0, n), 3, back));
  // Found by tests/fuzz/mailbox_index_record: trailing bytes, an in_new byte other
  // than 0/1, and a `file` that is not a maildir entry of the record's own base
  // (corpus/mailbox_index_record/traversal: "../../x", which expunge would have
  // unlinked and set_flags renamed, outside the mailbox) were accepted.
  CHECK_FALSE(decode_record(v + "x", 3, back));
  std::string in_new = v;
  in_new[1] = 2;
  CHECK_FALSE(decode_record(in_new, 3, back));
  for (const std::string& file : {std::string("../../x:2,S"), std::string("cur/x"), std::string(".hidden"),
                                  std::string(""), std::string("other-base:2,S")}) {
    MessageRecord bad = m;
    bad.file = file;
    bad.base = file == "other-base:2,S" ? m.base : maildir::parse_name(file).base;
    INFO(file);
    CHECK_FALSE(decode_record(encode_record(bad), 3, back));
  }
  // The mailbox meta record: exact length only.
  MailboxStatus st{1700000000, 42, 77, 40, 123456};
  const std::string mv = encode_meta(9, st);
  uint32_t id = 0;
  MailboxStatus st2;
  REQUIRE(decode_meta(mv, id, st2));
  CHECK(id == 9);
  CHECK(st2.uid_next == 42);
  CHECK(st2.bytes == 123456);
  CHECK_FALSE(decode_meta(mv + "x", id, st2));
  CHECK_FALSE(decode_meta(mv.substr(0, mv.size() - 1), id, st2));
}
