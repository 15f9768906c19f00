// make_directories / make_directory_safely as root: no name a less privileged user
// controls is followed (issue 11, finding 1). The race test runs the attack the review
// described: uid nobody swaps maildrop_directory for a symlink to a root file while
// root fixes the directory up, thousands of times.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/safe_path.h"
#include "common/services.h"

using namespace tern::common;

namespace {

struct TempRoot {
  std::string path;
  TempRoot() {
    char t[] = "/tmp/tern-safe-path-XXXXXX";
    path = ::mkdtemp(t);
    // Searchable by the unprivileged racer, writable by root only.
    ::chmod(path.c_str(), 0755);
  }
  ~TempRoot() { (void)!std::system(("rm -rf '" + path + "'").c_str()); }
};

uid_t nobody_uid() {
  struct passwd* pw = ::getpwnam("nobody");
  return pw ? pw->pw_uid : 65534;
}

struct stat stat_of(const std::string& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st;
}

}  // namespace

TEST_CASE("make_directory_safely creates parents and applies the mode", "[safe_path]") {
  TempRoot t;
  const std::string p = t.path + "/a/b/c";
  DirOwner me{::geteuid(), ::getegid()};
  Result<UniqueFd> fd = make_directory_safely(p, me, 0710);
  REQUIRE(fd);
  CHECK((stat_of(p).st_mode & 07777) == 0710);
  CHECK((stat_of(t.path + "/a").st_mode & 07777) == 0755);
  // Again: an existing directory with another mode is fixed through its fd.
  ::chmod(p.c_str(), 0777);
  REQUIRE(make_directory_safely(p, me, 01733));
  CHECK((stat_of(p).st_mode & 07777) == 01733);
}

TEST_CASE("a symbolic link as the directory is refused, its target untouched", "[safe_path]") {
  TempRoot t;
  const std::string victim = t.path + "/victim";
  { FILE* f = std::fopen(victim.c_str(), "w"); REQUIRE(f); std::fclose(f); }
  ::chmod(victim.c_str(), 0600);
  const std::string link = t.path + "/maildrop";
  REQUIRE(::symlink(victim.c_str(), link.c_str()) == 0);
  Result<UniqueFd> fd = make_directory_safely(link, DirOwner{::geteuid(), ::getegid()}, 01733);
  CHECK_FALSE(fd);
  CHECK((stat_of(victim).st_mode & 07777) == 0600);
  // A symlink to a directory is not followed either when another user owns it.
  if (::geteuid() == 0) {
    const std::string dir = t.path + "/realdir";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    const std::string link2 = t.path + "/linkdir";
    REQUIRE(::symlink(dir.c_str(), link2.c_str()) == 0);
    REQUIRE(::lchown(link2.c_str(), nobody_uid(), nobody_uid()) == 0);
    Result<UniqueFd> r = make_directory_safely(link2 + "/sub", DirOwner{}, 0700);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("symbolic link owned by uid") != std::string::npos);
    struct stat st;
    CHECK(::stat((dir + "/sub").c_str(), &st) < 0);
  }
}

TEST_CASE("as root, a root-owned symlink in a trusted directory is followed (/var/run -> /run)", "[safe_path]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root (it checks owners)");
    return;
  }
  TempRoot t;
  const std::string real = t.path + "/run";
  REQUIRE(::mkdir(real.c_str(), 0755) == 0);
  REQUIRE(::symlink("run", (t.path + "/varrun").c_str()) == 0);
  Result<UniqueFd> fd = make_directory_safely(t.path + "/varrun/tern", DirOwner{}, 0755);
  REQUIRE(fd);
  CHECK(S_ISDIR(stat_of(real + "/tern").st_mode));
}

