#include "mda/delivery_helper.h"

#include <dirent.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <cstring>
#include <algorithm>
#include <map>
#include <optional>

#include "common/log.h"
#include "common/loop.h"
#include "common/privilege.h"
#include "common/sockets.h"
#include "common/text.h"
#include "mda/userdb.h"

namespace tern::mda {

using common::ErrorKind;
using common::Result;
using common::smtp::Reply;

namespace {

using Fields = common::net::PacketFields;
using common::net::parse_packet;

std::string encode(std::string_view verb, const std::vector<std::pair<std::string, std::string>>& kv) {
  return common::net::encode_packet(verb, kv);
}

Outcome temp(std::string log) { return Outcome{Reply(451, "4.3.0", "Temporary internal failure"), std::move(log), "", 0}; }

}  // namespace

std::string encode_helper_outcome(const Outcome& o) {
  return encode("DONE", {{"code", std::to_string(o.reply.code)},
                         {"enhanced", o.reply.enhanced},
                         {"text", o.reply.lines.empty() ? "" : o.reply.lines[0]},
                         {"log", o.log},
                         {"mailbox", o.mailbox},
                         {"uid", std::to_string(o.uid)}});
}

Outcome decode_helper_outcome(std::string_view packet) {
  std::optional<Fields> f = parse_packet(packet, "DONE");
  if (!f) return temp("delivery helper sent a malformed reply");
  Outcome o;
  std::optional<uint64_t> code = common::parse_u64((*f)["code"]);
  if (!code || *code < 200 || *code > 599) return temp("delivery helper sent a bad code");
  // The enhanced code goes into the LMTP reply as it is (Reply::format() cleans only
  // the text): one the child made up could end the line and forge the replies of
  // the recipients after it.
  const std::string& enhanced = (*f)["enhanced"];
  if (!enhanced.empty() && !common::smtp::valid_enhanced(enhanced, static_cast<int>(*code))) {
    return temp("delivery helper sent a bad enhanced status code");
  }
  std::optional<uint64_t> uid = common::parse_u64((*f)["uid"]);
  if (!uid || *uid > UINT32_MAX) return temp("delivery helper sent a bad uid");
  o.reply = Reply(static_cast<int>(*code), enhanced, (*f)["text"]);
  o.log = (*f)["log"];
  o.mailbox = (*f)["mailbox"];
  o.uid = static_cast<uint32_t>(*uid);
  return o;
}

namespace {

Result<MailUser> lookup_user(const common::Config& cfg, const std::string& user) {
  common::ev::Loop loop;
  std::optional<Result<MailUser>> out;
  {
    UserdbLookup db(loop, cfg.str("base_dir") + "/auth-userdb");
    db.lookup(user, [&](Result<MailUser> r) {
      out = std::move(r);
      loop.stop();
    });
    loop.run();
  }
  if (!out) return common::make_error(ErrorKind::kTemp, "no answer from tern-authd");
  return std::move(*out);
}

constexpr gid_t kNoGid = static_cast<gid_t>(-1);

// mail_privileged_group and mail_access_groups, resolved once by the helper.
struct Groups {
  gid_t privileged = kNoGid;
  std::vector<gid_t> access;
  std::string error;  // a group that does not exist: every delivery fails with this
};

Groups resolve_groups(const common::Config& cfg) {
  Groups g;
  if (const std::string name = cfg.str("mail_privileged_group"); !name.empty()) {
    Result<gid_t> gid = common::lookup_group(name);
    if (!gid) g.error = "mail_privileged_group: " + gid.error().message;
    else if (*gid == 0) g.error = "mail_privileged_group: refusing group 0 (root)";
    else g.privileged = *gid;
  }
  for (const std::string& name : cfg.list("mail_access_groups")) {
    Result<gid_t> gid = common::lookup_group(name);
    if (!gid) g.error = "mail_access_groups: " + gid.error().message;
    else if (*gid == 0) g.error = "mail_access_groups: refusing group 0 (root)";
    else g.access.push_back(*gid);
  }
  return g;
}

// Becomes the user for good, as common::drop_privileges() does, except that the
// mail_access_groups stay as supplementary groups and mail_privileged_group becomes
// the saved set-group-ID: never the effective gid, except for the moments common/
// mbox.cc switches to it to create the spool file or a dotlock (Dovecot keeps it the
// same way; a process that is not root could not add a supplementary group later,
// and one it held as supplementary it could not give up). Verified afterwards.
common::Status become_user(const common::UserIds& target, gid_t gid, const Groups& groups) {
  if (groups.privileged == kNoGid && groups.access.empty()) return common::drop_privileges(target, gid);
  if (target.uid == 0) return common::make_error(ErrorKind::kDenied, "refusing to drop privileges to root");
  std::vector<gid_t> list{gid};
  list.insert(list.end(), groups.access.begin(), groups.access.end());
  std::sort(list.begin(), list.end());
  list.erase(std::unique(list.begin(), list.end()), list.end());
  const gid_t saved = groups.privileged == kNoGid ? gid : groups.privileged;
  if (::setgroups(list.size(), list.data()) < 0) return common::errno_error("setgroups", errno);
  if (::setresgid(gid, gid, saved) < 0) return common::errno_error("setresgid", errno);
  if (::setresuid(target.uid, target.uid, target.uid) < 0) return common::errno_error("setuid " + target.name, errno);
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  ::getresuid(&ru, &eu, &su);
  ::getresgid(&rg, &eg, &sg);
  std::vector<gid_t> now(static_cast<size_t>(std::max(::getgroups(0, nullptr), 0)));
  if (!now.empty() && ::getgroups(static_cast<int>(now.size()), now.data()) < 0) now.clear();
  std::sort(now.begin(), now.end());  // the kernel keeps the list sorted, not in our order
  if (ru != target.uid || eu != target.uid || su != target.uid || rg != gid || eg != gid || sg != saved ||
      now != list) {
    return common::make_error(ErrorKind::kDenied, "privilege drop failed: ids are not the user's");
  }
  if (::setuid(0) == 0 || ::seteuid(0) == 0 || ::setegid(0) == 0) {
    return common::make_error(ErrorKind::kDenied, "privilege drop failed: root can be regained");
  }
  return {};
}

uint64_t monotonic_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

// Reads the child's reply until EOF, at most kMaxHelperPacket bytes, until
// `deadline_ms` (monotonic). False when the time ran out.
bool read_reply(int fd, uint64_t deadline_ms, std::string& got) {
  char buf[4096];
  while (true) {
    const uint64_t now = monotonic_ms();
    if (now >= deadline_ms) return false;
    pollfd p{fd, POLLIN, 0};
    const uint64_t wait = deadline_ms - now;
    int r = ::poll(&p, 1, static_cast<int>(std::min<uint64_t>(wait, 60000)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return true;  // nothing more to read; the caller reports what it has
    if (r == 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() > kMaxHelperPacket) return true;
  }
}

// One request, in a child that becomes the user.
Outcome serve(const common::Config& cfg, const Settings& settings, const Groups& groups, uint64_t time_limit_s,
              const Fields& f, common::UniqueFd msg_fd) {
  auto get = [&](const char* k) {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
  };
  Result<MailUser> u = lookup_user(cfg, get("user"));
  if (!u) return temp("delivery helper: user lookup for " + common::log_escape(get("user")) + ": " + u.error().message);
  const MailUser& mu = *u;
  if (!mu.has_uid) return temp("delivery helper: the userdb entry of " + mu.name + " has no uid");
  // A gid of 0 from the userdb is refused, not taken as "none" (root's group would
  // open whatever group root can read).
  const gid_t gid = mu.has_gid ? mu.gid : static_cast<gid_t>(mu.uid);
  if (std::string why = settings.ids.refuse(mu.uid, gid); !why.empty()) {
    return temp("delivery helper: user " + mu.name + ": " + why + "; not delivering");
  }
  std::optional<uint64_t> size = common::parse_u64(get("size"));
  if (!size) return temp("delivery helper: malformed request");
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) < 0) return temp(std::string("delivery helper: pipe: ") + std::strerror(errno));
  common::UniqueFd rd(pfd[0]), wr(pfd[1]);
  // The privileged group only for a location that writes outside the user's home
  // (the spool); for everything else the child never holds it, not even as saved gid.
  Groups child_groups = groups;
  Result<Location> loc = parse_location(mu.mail.empty() ? settings.mail_location : mu.mail, mu);
  if (!loc || !writes_outside_home(*loc, mu)) child_groups.privileged = kNoGid;
  const pid_t helper = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return temp(std::string("delivery helper: fork: ") + std::strerror(errno));
  if (pid == 0) {
    rd.reset();
    std::vector<int> keep = common::log::fds();
    keep.push_back(wr.get());
    keep.push_back(msg_fd.get());
    common::close_fds_except(std::move(keep));
    common::UserIds target;
    target.name = mu.name;
    target.uid = mu.uid;
    Outcome o;
    if (!groups.error.empty()) {
      o = temp("delivery helper: " + groups.error);
    } else if (common::Status s = become_user(target, gid, child_groups); !s) {
      o = temp("delivery helper: " + s.error().message);
    } else {
      // Set after the uid change, which clears it; a helper gone meanwhile is seen
      // by the parent check.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != helper) ::_exit(1);
      Settings as_user = settings;
      as_user.locks.privileged_gid = child_groups.privileged;
      MessageSpool body = MessageSpool::from_fd(std::move(msg_fd), *size);
      Envelope env;
      env.sender = get("sender");
      env.return_path = get("return_path") == "1";
      env.recipient = get("recipient");
      env.folder = get("folder");
      env.received = get("received");
      env.arrival = static_cast<time_t>(common::parse_u64(get("arrival")).value_or(0));
      o = deliver(as_user, mu, env, body, nullptr);
    }
    std::string packet = encode_helper_outcome(o);
    (void)!::write(wr.get(), packet.data(), packet.size());
    ::_exit(0);
  }
  wr.reset();
  std::string got;
  const bool in_time = read_reply(rd.get(), monotonic_ms() + time_limit_s * 1000, got);
  if (!in_time) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!in_time) {
    // Killed as Postfix's local(8) is after its time limit: an mbox append cut off
    // here is not truncated back (mbox.cc does that only when it lives to), and
    // its dotlock stays until mbox_dotlock_change_timeout makes it stale.
    return temp("delivery helper: delivery for " + mu.name + " took longer than local_time_limit (" +
                std::to_string(time_limit_s) + "s); killed process " + std::to_string(pid));
  }
  if (got.empty()) return temp("delivery helper: the delivery process for " + mu.name + " died (status " + std::to_string(status) + ")");
  return decode_helper_outcome(got);
}

[[noreturn]] void helper_main(const common::Config& cfg, common::UniqueFd sock) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  ::signal(SIGCHLD, SIG_DFL);
  // No socket of tern-mda's stays open in the root process (listeners, connections):
  // only the log's and the one to tern-mda (review, finding 10). libuv's own pipes
  // and eventfds stay: its process-wide signal pipe is made once, and the user
  // lookup below runs a loop of its own. The delivery children close everything.
  std::vector<int> keep = common::log::fds();
  keep.push_back(sock.get());
  if (DIR* d = ::opendir("/proc/self/fd")) {
    std::vector<int> sockets;
    while (dirent* e = ::readdir(d)) {
      std::optional<uint64_t> n = common::parse_u64(e->d_name);
      if (!n || static_cast<int>(*n) == ::dirfd(d)) continue;
      const int fd = static_cast<int>(*n);
      struct stat st;
      if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && std::find(keep.begin(), keep.end(), fd) == keep.end()) {
        sockets.push_back(fd);
      }
    }
    ::closedir(d);
    for (int fd : sockets) ::close(fd);
  }
  common::log::Channel log("lmtp");
  const Settings settings = Settings::from_config(cfg);
  const Groups groups = resolve_groups(cfg);
  const uint64_t time_limit_s = static_cast<uint64_t>(cfg.seconds("local_time_limit"));
  if (!groups.error.empty()) log.error("delivery helper: %s", groups.error.c_str());
  while (true) {
    Result<std::pair<std::string, common::UniqueFd>> req = common::net::recv_fd(sock.get(), kMaxHelperPacket);
    if (!req) ::_exit(0);  // tern-mda is gone
    std::optional<Fields> f = parse_packet(req->first, "DELIVER");
    if (!f || !req->second || req->first.size() >= kMaxHelperPacket) {
      log.error("delivery helper: malformed request from tern-mda; exiting");
      ::_exit(1);
    }
    Outcome o = serve(cfg, settings, groups, time_limit_s, *f, std::move(req->second));
    std::string packet = encode_helper_outcome(o);
    if (packet.size() > kMaxHelperPacket) packet = encode_helper_outcome(temp("delivery helper: reply too long"));
    if (!common::net::send_fd(sock.get(), -1, packet)) ::_exit(0);
  }
}

}  // namespace

