// Maildir++: names, flags, folders, delivery (tmp -> new), group fsync, listing,
// flag renames, reading maildirs written by Postfix and Dovecot, the symlink check.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <atomic>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/maildir.h"

using namespace tern::common;
using namespace tern::common::maildir;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/tern-maildir-test-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') out.push_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("file names: parse and make", "[maildir]") {
  FileName a = parse_name("1700000000.M1P2Q3.host,S=120,W=125:2,SR");
  CHECK(a.base == "1700000000.M1P2Q3.host,S=120,W=125");
  CHECK(a.flags == "RS");
  CHECK(a.has_info);
  CHECK(a.size == 120u);
  CHECK(a.vsize == 125u);
  // Postfix local(8): no info, no sizes.
  FileName p = parse_name("1700000000.V801I1234M567.mail.example");
  CHECK(p.base == "1700000000.V801I1234M567.mail.example");
  CHECK(!p.has_info);
  CHECK(!p.size);
  // Junk flags are dropped, duplicates folded, order normalised; keywords kept.
  CHECK(parse_name("x:2,TSSa!zD").flags == "DSTaz");
  CHECK(parse_name("x:1,experimental").flags.empty());
  CHECK(make_name("b", "SFx") == "b:2,FSx");
  CHECK(valid_entry_name("abc"));
  CHECK(!valid_entry_name(".hidden"));
  CHECK(!valid_entry_name(""));
  CHECK(!valid_entry_name("a/b"));
}

TEST_CASE("unique names differ and carry sizes", "[maildir]") {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) CHECK(seen.insert(unique_base(10, 12)).second);
  FileName f = parse_name(*seen.begin());
  CHECK(f.size == 10u);
  CHECK(f.vsize == 12u);
  CHECK(sanitize_host("a/b:c,d") == "a\\057b\\072c\\054d");
}

TEST_CASE("folder paths", "[maildir]") {
  CHECK(folder_path("/m", "INBOX").value() == "/m");
  CHECK(folder_path("/m", "inbox").value() == "/m");
  CHECK(folder_path("/m", "Sent").value() == "/m/.Sent");
  CHECK(folder_path("/m", "Lists/tern").value() == "/m/.Lists.tern");
  for (const char* bad : {"..", "a/../b", "/abs", "a//b", ".hidden", "a.b", "x\ny", "a\\b"}) {
    INFO(bad);
    CHECK(!folder_path("/m", bad).ok());
  }
  CHECK(folder_name(".Lists.tern") == std::string("Lists/tern"));
  CHECK(!folder_name("cur"));
  CHECK(!folder_name(".."));
}

TEST_CASE("create_root makes the special folders once", "[maildir]") {
  TempDir t;
  std::string root = t.path + "/Maildir";
  REQUIRE(create_root(root).ok());
  for (const char* f : {"Drafts", "Junk", "Sent", "Trash"}) {
    struct stat st;
    CHECK(::stat((root + "/." + f + "/cur").c_str(), &st) == 0);
    CHECK(::stat((root + "/." + f + "/maildirfolder").c_str(), &st) == 0);
  }
  CHECK(slurp(root + "/subscriptions") == "Drafts\nJunk\nSent\nTrash\n");
  auto folders = list_folders(root);
  REQUIRE(folders.ok());
  CHECK(*folders == std::vector<std::string>{"Drafts", "Junk", "Sent", "Trash"});
  // A second call on an existing maildir does not recreate a folder the user removed.
  std::system(("rm -rf '" + root + "/.Junk'").c_str());
  REQUIRE(create_root(root).ok());
  struct stat st;
  CHECK(::stat((root + "/.Junk").c_str(), &st) != 0);
}

TEST_CASE("create_root from many threads at once: every caller sees the folders", "[maildir]") {
  for (int round = 0; round < 20; ++round) {
    TempDir t;
    std::string root = t.path + "/Maildir";
    std::atomic<int> missing{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&] {
        if (!create_root(root)) ++missing;
        struct stat st;
        for (const char* f : kSpecialFolders) {
          if (::stat((root + "/." + f + "/cur").c_str(), &st) != 0) ++missing;
        }
      });
    }
    for (auto& th : threads) th.join();
    CHECK(missing == 0);
  }
}

