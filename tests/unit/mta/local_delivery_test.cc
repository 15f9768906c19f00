// |command and /file deliveries: who they run as (local_helper.h), the command's
// environment, and files that are symlinks.
#include "mta/local_delivery.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "mta/local_helper.h"

using namespace tern;

namespace {
std::string temp_dir() {
  char tmpl[] = "/tmp/tern-local-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

TEST_CASE("alias commands run as the table owner, default_privs for root, never root or mail_owner") {
  const uid_t nobody = 65534, mail_owner = 995;
  CHECK(mta::alias_delivery_uid(1001, nobody, mail_owner).value() == 1001);
  CHECK(mta::alias_delivery_uid(0, nobody, mail_owner).value() == nobody);
  auto owned_by_mail_owner = mta::alias_delivery_uid(mail_owner, nobody, mail_owner);
  REQUIRE_FALSE(owned_by_mail_owner.ok());
  CHECK(owned_by_mail_owner.error().message.find("mail_owner") != std::string::npos);
  CHECK_FALSE(mta::alias_delivery_uid(0, 0, mail_owner).ok());           // default_privs = root
  CHECK_FALSE(mta::alias_delivery_uid(0, mail_owner, mail_owner).ok());  // default_privs = mail_owner
  CHECK_FALSE(mta::alias_delivery_uid(0, static_cast<uid_t>(-1), mail_owner).ok());  // unknown user
  CHECK_FALSE(mta::alias_delivery_uid(static_cast<uid_t>(-1), nobody, mail_owner).ok());
}

TEST_CASE("a command gets Postfix local(8)'s environment and nothing of ours") {
  const std::string dir = temp_dir();
  ::setenv("TERN_TEST_SECRET", "leak", 1);
  mta::LocalJob job;
  job.kind = mta::LocalJob::Kind::kCommand;
  job.target = "env > " + dir + "/env; pwd > " + dir + "/pwd";
  job.sender = "alice@example.org";
  job.recipient = "prog+ext@example.test";
  job.queue_id = "4Xq9Kp2TyrzK1";
  job.body = "Subject: x\r\n\r\nbody\r\n";
  job.user = "someone";
  job.home = dir;
  job.shell = "/bin/sh";
  job.time_limit_s = 10;
  mta::LocalOutcome o = mta::run_local(job);
  ::unsetenv("TERN_TEST_SECRET");
  REQUIRE(o.status == 's');
  const std::string env = slurp(dir + "/env");
  for (const char* want : {"HOME=", "LOGNAME=someone\n", "USER=someone\n", "SHELL=/bin/sh\n",
                           "SENDER=alice@example.org\n", "RECIPIENT=prog+ext@example.test\n", "LOCAL=prog+ext\n",
                           "EXTENSION=ext\n", "DOMAIN=example.test\n"}) {
    CHECK(env.find(want) != std::string::npos);
  }
  CHECK(env.find("HOME=" + dir + "\n") != std::string::npos);
  CHECK(env.find("TERN_TEST_SECRET") == std::string::npos);
  CHECK(slurp(dir + "/pwd") == dir + "\n");  // the working directory is HOME
}

TEST_CASE("a /file that is a symlink is refused, the target untouched") {
  const std::string dir = temp_dir();
  std::ofstream(dir + "/target") << "";
  REQUIRE(::symlink((dir + "/target").c_str(), (dir + "/link").c_str()) == 0);
  mta::LocalJob job;
  job.kind = mta::LocalJob::Kind::kFile;
  job.target = dir + "/link";
  job.body = "Subject: x\r\n\r\nbody\r\n";
  mta::LocalOutcome o = mta::run_local(job);
  CHECK(o.status == 'b');
  CHECK(slurp(dir + "/target").empty());
  job.target = dir + "/plain";
  CHECK(mta::run_local(job).status == 's');
  CHECK(slurp(dir + "/plain").find("\nbody\n") != std::string::npos);
}

// The message reaches the command on its standard input (Postfix local(8)), LF line
// ends, whatever fds the delivering process has open or closed.
TEST_CASE("a command reads the message on its standard input") {
  const std::string dir = temp_dir();
  mta::LocalJob job;
  job.kind = mta::LocalJob::Kind::kCommand;
  job.target = "cat > " + dir + "/body";
  job.recipient = "prog@example.test";
  job.body = "Subject: x\r\n\r\nbody\r\n";
  job.user = "someone";
  job.home = dir;
  job.time_limit_s = 10;
  REQUIRE(mta::run_local(job).status == 's');
  CHECK(slurp(dir + "/body") == "Subject: x\n\nbody\n");
  for (int fd : {0, 1, 2}) {
    SECTION("with fd " + std::to_string(fd) + " closed") {
      const int saved = ::dup(fd);
      ::close(fd);
      mta::LocalOutcome o = mta::run_local(job);
      ::dup2(saved, fd);
      ::close(saved);
      CHECK(o.status == 's');
      CHECK(slurp(dir + "/body") == "Subject: x\n\nbody\n");
    }
  }
}

// command_time_limit holds whatever the command does with its output: one that
// sends it elsewhere and keeps running is killed at the limit too (found by an
// independent review: it ran to its end and counted as delivered).
TEST_CASE("a command that closes its output is still killed at the time limit") {
  const std::string dir = temp_dir();
  mta::LocalJob job;
  job.kind = mta::LocalJob::Kind::kCommand;
  job.target = "exec >/dev/null 2>&1; sleep 30; touch " + dir + "/finished";
  job.recipient = "prog@example.test";
  job.body = "Subject: x\r\n\r\nbody\r\n";
  job.user = "someone";
  job.home = dir;
  job.time_limit_s = 1;
  mta::LocalOutcome o = mta::run_local(job);
  CHECK(o.status == 'd');
  CHECK(o.text.find("Command time limit exceeded") != std::string::npos);
  ::usleep(200 * 1000);
  struct stat st;
  CHECK(::stat((dir + "/finished").c_str(), &st) != 0);  // the whole group was killed
}