Result<std::unique_ptr<DeliveryHelper>> DeliveryHelper::start(const common::Config& cfg, const std::vector<int>& close_fds) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return common::errno_error("socketpair", errno);
  common::UniqueFd ours(sv[0]), theirs(sv[1]);
  pid_t pid = ::fork();
  if (pid < 0) return common::errno_error("fork", errno);
  if (pid == 0) {
    ours.reset();
    for (int fd : close_fds) ::close(fd);  // no network socket in the privileged process
    helper_main(cfg, std::move(theirs));
  }
  return std::unique_ptr<DeliveryHelper>(new DeliveryHelper(std::move(ours), pid));
}

DeliveryHelper::~DeliveryHelper() {
  sock_.reset();  // the helper sees EOF and exits
  if (pid_ > 0) ::waitpid(pid_, nullptr, WNOHANG);
}

Outcome DeliveryHelper::deliver(const DeliveryJob& job, const MessageSpool& body) {
  Result<common::UniqueFd> fd = body.share_fd();
  if (!fd) return temp("cannot hand the message to the delivery helper: " + fd.error().message);
  const Envelope& e = job.envelope;
  std::string packet = encode("DELIVER", {{"user", job.user.name},
                                          {"size", std::to_string(body.size())},
                                          {"sender", e.sender},
                                          {"return_path", e.return_path ? "1" : "0"},
                                          {"recipient", e.recipient},
                                          {"folder", e.folder},
                                          {"received", e.received},
                                          {"arrival", std::to_string(static_cast<uint64_t>(e.arrival))}});
  if (packet.size() >= kMaxHelperPacket) return temp("request for the delivery helper too long");
  std::lock_guard<std::mutex> lk(mu_);
  if (common::Status s = common::net::send_fd(sock_.get(), fd->get(), packet); !s) {
    return temp("delivery helper: " + s.error().message);
  }
  Result<std::pair<std::string, common::UniqueFd>> r = common::net::recv_fd(sock_.get(), kMaxHelperPacket);
  if (!r) return temp("delivery helper: " + r.error().message);
  return decode_helper_outcome(r->first);
}

}  // namespace tern::mda