TEST_CASE("as root, parents writable by others or owned by another user are refused", "[safe_path]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root (it checks owners)");
    return;
  }
  TempRoot t;
  const uid_t nobody = nobody_uid();
  SECTION("world-writable parent without the sticky bit") {
    const std::string open_dir = t.path + "/open";
    REQUIRE(::mkdir(open_dir.c_str(), 0777) == 0);
    ::chmod(open_dir.c_str(), 0777);
    Result<UniqueFd> r = make_directory_safely(open_dir + "/spool", DirOwner{}, 0755);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("writable by others") != std::string::npos);
    CHECK(r.error().message.find(open_dir) != std::string::npos);
  }
  SECTION("sticky world-writable parent (/tmp) is fine") {
    const std::string tmp = t.path + "/tmp";
    REQUIRE(::mkdir(tmp.c_str(), 01777) == 0);
    ::chmod(tmp.c_str(), 01777);
    CHECK(make_directory_safely(tmp + "/spool", DirOwner{}, 0755));
  }
  SECTION("a parent owned by another user than the target's owner") {
    const std::string theirs = t.path + "/theirs";
    REQUIRE(::mkdir(theirs.c_str(), 0755) == 0);
    REQUIRE(::chown(theirs.c_str(), nobody, nobody) == 0);
    Result<UniqueFd> r = make_directory_safely(theirs + "/x", DirOwner{}, 0755);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("owned by uid " + std::to_string(nobody)) != std::string::npos);
    // ... but the target's own owner may own its parent (maildrop in the queue).
    CHECK(make_directory_safely(theirs + "/maildrop", DirOwner{nobody, nobody}, 01733));
    CHECK(stat_of(theirs + "/maildrop").st_uid == nobody);
  }
  SECTION("in its owner's directory, a directory of a third user is not handed over") {
    const std::string queue = t.path + "/queue";
    REQUIRE(::mkdir(queue.c_str(), 0711) == 0);
    REQUIRE(::chown(queue.c_str(), nobody, nobody) == 0);
    const std::string md = queue + "/maildrop";
    REQUIRE(::mkdir(md.c_str(), 0700) == 0);
    REQUIRE(::chown(md.c_str(), nobody + 1, nobody + 1) == 0);
    Result<UniqueFd> r = make_directory_safely(md, DirOwner{nobody, nobody}, 01733);
    REQUIRE_FALSE(r);
    CHECK(stat_of(md).st_uid == nobody + 1);
    CHECK((stat_of(md).st_mode & 07777) == 0700);
  }
}

TEST_CASE("as root, make_directories under a racing symlink swapper never touches the target", "[safe_path]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root (the attack is on root's directory fix-up)");
    return;
  }
  TempRoot t;
  const uid_t nobody = nobody_uid();
  // The victim: a root file whose mode a successful attack changes to 01733 (the
  // old code: lstat saw a directory, lchown, then chmod followed the new symlink).
  const std::string victim = t.path + "/passwd";
  { FILE* f = std::fopen(victim.c_str(), "w"); REQUIRE(f); std::fputs("root:x:0:0::/root:/bin/sh\n", f); std::fclose(f); }
  ::chmod(victim.c_str(), 0644);
  // The queue directory belongs to the unprivileged user, as mail_owner's does.
  const std::string queue = t.path + "/queue";
  REQUIRE(::mkdir(queue.c_str(), 0711) == 0);
  REQUIRE(::chown(queue.c_str(), nobody, nobody) == 0);
  const std::string maildrop = queue + "/maildrop";
  const std::string spare = queue + "/spare";

  // Root makes maildrop first (as the master does on its first start).
  std::vector<DirectorySpec> dirs = {{queue, "nobody", 0711}, {maildrop, "nobody", 01733}};
  REQUIRE(make_directories(dirs));

  // Held open so that each round can make the directory's mode wrong (the old code
  // then chmods by name) wherever the racer has moved it.
  const int maildrop_fd = ::open(maildrop.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(maildrop_fd >= 0);
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t racer = ::fork();
  REQUIRE(racer >= 0);
  if (racer == 0) {
    // uid nobody: keeps exchanging the real maildrop and a symlink to the victim.
    if (::setgid(nobody) < 0 || ::setuid(nobody) < 0) ::_exit(2);
    if (::symlink(victim.c_str(), spare.c_str()) < 0) ::_exit(3);
    (void)!::write(ready[1], "x", 1);
    for (;;) {
      if (::renameat2(AT_FDCWD, maildrop.c_str(), AT_FDCWD, spare.c_str(), RENAME_EXCHANGE) < 0) ::_exit(4);
    }
  }
  ::close(ready[1]);
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  ::close(ready[0]);

  // Against the old code (lstat, lchown, chmod by name) this caught the swap within
  // the first few thousand rounds in 40 of 40 runs on a loaded 2-core machine.
  constexpr int kRounds = 20000;
  int refused = 0, done = 0;
  for (int i = 0; i < kRounds; ++i) {
    // The racer leaves maildrop alone between its swaps, so root sometimes finds
    // maildrop's mode wrong and fixes it: that is the window.
    ::fchmod(maildrop_fd, 0700);  // the directory, wherever the racer has put it
    ::chmod(victim.c_str(), 0644);
    if (make_directories(dirs)) ++done; else ++refused;
    struct stat vs = stat_of(victim);
    if ((vs.st_mode & 07777) != 0644 || vs.st_uid != 0) {
      ::kill(racer, SIGKILL);
      ::waitpid(racer, nullptr, 0);
      FAIL("root changed the victim through the symlink after " << i << " rounds: mode "
                                                                 << std::oct << (vs.st_mode & 07777) << " uid " << std::dec << vs.st_uid);
    }
  }
  ::kill(racer, SIGKILL);
  ::close(maildrop_fd);
  int status = 0;
  ::waitpid(racer, &status, 0);
  CHECK(WIFSIGNALED(status));  // the racer was still racing, not dead of an error
  INFO("fix-ups done " << done << ", refused " << refused);
  CHECK(done + refused == kRounds);
  CHECK(refused > 0);  // the racer really put the symlink in the way
}