TEST_CASE("create_root on an existing Dovecot maildir without subscriptions adds the folders once", "[maildir]") {
  TempDir t;
  std::string root = t.path + "/Maildir";
  REQUIRE(create(root, false).ok());
  REQUIRE(create_root(root).ok());
  CHECK(list_folders(root)->size() == 4);
}

TEST_CASE("delivery: tmp -> new, nothing left in tmp", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/Maildir";
  REQUIRE(create(md, false).ok());
  Result<Delivery> d = Delivery::begin(md);
  REQUIRE(d.ok());
  CHECK(names_in(md + "/tmp").size() == 1);
  REQUIRE(d->write("Subject: hi\n\nbody\n").ok());
  std::string big(200000, 'x');
  big += '\n';
  REQUIRE(d->write(big).ok());
  CHECK(d->size() == 18 + big.size());
  CHECK(d->vsize() == d->size() + 4);
  DirSyncer syncer;
  Result<std::string> name = d->commit(Fsync::kYes, &syncer);
  REQUIRE(name.ok());
  CHECK(names_in(md + "/tmp").empty());
  CHECK(names_in(md + "/new") == std::vector<std::string>{*name});
  CHECK(slurp(md + "/new/" + *name) == "Subject: hi\n\nbody\n" + big);
  FileName fn = parse_name(*name);
  CHECK(fn.size == d->size());
  CHECK(fn.vsize == d->vsize());
  CHECK(syncer.fsyncs() == 1);
  struct stat st;
  REQUIRE(::stat((md + "/new/" + *name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("delivery: abort and destructor remove the tmp file", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/Maildir";
  REQUIRE(create(md, false).ok());
  {
    Result<Delivery> d = Delivery::begin(md);
    REQUIRE(d.ok());
    REQUIRE(d->write("partial").ok());
  }
  CHECK(names_in(md + "/tmp").empty());
  CHECK(names_in(md + "/new").empty());
  Result<Delivery> d = Delivery::begin(md);
  REQUIRE(d.ok());
  d->abort();
  CHECK(names_in(md + "/tmp").empty());
  CHECK(!d->commit(Fsync::kYes, nullptr).ok());
}

TEST_CASE("delivery into cur with flags (APPEND, Sent copies)", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/M";
  REQUIRE(create(md, false).ok());
  Result<Delivery> d = Delivery::begin(md);
  REQUIRE(d.ok());
  REQUIRE(d->write("x\n").ok());
  Result<std::string> name = d->commit(Fsync::kNo, nullptr, std::string_view("SD"));
  REQUIRE(name.ok());
  CHECK(parse_name(*name).flags == "DS");
  CHECK(names_in(md + "/cur") == std::vector<std::string>{*name});
}

TEST_CASE("a missing maildir is a clear error", "[maildir]") {
  TempDir t;
  Result<Delivery> d = Delivery::begin(t.path + "/nope");
  REQUIRE(!d.ok());
  CHECK(d.error().message.find("nope/tmp") != std::string::npos);
}

TEST_CASE("DirSyncer shares fsyncs between concurrent deliveries", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/M";
  REQUIRE(create(md, false).ok());
  DirSyncer syncer;
  constexpr int kThreads = 8, kEach = 20;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < kEach; ++j) {
        Result<Delivery> d = Delivery::begin(md);
        if (!d || !d->write("m\n") || !d->commit(Fsync::kYes, &syncer)) continue;
        ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == kThreads * kEach);
  CHECK(names_in(md + "/new").size() == kThreads * kEach);
  // Never more fsyncs than deliveries; usually far fewer (not asserted: timing).
  CHECK(syncer.fsyncs() <= static_cast<uint64_t>(kThreads * kEach));
  CHECK(syncer.fsyncs() >= 1);
}

TEST_CASE("list and set_flags", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/M";
  REQUIRE(create(md, false).ok());
  Result<Delivery> d = Delivery::begin(md);
  REQUIRE(d.ok());
  REQUIRE(d->write("x\n").ok());
  Result<std::string> name = d->commit(Fsync::kNo, nullptr);
  REQUIRE(name.ok());
  auto l = list(md);
  REQUIRE(l.ok());
  REQUIRE(l->size() == 1);
  CHECK((*l)[0].in_new);
  Result<std::string> n2 = set_flags(md, (*l)[0], "S");
  REQUIRE(n2.ok());
  CHECK(*n2 == *name + ":2,S");
  auto l2 = list(md);
  REQUIRE(l2->size() == 1);
  CHECK(!(*l2)[0].in_new);
  CHECK((*l2)[0].parsed.flags == "S");
  // Renaming a stale entry says kNotFound.
  Result<std::string> stale = set_flags(md, (*l)[0], "F");
  REQUIRE(!stale.ok());
  CHECK(stale.error().kind == ErrorKind::kNotFound);
}

TEST_CASE("reads maildirs written by Postfix and Dovecot", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/M";
  REQUIRE(create(md, false).ok());
  std::ofstream(md + "/new/1700000000.V801I1234M567.mail.example") << "a\n";
  std::ofstream(md + "/cur/1700000001.M2P3.host,S=2,W=3:2,RS") << "b\n";
  std::ofstream(md + "/cur/.hidden") << "junk";
  std::ofstream(md + "/dovecot-uidlist") << "3 V1 N1\n";
  auto l = list(md);
  REQUIRE(l.ok());
  REQUIRE(l->size() == 2);
  std::set<std::string> bases;
  for (const Entry& e : *l) bases.insert(e.parsed.base);
  CHECK(bases.count("1700000000.V801I1234M567.mail.example") == 1);
  CHECK(bases.count("1700000001.M2P3.host,S=2,W=3") == 1);
}

TEST_CASE("check_within refuses symlinks out of home", "[maildir]") {
  TempDir t;
  std::string home = t.path + "/home", outside = t.path + "/outside";
  ::mkdir(home.c_str(), 0700);
  ::mkdir(outside.c_str(), 0700);
  ::mkdir((home + "/real").c_str(), 0700);
  CHECK(check_within(home, home + "/Maildir").ok());            // does not exist yet: parent is home
  CHECK(check_within(home, home + "/a/b/c").ok());
  REQUIRE(::symlink(outside.c_str(), (home + "/Maildir").c_str()) == 0);
  Status s = check_within(home, home + "/Maildir");
  REQUIRE(!s.ok());
  CHECK(s.error().kind == ErrorKind::kDenied);
  CHECK(!check_within(home, home + "/Maildir/new").ok());
  REQUIRE(::symlink("real", (home + "/inside").c_str()) == 0);
  CHECK(check_within(home, home + "/inside").ok());              // a link that stays at home is fine
  REQUIRE(::symlink("/", (home + "/root").c_str()) == 0);
  CHECK(!check_within(home, home + "/root/etc").ok());
  CHECK(!check_within(home, home + "/../outside").ok());
  // A prefix that is not a path boundary is not "inside".
  ::mkdir((t.path + "/home2").c_str(), 0700);
  CHECK(!check_within(home, t.path + "/home2").ok());
}

TEST_CASE("clean_tmp removes only old leftovers", "[maildir]") {
  TempDir t;
  std::string md = t.path + "/M";
  REQUIRE(create(md, false).ok());
  std::ofstream(md + "/tmp/old") << "x";
  std::ofstream(md + "/tmp/fresh") << "y";
  struct timespec old[2] = {{1000, 0}, {1000, 0}};
  REQUIRE(::utimensat(AT_FDCWD, (md + "/tmp/old").c_str(), old, 0) == 0);
  Result<unsigned> n = clean_tmp(md);
  REQUIRE(n.ok());
  CHECK(*n == 1);
  CHECK(names_in(md + "/tmp") == std::vector<std::string>{"fresh"});
  CHECK(clean_tmp(t.path + "/none").ok());
}

TEST_CASE("Delivery::vsize counts only the LFs that are served with an added CR", "[maildir][crlf]") {
  TempDir t;
  std::string md = t.path + "/Maildir";
  REQUIRE(create(md, false).ok());
  Result<Delivery> d = Delivery::begin(md);
  REQUIRE(d.ok());
  // "x\r" + "\r\n" split across writes: the LF follows a CR, so it is served as is.
  REQUIRE(d->write("Subject: cr\n\nx\r").ok());
  REQUIRE(d->write("\r\ny\r").ok());
  REQUIRE(d->write("\nz\n").ok());
  CHECK(d->size() == 22);
  CHECK(d->vsize() == 22 + 3);  // the LFs after "cr", the blank line and "z"
  Result<std::string> name = d->commit(Fsync::kNo, nullptr);
  REQUIRE(name.ok());
  CHECK(parse_name(*name).vsize == 25u);
}
