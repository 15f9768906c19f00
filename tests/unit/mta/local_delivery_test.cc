// |command and /file deliveries: who they run as (local_helper.h), the command's
// environment, and files that are symlinks.
#include "mta/local_delivery.h"

#include <dirent.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/config.h"
#include "common/sockets.h"
#include "mta/local_helper.h"
#include "mta/recipients.h"

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

namespace {

// A helper as tern-master starts it, with one alias to a command in a root-owned
// table, for tests that play a compromised tern-mta on its socket.
std::unique_ptr<mta::LocalHelper> start_helper(const std::string& dir) {
  {
    std::ofstream a(dir + "/aliases");
    a << "prog: \"|cat > /dev/null\"\n";
  }
  common::Result<common::Config> cfg = common::Config::parse(
      "alias_maps = texthash:" + dir + "/aliases\nmail_owner = daemon\ndefault_privs = nobody\n"
      "mydestination = example.test\nmessage_size_limit = 1M\n",
      dir + "/tern.conf");
  REQUIRE(cfg);
  common::Result<std::unique_ptr<mta::LocalHelper>> h = mta::LocalHelper::start(*cfg);
  REQUIRE(h);
  return std::move(h).value();
}

// The helper's child processes (its job processes), from /proc.
int children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  int n = 0;
  std::string one;
  while (in >> one) ++n;
  return n;
}

// One job with a message fd of our choosing; the job's answer packet ("" if none).
std::string job_with_message_fd(mta::LocalHelper& h, int msg_fd) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  common::UniqueFd mine(sv[0]), theirs(sv[1]);
  REQUIRE(common::net::send_fd(h.socket_for_tests(), theirs.get(), "JOB"));
  theirs.reset();
  const std::string req = common::net::encode_packet(
      "DELIVER", {{"kind", "command"}, {"target", "cat > /dev/null"}, {"recipient", "prog@example.test"},
                  {"sender", "a@example.org"}, {"queue_id", "4Xq9Kp2TyrzK1"}});
  REQUIRE(common::net::send_fd(mine.get(), msg_fd, req));
  pollfd p{mine.get(), POLLIN, 0};
  if (::poll(&p, 1, 60000) <= 0) return "";
  auto reply = common::net::recv_fd(mine.get(), mta::kMaxLocalPacket);
  return reply ? reply->first : "";
}

}  // namespace

// Independent review, finding 3: the helper is root and its threat model is a
// compromised tern-mta. Each JOB forked a root process with no bound.
TEST_CASE("local helper: at most 64 root job processes at once, the next job waits") {
  if (::geteuid() != 0) {
    WARN("skipped: the helper's jobs become default_privs (nobody), which needs root");
    return;
  }
  const std::string dir = temp_dir();
  std::unique_ptr<mta::LocalHelper> h = start_helper(dir);
  std::vector<common::UniqueFd> held;  // job sockets we never write to
  for (int i = 0; i < 80; ++i) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    held.emplace_back(sv[0]);
    common::UniqueFd theirs(sv[1]);
    REQUIRE(common::net::send_fd(h->socket_for_tests(), theirs.get(), "JOB"));
  }
  int most = 0;
  for (int i = 0; i < 40; ++i) {  // 2 s for the helper to fork what it will
    most = std::max(most, children_of(h->pid_for_tests()));
    ::usleep(50 * 1000);
  }
  CHECK(most == 64);
  held.clear();  // the jobs see their socket close and exit; the rest are forked
  std::string reply;
  for (int i = 0; i < 100 && children_of(h->pid_for_tests()) > 0; ++i) ::usleep(50 * 1000);
  // The helper still serves.
  common::UniqueFd msg(::memfd_create("m", MFD_CLOEXEC));
  const std::string body = "Subject: x\r\n\r\nx\r\n";
  REQUIRE(::write(msg.get(), body.data(), body.size()) == static_cast<ssize_t>(body.size()));
  reply = job_with_message_fd(*h, msg.get());
  CHECK(reply.rfind("DONE\tstatus=s", 0) == 0);
  INFO(reply);
}

TEST_CASE("local helper: the message fd must be a plain file within message_size_limit") {
  if (::geteuid() != 0) {
    WARN("skipped: the helper's jobs become default_privs (nobody), which needs root");
    return;
  }
  const std::string dir = temp_dir();
  std::unique_ptr<mta::LocalHelper> h = start_helper(dir);
  // A sparse memfd of 64 GiB: read as root into memory by the old code.
  common::UniqueFd huge(::memfd_create("huge", MFD_CLOEXEC));
  REQUIRE(::ftruncate(huge.get(), off_t{64} << 30) == 0);
  std::string reply = job_with_message_fd(*h, huge.get());
  INFO(reply);
  CHECK(reply.rfind("DONE\tstatus=b\tdsn=5.3.4", 0) == 0);
  // A pipe (a read that never ends, or an unbounded stream).
  int pfd[2];
  REQUIRE(::pipe2(pfd, O_CLOEXEC) == 0);
  common::UniqueFd rd(pfd[0]), wr(pfd[1]);
  reply = job_with_message_fd(*h, rd.get());
  INFO(reply);
  CHECK(reply.rfind("DONE\tstatus=d\tdsn=4.3.0", 0) == 0);
  CHECK(reply.find("not a plain file") != std::string::npos);
}

// Independent review, finding 7: :include: files were read as root. Postfix
// local(8) opens them with the rights of the entry that names them: the table's
// owner, default_privs for root's tables; an include its owner could not read is
// not read for it.
TEST_CASE("local helper: :include: files are opened as the naming table's owner, default_privs for root's") {
  if (::geteuid() != 0) {
    WARN("skipped: opening as default_privs needs root");
    return;
  }
  const std::string dir = temp_dir();
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  {
    std::ofstream a(dir + "/aliases");
    a << "secret: :include:" << dir << "/secret-list\nopen: :include:" << dir << "/open-list\n";
    std::ofstream(dir + "/secret-list") << "\"|/bin/echo run as the include's owner\"\n";
    std::ofstream(dir + "/open-list") << "bob@example.org\n";
  }
  REQUIRE(::chmod((dir + "/secret-list").c_str(), 0600) == 0);  // root's alone
  REQUIRE(::chmod((dir + "/open-list").c_str(), 0644) == 0);
  common::Result<common::Config> cfg = common::Config::parse(
      "alias_maps = texthash:" + dir + "/aliases\nmydestination = example.test\ndefault_privs = nobody\n"
      "allow_mail_to_commands = alias, include\n",
      dir + "/tern.conf");
  REQUIRE(cfg);
  auto tables = mta::RecipientTables::from_config(*cfg);
  REQUIRE(tables);
  auto secret = (*tables)->expand("secret@example.test");
  REQUIRE(secret);
  REQUIRE(secret->size() == 1);
  CHECK((*secret)[0].kind == mta::Destination::Kind::kError);
  CHECK((*secret)[0].value.find("Permission denied") != std::string::npos);
  INFO((*secret)[0].value);
  auto open = (*tables)->expand("open@example.test");
  REQUIRE(open);
  REQUIRE(open->size() == 1);
  CHECK((*open)[0].kind == mta::Destination::Kind::kAddress);
  CHECK((*open)[0].value == "bob@example.org");
}
