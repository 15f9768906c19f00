#include "mda/delivery_helper.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
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

std::string helper_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\0') out += "\\0";
    else out += c;
  }
  return out;
}

std::string helper_unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char n = s[++i];
      out += n == 't' ? '\t' : n == 'n' ? '\n' : n == '0' ? '\0' : n;
    } else {
      out += s[i];
    }
  }
  return out;
}

namespace {

using Fields = std::map<std::string, std::string>;

std::optional<Fields> parse_packet(std::string_view packet, std::string_view verb) {
  std::vector<std::string> parts = common::split(packet, '\t');
  if (parts.empty() || parts[0] != verb) return std::nullopt;
  Fields f;
  for (size_t i = 1; i < parts.size(); ++i) {
    size_t eq = parts[i].find('=');
    if (eq == std::string::npos) return std::nullopt;
    f[parts[i].substr(0, eq)] = helper_unescape(std::string_view(parts[i]).substr(eq + 1));
  }
  return f;
}

std::string encode(std::string_view verb, const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out(verb);
  for (const auto& [k, v] : kv) out += "\t" + k + "=" + helper_escape(v);
  return out;
}

Outcome temp(std::string log) { return Outcome{Reply(451, "4.3.0", "Temporary internal failure"), std::move(log), "", 0}; }

std::string encode_outcome(const Outcome& o) {
  return encode("DONE", {{"code", std::to_string(o.reply.code)},
                         {"enhanced", o.reply.enhanced},
                         {"text", o.reply.lines.empty() ? "" : o.reply.lines[0]},
                         {"log", o.log},
                         {"mailbox", o.mailbox},
                         {"uid", std::to_string(o.uid)}});
}

Outcome decode_outcome(std::string_view packet) {
  std::optional<Fields> f = parse_packet(packet, "DONE");
  if (!f) return temp("delivery helper sent a malformed reply");
  Outcome o;
  std::optional<uint64_t> code = common::parse_u64((*f)["code"]);
  if (!code || *code < 200 || *code > 599) return temp("delivery helper sent a bad code");
  o.reply = Reply(static_cast<int>(*code), (*f)["enhanced"], (*f)["text"]);
  o.log = (*f)["log"];
  o.mailbox = (*f)["mailbox"];
  o.uid = static_cast<uint32_t>(common::parse_u64((*f)["uid"]).value_or(0));
  return o;
}

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

// One request, in a child that becomes the user.
Outcome serve(const common::Config& cfg, const Settings& settings, const Groups& groups, const Fields& f,
              common::UniqueFd msg_fd) {
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
  pid_t pid = ::fork();
  if (pid < 0) return temp(std::string("delivery helper: fork: ") + std::strerror(errno));
  if (pid == 0) {
    rd.reset();
    common::UserIds target;
    target.name = mu.name;
    target.uid = mu.uid;
    Outcome o;
    if (!groups.error.empty()) {
      o = temp("delivery helper: " + groups.error);
    } else if (common::Status s = become_user(target, gid, groups); !s) {
      o = temp("delivery helper: " + s.error().message);
    } else {
      Settings as_user = settings;
      as_user.locks.privileged_gid = groups.privileged;
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
    std::string packet = encode_outcome(o);
    (void)!::write(wr.get(), packet.data(), packet.size());
    ::_exit(0);
  }
  wr.reset();
  std::string got;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got.size() > kMaxHelperPacket) break;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got.empty()) return temp("delivery helper: the delivery process for " + mu.name + " died (status " + std::to_string(status) + ")");
  return decode_outcome(got);
}

[[noreturn]] void helper_main(const common::Config& cfg, common::UniqueFd sock) {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  ::signal(SIGCHLD, SIG_DFL);
  common::log::Channel log("lmtp");
  const Settings settings = Settings::from_config(cfg);
  const Groups groups = resolve_groups(cfg);
  if (!groups.error.empty()) log.error("delivery helper: %s", groups.error.c_str());
  while (true) {
    Result<std::pair<std::string, common::UniqueFd>> req = common::net::recv_fd(sock.get(), kMaxHelperPacket);
    if (!req) ::_exit(0);  // tern-mda is gone
    std::optional<Fields> f = parse_packet(req->first, "DELIVER");
    if (!f || !req->second || req->first.size() >= kMaxHelperPacket) {
      log.error("delivery helper: malformed request from tern-mda; exiting");
      ::_exit(1);
    }
    Outcome o = serve(cfg, settings, groups, *f, std::move(req->second));
    std::string packet = encode_outcome(o);
    if (packet.size() > kMaxHelperPacket) packet = encode_outcome(temp("delivery helper: reply too long"));
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
  return decode_outcome(r->first);
}

}  // namespace tern::mda
