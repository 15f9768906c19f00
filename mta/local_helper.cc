#include "mta/local_helper.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <optional>

#include "common/log.h"
#include "common/privilege.h"
#include "common/sockets.h"
#include "common/text.h"
#include "mta/recipients.h"

namespace tern::mta {

using common::ErrorKind;
using common::Result;
using common::net::encode_packet;
using common::net::parse_packet;
using common::net::PacketFields;

namespace {

// Job processes alive at once (each is root until it becomes the table owner).
constexpr int kMaxJobs = 64;
// How long a job waits for its request after tern-mta handed it the socket.
constexpr int kJobRequestTimeoutMs = 60 * 1000;

LocalOutcome outcome(char st, const char* dsn, std::string text) { return local_outcome(st, dsn, std::move(text)); }

std::string encode_outcome(const LocalOutcome& o) {
  return encode_packet("DONE", {{"status", std::string(1, o.status)}, {"dsn", o.dsn}, {"text", o.text.substr(0, 1000)}});
}

// The job process runs as the alias owner, who may be running a command that
// hostile mail took over: its answer is checked like any peer's.
LocalOutcome decode_outcome(std::string_view packet) {
  std::optional<PacketFields> f = parse_packet(packet, "DONE");
  if (!f) return outcome('d', "4.3.0", "local helper: malformed reply");
  const std::string& st = (*f)["status"];
  const std::string& dsn = (*f)["dsn"];
  const bool dsn_ok = dsn.size() >= 5 && dsn.size() <= 16 && dsn[1] == '.' &&
                      dsn.find_first_not_of("0123456789.") == std::string::npos;
  if (st.size() != 1 || std::string_view("sdb").find(st[0]) == std::string_view::npos || !dsn_ok ||
      dsn[0] != (st[0] == 's' ? '2' : st[0] == 'd' ? '4' : '5')) {
    return outcome('d', "4.3.0", "local helper: malformed reply");
  }
  LocalOutcome o;
  o.status = st[0];
  o.dsn = dsn;
  o.text = common::log_escape((*f)["text"], 1000);
  return o;
}

// Settings the helper resolves once, as root, before any job.
struct HelperIds {
  uid_t mail_owner = static_cast<uid_t>(-1);
  uid_t default_privs = static_cast<uid_t>(-1);
  std::string error;  // mail_owner unknown: every job is refused with this
};

HelperIds resolve_ids(const common::Config& cfg) {
  HelperIds ids;
  Result<common::UserIds> owner = common::lookup_user(cfg.str("mail_owner"));
  if (!owner) ids.error = "mail_owner: " + owner.error().message;
  else ids.mail_owner = owner->uid;
  // An unknown default_privs refuses only the tables root owns (alias_delivery_uid).
  Result<common::UserIds> dp = common::lookup_user(cfg.str("default_privs"));
  if (!dp) common::log::logf(common::log::Level::kError, "local", "default_privs: %s", dp.error().message.c_str());
  else ids.default_privs = dp->uid;
  return ids;
}

// Read as root from an fd tern-mta chose, so bounded: a plain file or memfd no
// larger than message_size_limit plus room for the headers added after it was
// accepted (a sparse memfd of 64 GB would otherwise be allocated as root).
Result<std::string> read_message(int fd, int64_t size_limit) {
  struct stat st;
  if (::fstat(fd, &st) < 0) return common::errno_error("fstat message", errno);
  if (!S_ISREG(st.st_mode) || st.st_size < 0) return common::make_error(common::ErrorKind::kPerm, "message is not a plain file");
  constexpr int64_t kHeaderRoom = 1 << 20;
  if (size_limit > 0 && st.st_size > size_limit + kHeaderRoom) {
    return common::make_error(common::ErrorKind::kTooBig, "message of " + std::to_string(st.st_size) +
                                                              " bytes is over message_size_limit");
  }
  std::string body(static_cast<size_t>(st.st_size), '\0');
  size_t off = 0;
  while (off < body.size()) {
    ssize_t n = ::pread(fd, body.data() + off, body.size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return common::errno_error("read message", n < 0 ? errno : EIO);
    off += static_cast<size_t>(n);
  }
  return body;
}

// One job, in its own process: root until it becomes the owner.
LocalOutcome run_job(const common::Config& cfg, const HelperIds& ids, const PacketFields& f, int msg_fd) {
  auto get = [&](const char* k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
  };
  const std::string kind = get("kind");
  if (kind != "command" && kind != "file") return outcome('d', "4.3.0", "local helper: malformed request");
  LocalJob job;
  job.kind = kind == "command" ? LocalJob::Kind::kCommand : LocalJob::Kind::kFile;
  job.target = get("target");
  job.recipient = get("recipient");
  job.sender = get("sender");
  job.queue_id = get("queue_id");
  job.time_limit_s = static_cast<unsigned>(cfg.seconds("command_time_limit"));
  const std::string what = std::string(kind == "command" ? "command " : "file ") + common::log_escape(job.target, 200);
  if (!ids.error.empty()) {
    common::log::logf(common::log::Level::kWarning, "local", "%s: not delivering to %s: %s", job.queue_id.c_str(),
                      what.c_str(), ids.error.c_str());
    return outcome('d', "4.3.0", "local helper: " + ids.error);
  }
  // The owner comes from our own expansion of the recipient, never from tern-mta.
  Result<std::unique_ptr<RecipientTables>> tables = RecipientTables::from_config(cfg);
  if (!tables) return outcome('d', "4.3.0", "local helper: " + tables.error().message);
  job.delimiters = (*tables)->delimiters();
  Result<std::vector<Destination>> dests = (*tables)->expand(job.recipient);
  if (!dests) return outcome('d', "4.3.0", "local helper: alias lookup: " + dests.error().message);
  const Destination::Kind want = job.kind == LocalJob::Kind::kCommand ? Destination::Kind::kCommand : Destination::Kind::kFile;
  std::optional<uid_t> owner;
  for (const Destination& d : *dests) {
    if (d.kind == want && d.value == job.target) {
      owner = d.owner;
      break;
    }
  }
  if (!owner) {
    common::log::logf(common::log::Level::kWarning, "local",
                      "%s: to=<%s>: %s is not (or no longer) what alias_maps expand this recipient to; not delivering",
                      job.queue_id.c_str(), common::log_escape(job.recipient, 300).c_str(), what.c_str());
    return outcome('d', "4.3.0", "the alias tables no longer name this " + std::string(kind));
  }
  Result<uid_t> uid = alias_delivery_uid(*owner, ids.default_privs, ids.mail_owner);
  if (!uid) {
    common::log::logf(common::log::Level::kWarning, "local", "%s: to=<%s>: refusing to deliver to %s: %s",
                      job.queue_id.c_str(), common::log_escape(job.recipient, 300).c_str(), what.c_str(),
                      uid.error().message.c_str());
    return outcome('d', "4.7.0", "mail to " + std::string(kind) + " refused: " + uid.error().message);
  }
  Result<common::UserIds> user = common::lookup_uid(*uid);
  if (!user) return outcome('d', "4.3.0", "local helper: the alias table owner: " + user.error().message);
  Result<std::string> body = read_message(msg_fd, cfg.bytes("message_size_limit"));
  if (!body && body.error().kind == common::ErrorKind::kTooBig) {
    return outcome('b', "5.3.4", "local helper: " + body.error().message);
  }
  if (!body) return outcome('d', "4.3.0", "local helper: " + body.error().message);
  job.body = std::move(body).value();
  ::umask(077);
  if (common::Status s = common::drop_privileges(*user, user->gid); !s) {
    return outcome('d', "4.3.0", "local helper: " + s.error().message);
  }
  if (::geteuid() == 0 || ::getegid() == 0) return outcome('d', "4.3.0", "local helper: still root; not delivering");
  job.user = user->name;
  job.home = user->home;
  job.shell = user->shell;
  return run_local(job);
}

// The job process: reads its one request, answers it, exits.
[[noreturn]] void job_main(const common::Config& cfg, const HelperIds& ids, common::UniqueFd sock) {
  ::signal(SIGCHLD, SIG_DFL);  // run_local waits for its command
  std::vector<int> keep = common::log::fds();
  keep.push_back(sock.get());
  common::close_fds_except(std::move(keep));
  // 0, 1 and 2 open (on /dev/null when they were not), so no pipe or message fd
  // of this job lands on them.
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      int n = ::open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) {
        ::dup2(n, fd);
        ::close(n);
      }
    }
  }
  // tern-mta sends the request right after the socket; a job socket it never
  // writes to must not keep a root process forever.
  pollfd p{sock.get(), POLLIN, 0};
  int ready = 0;
  do {
    ready = ::poll(&p, 1, kJobRequestTimeoutMs);
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) {
    common::log::logf(common::log::Level::kError, "local", "local helper: no request from tern-mta within %d s",
                      kJobRequestTimeoutMs / 1000);
    ::_exit(1);
  }
  Result<std::pair<std::string, common::UniqueFd>> req = common::net::recv_fd(sock.get(), kMaxLocalPacket);
  if (!req) ::_exit(0);
  std::optional<PacketFields> f = parse_packet(req->first, "DELIVER");
  if (!f || !req->second) {
    common::log::logf(common::log::Level::kError, "local", "local helper: malformed request from tern-mta");
    ::_exit(1);
  }
  LocalOutcome o = run_job(cfg, ids, *f, req->second.get());
  (void)common::net::send_fd(sock.get(), -1, encode_outcome(o));
  ::_exit(0);
}

