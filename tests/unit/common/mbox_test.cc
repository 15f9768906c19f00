// mbox: From_ lines, >From quoting fed in pieces, append under locks, rollback to the
// old size, lock contention, reading back.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/mbox.h"

using namespace tern::common;
using namespace tern::common::mbox;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/tern-mbox-test-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string quote_whole(const std::string& in) {
  FromQuoter q;
  std::string out;
  q.feed(in, out);
  q.finish(out);
  return out;
}

std::string quote_bytes(const std::string& in) {
  FromQuoter q;
  std::string out;
  for (char c : in) q.feed(std::string_view(&c, 1), out);
  q.finish(out);
  return out;
}

LockOptions fast_locks() {
  LockOptions l;
  l.timeout_seconds = 1;
  return l;
}

}  // namespace

TEST_CASE("From_ line", "[mbox]") {
  CHECK(from_line("a@b.example", 0) == "From a@b.example Thu Jan  1 00:00:00 1970\n");
  CHECK(from_line("", 0).rfind("From MAILER-DAEMON ", 0) == 0);
  CHECK(from_line("a b\n@x", 0).rfind("From a_b_@x ", 0) == 0);
}

TEST_CASE("mboxrd quoting, whole and byte at a time", "[mbox]") {
  struct Case {
    std::string in, out;
  };
  const Case cases[] = {
      {"From x\n", ">From x\n"},
      {"a\nFrom x\n", "a\n>From x\n"},
      {">From x\n", ">>From x\n"},
      {">>>From x\n", ">>>>From x\n"},
      {"From\n", "From\n"},
      {"Fromx\n", "Fromx\n"},
      {" From x\n", " From x\n"},
      {"a From x\n", "a From x\n"},
      {">Fro\n", ">Fro\n"},
      {">>x\n", ">>x\n"},
      {"Fr", "Fr"},
      {">", ">"},
      {"From ", ">From "},
      {"\n\nFrom \n", "\n\n>From \n"},
      {std::string(5000, '>') + "From x\n", ">" + std::string(5000, '>') + "From x\n"},
  };
  for (const Case& c : cases) {
    INFO(c.in);
    CHECK(quote_whole(c.in) == c.out);
    CHECK(quote_bytes(c.in) == c.out);
  }
}

