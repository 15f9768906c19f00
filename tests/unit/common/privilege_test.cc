// privilege.h: which uids/gids a mail process may take (first/last_valid_uid and
// _gid, never 0), and switching core dumps off for processes holding secrets.
#include "common/privilege.h"

#include <catch2/catch.hpp>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "common/config.h"

using namespace tern::common;

TEST_CASE("ValidIds: defaults are Dovecot's and root is refused whatever the ranges", "[privilege]") {
  Result<Config> c = Config::parse("", "t.conf");
  REQUIRE(c);
  ValidIds v = ValidIds::from_config(*c);
  CHECK(v.first_uid == 500);
  CHECK(v.last_uid == 0);
  CHECK(v.first_gid == 1);
  CHECK(v.last_gid == 0);

  CHECK(v.refuse(1000, 1000) == "");
  CHECK(v.refuse(1000, 1) == "");
  CHECK(v.refuse(0, 1000) == "uid 0 is root");
  CHECK(v.refuse(1000, 0) == "gid 0 is root's group");
  CHECK(v.refuse(499, 1000) == "uid 499 is outside first_valid_uid..last_valid_uid (500..)");

  // Even a range that starts at 0 does not let root through.
  ValidIds open;
  open.first_uid = 0;
  open.first_gid = 0;
  CHECK(open.refuse(0, 5) == "uid 0 is root");
  CHECK(open.refuse(5, 0) == "gid 0 is root's group");
}

TEST_CASE("ValidIds: first/last_valid_gid bound the gid", "[privilege]") {
  Result<Config> c = Config::parse("first_valid_gid = 100\nlast_valid_gid = 200\nlast_valid_uid = 2000\n", "t.conf");
  REQUIRE(c);
  ValidIds v = ValidIds::from_config(*c);
  struct Case {
    uint64_t uid, gid;
    std::string why;
  } cases[] = {
      {1000, 100, ""},
      {1000, 200, ""},
      {1000, 99, "gid 99 is outside first_valid_gid..last_valid_gid (100..200)"},
      {1000, 201, "gid 201 is outside first_valid_gid..last_valid_gid (100..200)"},
      {2001, 150, "uid 2001 is outside first_valid_uid..last_valid_uid (500..2000)"},
  };
  for (const Case& k : cases) {
    INFO(k.uid << ":" << k.gid);
    CHECK(v.refuse(k.uid, k.gid) == k.why);
  }
  // gid 0 cannot be configured in: first_valid_gid's lower bound is 1.
  CHECK_FALSE(Config::parse("first_valid_gid = 0\n", "t.conf"));
}

namespace {

// Runs fn in a child (so the test process keeps its own flags) and returns its status.
int in_child(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(fn());
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  return WEXITSTATUS(status);
}

}  // namespace

TEST_CASE("restrict_core_dumps: off by default, on for debugging", "[privilege]") {
  CHECK(in_child([] {
          if (!restrict_core_dumps(false)) return 1;
          rlimit r{};
          if (::getrlimit(RLIMIT_CORE, &r) < 0 || r.rlim_cur != 0 || r.rlim_max != 0) return 2;
          if (::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) return 3;
          return 0;
        }) == 0);
  CHECK(in_child([] {
          ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
          if (!restrict_core_dumps(true)) return 1;
          return ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 ? 0 : 3;
        }) == 0);
}