[[noreturn]] void helper_main(const common::Config& cfg, common::UniqueFd sock) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() == 1) ::_exit(0);
  // Nothing of tern-mta's but the socket and the log: no listener, no inherited fd.
  std::vector<int> keep = common::log::fds();
  keep.push_back(sock.get());
  common::close_fds_except(std::move(keep));
  // Job processes are counted and reaped here: at most kMaxJobs at once, so a
  // compromised tern-mta cannot fill the process table with root processes; past
  // that, the next job waits for one to end (each is bounded by its time limits).
  ::signal(SIGCHLD, SIG_DFL);
  int live = 0;
  const HelperIds ids = resolve_ids(cfg);
  if (!ids.error.empty()) common::log::logf(common::log::Level::kError, "local", "local helper: %s", ids.error.c_str());
  while (true) {
    Result<std::pair<std::string, common::UniqueFd>> req = common::net::recv_fd(sock.get(), kMaxLocalPacket);
    if (!req) ::_exit(0);  // tern-mta is gone
    if (req->first != "JOB" || !req->second) {
      common::log::logf(common::log::Level::kError, "local", "local helper: malformed request from tern-mta; exiting");
      ::_exit(1);
    }
    while (live > 0 && ::waitpid(-1, nullptr, WNOHANG) > 0) --live;
    while (live >= kMaxJobs) {
      if (::waitpid(-1, nullptr, 0) > 0) --live;
      else if (errno != EINTR) live = 0;  // ECHILD: none left
    }
    pid_t pid = ::fork();
    if (pid == 0) {
      sock.reset();
      job_main(cfg, ids, std::move(req->second));
    }
    if (pid > 0) ++live;
    if (pid < 0) {
      common::log::logf(common::log::Level::kWarning, "local", "local helper: fork: %s", std::strerror(errno));
    }
  }
}

}  // namespace