TEST_CASE("append, read back, append again", "[mbox]") {
  TempDir t;
  std::string mb = t.path + "/user";
  {
    Result<Appender> a = Appender::begin(mb, "s@x.example", 0, fast_locks());
    REQUIRE(a.ok());
    REQUIRE(a->write("Subject: one\n\nFrom the start\n>From quoted\n").ok());
    REQUIRE(a->commit(maildir::Fsync::kYes).ok());
  }
  {
    Result<Appender> a = Appender::begin(mb, "", 0, fast_locks());
    REQUIRE(a.ok());
    CHECK(a->old_size() > 0);
    REQUIRE(a->write("Subject: two\n\nno newline at end").ok());
    REQUIRE(a->commit(maildir::Fsync::kNo).ok());
  }
  std::string raw = slurp(mb);
  CHECK(raw.find("\n>From the start\n>>From quoted\n\nFrom MAILER-DAEMON") != std::string::npos);
  CHECK(raw.substr(raw.size() - 2) == "\n\n");
  auto msgs = read_all(mb);
  REQUIRE(msgs.ok());
  REQUIRE(msgs->size() == 2);
  CHECK((*msgs)[0].from_line.rfind("s@x.example ", 0) == 0);
  CHECK((*msgs)[0].content == "Subject: one\n\nFrom the start\n>From quoted\n");
  CHECK((*msgs)[1].content == "Subject: two\n\nno newline at end\n");
  struct stat st;
  REQUIRE(::stat(mb.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(::access((mb + ".lock").c_str(), F_OK) != 0);  // dotlock removed
}

TEST_CASE("rollback truncates to the old size", "[mbox]") {
  TempDir t;
  std::string mb = t.path + "/user";
  {
    Result<Appender> a = Appender::begin(mb, "s@x", 0, fast_locks());
    REQUIRE(a.ok());
    REQUIRE(a->write("Subject: keep\n\nk\n").ok());
    REQUIRE(a->commit(maildir::Fsync::kNo).ok());
  }
  const std::string before = slurp(mb);
  {
    Result<Appender> a = Appender::begin(mb, "s@x", 0, fast_locks());
    REQUIRE(a.ok());
    REQUIRE(a->write(std::string(200000, 'x')).ok());  // partly flushed to the file
    // destroyed without commit: a failure somewhere in the caller
  }
  CHECK(slurp(mb) == before);
  {
    Result<Appender> a = Appender::begin(mb, "s@x", 0, fast_locks());
    REQUIRE(a.ok());
    REQUIRE(a->write(std::string(200000, 'y')).ok());
    a->rollback();
  }
  CHECK(slurp(mb) == before);
}

TEST_CASE("locks: a held dotlock or fcntl lock makes a second appender wait and fail", "[mbox]") {
  TempDir t;
  std::string mb = t.path + "/user";
  Result<Appender> first = Appender::begin(mb, "s@x", 0, fast_locks());
  REQUIRE(first.ok());
  Result<Appender> second = Appender::begin(mb, "s@x", 0, fast_locks());
  REQUIRE(!second.ok());
  CHECK(second.error().kind == ErrorKind::kInUse);
  // fcntl alone (no dotlock) also excludes, even inside one process (OFD locks).
  LockOptions fcntl_only = fast_locks();
  fcntl_only.dotlock = false;
  Result<Appender> third = Appender::begin(mb, "s@x", 0, fcntl_only);
  REQUIRE(!third.ok());
  CHECK(third.error().kind == ErrorKind::kInUse);
  first->rollback();
  Result<Appender> fourth = Appender::begin(mb, "s@x", 0, fast_locks());
  CHECK(fourth.ok());
}

TEST_CASE("a stale dotlock is broken", "[mbox]") {
  TempDir t;
  std::string mb = t.path + "/user";
  std::ofstream(mb + ".lock") << "99999\n";
  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  REQUIRE(::utimensat(AT_FDCWD, (mb + ".lock").c_str(), old, 0) == 0);
  Result<Appender> a = Appender::begin(mb, "s@x", 0, fast_locks());
  CHECK(a.ok());
}

TEST_CASE("refuses symlinks and hard links", "[mbox]") {
  TempDir t;
  std::string target = t.path + "/target";
  std::ofstream(target) << "";
  REQUIRE(::symlink(target.c_str(), (t.path + "/sym").c_str()) == 0);
  CHECK(!Appender::begin(t.path + "/sym", "s", 0, fast_locks()).ok());
  REQUIRE(::link(target.c_str(), (t.path + "/hard").c_str()) == 0);
  Result<Appender> h = Appender::begin(t.path + "/hard", "s", 0, fast_locks());
  REQUIRE(!h.ok());
  CHECK(h.error().kind == ErrorKind::kDenied);
}

TEST_CASE("reading an mbox written by another program", "[mbox]") {
  TempDir t;
  std::string mb = t.path + "/mbox";
  std::ofstream(mb) << "From a@b Mon Jan  1 00:00:00 2024\nSubject: 1\n\nbody\n>From x\n\n"
                       "From c@d Mon Jan  1 00:00:01 2024\nSubject: 2\n\nplain\n\n";
  auto m = read_all(mb);
  REQUIRE(m.ok());
  REQUIRE(m->size() == 2);
  CHECK((*m)[0].content == "Subject: 1\n\nbody\nFrom x\n");
  CHECK((*m)[1].content == "Subject: 2\n\nplain\n");
}

TEST_CASE("split: an empty message is empty wherever it is", "[mbox]") {
  // Found by tests/fuzz/mbox (corpus/mbox/empty_last): an empty message read as
  // "" in the middle of an mbox but as "\n" at its end.
  const std::string empty = from_line("", 0) + "\n";
  const std::string one = from_line("", 0) + "\n\n";  // content "\n"
  for (const std::string& file : {empty + empty, one + empty, empty + one}) {
    std::vector<Message> m = split(file);
    REQUIRE(m.size() == 2);
    CHECK(m[0].content == (file.rfind(one, 0) == 0 ? "\n" : ""));
    CHECK(m[1].content == (file == empty + one ? "\n" : ""));
  }
  // The last message without its blank line, or without a final newline, keeps
  // what it has.
  CHECK(split("From x\nSubject: a\n\nbody\n")[0].content == "Subject: a\n\nbody\n");
  CHECK(split("From x\nSubject: a\n\nbody")[0].content == "Subject: a\n\nbody");
  CHECK(split("").empty());
  CHECK(split("no From_ line\n").empty());
}