Result<uid_t> alias_delivery_uid(uid_t table_owner, uid_t default_privs, uid_t mail_owner) {
  constexpr uid_t kUnknown = static_cast<uid_t>(-1);
  if (table_owner == kUnknown) return common::make_error(ErrorKind::kDenied, "the alias table's owner is unknown");
  if (table_owner == mail_owner) {
    return common::make_error(ErrorKind::kDenied, "the alias table is owned by mail_owner (uid " +
                                                      std::to_string(mail_owner) +
                                                      "), who must not choose what runs; make root its owner");
  }
  if (table_owner != 0) return table_owner;
  if (default_privs == 0 || default_privs == kUnknown || default_privs == mail_owner) {
    return common::make_error(ErrorKind::kDenied, "root owns the alias table and default_privs (uid " +
                                                      std::to_string(default_privs) +
                                                      ") is root or mail_owner; set default_privs = nobody");
  }
  return default_privs;
}

Result<std::unique_ptr<LocalHelper>> LocalHelper::start(const common::Config& cfg) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return common::errno_error("socketpair", errno);
  common::UniqueFd ours(sv[0]), theirs(sv[1]);
  pid_t pid = ::fork();
  if (pid < 0) return common::errno_error("fork", errno);
  if (pid == 0) {
    ours.reset();
    helper_main(cfg, std::move(theirs));
  }
  return std::unique_ptr<LocalHelper>(new LocalHelper(std::move(ours), pid));
}

LocalHelper::~LocalHelper() {
  sock_.reset();  // the helper sees EOF and exits
  if (pid_ > 0) ::waitpid(pid_, nullptr, WNOHANG);
}

LocalOutcome LocalHelper::deliver(const LocalJob& job) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    return outcome('d', "4.3.0", std::string("local helper: socketpair: ") + std::strerror(errno));
  }
  common::UniqueFd mine(sv[0]), theirs(sv[1]);
  common::UniqueFd msg(::memfd_create("tern-local-message", MFD_CLOEXEC));
  if (!msg) return outcome('d', "4.3.0", std::string("local helper: memfd_create: ") + std::strerror(errno));
  for (size_t off = 0; off < job.body.size();) {
    ssize_t n = ::write(msg.get(), job.body.data() + off, job.body.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return outcome('d', "4.3.0", std::string("local helper: write message: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  std::string packet = encode_packet("DELIVER", {{"kind", job.kind == LocalJob::Kind::kCommand ? "command" : "file"},
                                                 {"target", job.target},
                                                 {"recipient", job.recipient},
                                                 {"sender", job.sender},
                                                 {"queue_id", job.queue_id}});
  if (packet.size() >= kMaxLocalPacket) return outcome('b', "5.3.0", "local delivery request too long");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (common::Status s = common::net::send_fd(sock_.get(), theirs.get(), "JOB"); !s) {
      return outcome('d', "4.3.0", "local helper: " + s.error().message);
    }
  }
  theirs.reset();
  if (common::Status s = common::net::send_fd(mine.get(), msg.get(), packet); !s) {
    return outcome('d', "4.3.0", "local helper: " + s.error().message);
  }
  // The job process enforces command_time_limit itself; this bound is for a job
  // process that never answers (killed, or a file on a hung file system).
  const int64_t limit_ms = (static_cast<int64_t>(job.time_limit_s) + 60) * 1000;
  pollfd p{mine.get(), POLLIN, 0};
  int r;
  do {
    r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(limit_ms, INT32_MAX)));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return outcome('d', "4.3.0", "local helper: no answer within command_time_limit");
  Result<std::pair<std::string, common::UniqueFd>> reply = common::net::recv_fd(mine.get(), kMaxLocalPacket);
  if (!reply || reply->first.empty()) {
    return outcome('d', "4.3.0", "local helper: the delivery process died without an answer");
  }
  return decode_outcome(reply->first);
}

}  // namespace tern::mta
