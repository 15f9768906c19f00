#include "authd/userdb_server.h"

#include <unistd.h>

#include <algorithm>

#include "common/auth_protocol.h"
#include "common/log.h"
#include "common/text.h"

namespace tern::authd {

namespace ap = common::auth_protocol;
using common::ErrorKind;

namespace {
const common::log::Channel kLog("auth");
// A userdb client that says nothing for this long is dropped.
constexpr uint64_t kIdleTimeoutMs = 10 * 60 * 1000;
// LIST answers at most this many users (a mask narrows it).
constexpr size_t kMaxListUsers = 1000000;
}  // namespace

class UserdbServer::Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(UserdbServer& server, std::shared_ptr<common::net::Connection> c)
      : server_(server), conn_(std::move(c)), reader_(ap::kMaxLineLength) {}

  void start() {
    std::weak_ptr<Conn> weak = shared_from_this();
    common::net::Connection::Callbacks cb;
    cb.on_data = [weak](std::string_view d) {
      if (auto self = weak.lock()) self->on_data(d);
    };
    cb.on_close = [weak](common::net::CloseReason, const std::string&) {
      if (auto self = weak.lock()) self->server_.conns_.erase(self.get());
    };
    conn_->start(std::move(cb));
    conn_->write(ap::make_line({"VERSION", std::to_string(ap::kMasterMajor), std::to_string(ap::kMasterMinor)}) +
                 ap::make_line({"SPID", std::to_string(::getpid())}));
  }

 private:
  void on_data(std::string_view d) {
    reader_.feed(d);
    common::LineReader::Line line;
    for (;;) {
      if (conn_->closing()) return;
      common::LineReader::Status st = reader_.next(line);
      if (st == common::LineReader::Status::kNeedMore) return;
      if (st == common::LineReader::Status::kTooLong) {
        disconnect("line too long");
        return;
      }
      handle(line.text);
    }
  }

  void disconnect(const std::string& why) {
    kLog.warning("userdb client (uid %d, pid %d): %s; disconnecting", static_cast<int>(conn_->peer().uid),
                 static_cast<int>(conn_->peer().pid), why.c_str());
    conn_->close();
  }

  void reply(const std::string& s) {
    if (!conn_->closing()) conn_->write(s);
  }

  void handle(std::string_view text) {
    ap::ParsedLine p = ap::parse_line(text);
    if (!p.ok) {
      disconnect(std::string("malformed line: ") + ap::line_error_text(p.error));
      return;
    }
    const std::string& cmd = p.line.command;
    const auto& a = p.line.args;
    if (!got_version_) {
      if (cmd != "VERSION" || a.size() < 2 || a[0] != std::to_string(ap::kMasterMajor)) {
        disconnect("expected VERSION\t" + std::to_string(ap::kMasterMajor) + " first, got " + common::log_escape(cmd, 32));
        return;
      }
      got_version_ = true;
      return;
    }
    if (cmd == "VERSION") {
      disconnect("VERSION sent twice");
      return;
    }
    if (cmd != "USER" && cmd != "PASS" && cmd != "REQUEST" && cmd != "LIST" && cmd != "CPID") {
      disconnect("unknown command " + common::log_escape(cmd, 32));
      return;
    }
    if (cmd == "CPID") return;  // Dovecot's master clients may send it; nothing to do
    if (a.empty()) {
      disconnect(cmd + " without an id");
      return;
    }
    std::optional<ap::RequestId> rid = ap::parse_request_id(a[0]);
    if (!rid) {
      disconnect(cmd + " with an invalid id");
      return;
    }
    if (in_flight_ >= ap::kMaxUserdbRequests) {
      disconnect("too many requests in flight");
      return;
    }
    const std::string id = a[0];
    if (cmd == "USER" || cmd == "PASS") {
      if (a.size() < 2 || !ap::valid_user_name(a[1])) {
        // A name no database can hold (a space, '/', a quote...) is not a user:
        // NOTFOUND, which callers turn into a permanent "user unknown". FAIL means
        // a temporary lookup failure, and tern-mta would answer 451 and make
        // the sender retry for days.
        reply(ap::make_line({"NOTFOUND", id}));
        return;
      }
      ++in_flight_;
      std::weak_ptr<Conn> weak = shared_from_this();
      if (cmd == "USER") {
        server_.core_.userdb_lookup(a[1], [weak, id](common::Result<UserdbResult> r) {
          auto self = weak.lock();
          if (!self) return;
          --self->in_flight_;
          self->reply(user_reply(id, r));
        });
      } else {
        server_.core_.passdb_lookup(a[1], [weak, id](common::Result<std::string> r) {
          auto self = weak.lock();
          if (!self) return;
          --self->in_flight_;
          if (r) self->reply(ap::make_line({"PASS", id, "user=" + *r}));
          else if (r.error().kind == ErrorKind::kNotFound) self->reply(ap::make_line({"NOTFOUND", id}));
          else self->reply(ap::make_line({"FAIL", id, "reason=Temporary lookup failure"}));
        });
      }
      return;
    }
    if (cmd == "REQUEST") {
      // REQUEST <id> <client pid> <auth id> <cookie>
      if (a.size() < 4) {
        reply(ap::make_line({"FAIL", id, "reason=Invalid REQUEST"}));
        return;
      }
      const uint64_t cpid = common::parse_u64(a[1]).value_or(0);
      const ap::RequestId auth_id = ap::parse_request_id(a[2]).value_or(0);
      if (cpid == 0 || cpid > 0xffffffffu || auth_id == 0 || a[3].size() != ap::kCookieHexLength) {
        reply(ap::make_line({"FAIL", id, "reason=Invalid REQUEST"}));
        return;
      }
      std::optional<std::string> user = server_.core_.take_success(a[3], static_cast<uint32_t>(cpid), auth_id);
      if (!user) {
        kLog.info("userdb REQUEST: no finished authentication for client pid %llu id %u (wrong cookie, already "
                  "taken, or expired)",
                  static_cast<unsigned long long>(cpid), auth_id);
        reply(ap::make_line({"NOTFOUND", id}));
        return;
      }
      ++in_flight_;
      std::weak_ptr<Conn> weak = shared_from_this();
      server_.core_.userdb_lookup(*user, [weak, id](common::Result<UserdbResult> r) {
        auto self = weak.lock();
        if (!self) return;
        --self->in_flight_;
        self->reply(user_reply(id, r));
      });
      return;
    }
    // LIST <id> [user=<mask>]
    std::string mask;
    for (size_t i = 1; i < a.size(); ++i) {
      ap::Field f = ap::split_field(a[i]);
      if (f.key == "user" && f.has_value) mask = std::string(f.value);
    }
    common::Result<std::vector<std::string>> users = server_.core_.list_users(mask, kMaxListUsers);
    if (!users) {
      reply(ap::make_line({"FAIL", id}));
      return;
    }
    std::string out;
    for (const std::string& u : *users) out += ap::make_line({"LIST", id, u});
    out += ap::make_line({"DONE", id});
    reply(out);
  }

  static std::string user_reply(const std::string& id, const common::Result<UserdbResult>& r) {
    if (!r) {
      if (r.error().kind == ErrorKind::kNotFound) return ap::make_line({"NOTFOUND", id});
      kLog.warning("userdb lookup failed: %s", r.error().message.c_str());
      return ap::make_line({"FAIL", id, "reason=Temporary lookup failure"});
    }
    std::vector<std::string> w{"USER", id, r->user};
    for (const auto& [k, v] : r->fields) w.push_back(k + "=" + v);
    return ap::make_line(w);
  }

  UserdbServer& server_;
  std::shared_ptr<common::net::Connection> conn_;
  common::LineReader reader_;
  bool got_version_ = false;
  size_t in_flight_ = 0;
};

UserdbServer::UserdbServer(AuthCore& core) : core_(core) {}

UserdbServer::~UserdbServer() { stop(); }

void UserdbServer::listen(int fd) {
  auto l = std::make_unique<common::net::Listener>(core_.loop(), common::UniqueFd(::dup(fd)), ap::kUserdbSocket);
  l->start([this](common::UniqueFd c) { accept(std::move(c)); });
  listeners_.push_back(std::move(l));
}

void UserdbServer::accept(common::UniqueFd fd) {
  common::net::PeerInfo peer = common::net::peer_info(fd.get());
  const auto& allowed = core_.settings().userdb_allowed_uids;
  bool ok = peer.has_creds && (peer.uid == 0 || peer.uid == ::geteuid() ||
                               std::find(allowed.begin(), allowed.end(), peer.uid) != allowed.end());
  if (!ok) {
    kLog.warning("auth-userdb: connection from uid %d (pid %d) refused: only root, mail_uid, mail_owner and "
                 "auth_userdb_allow_users may look up users",
                 static_cast<int>(peer.uid), static_cast<int>(peer.pid));
    return;  // fd closes
  }
  common::net::Connection::Options o;
  o.idle_timeout_ms = kIdleTimeoutMs;
  auto c = common::net::Connection::adopt(core_.loop(), std::move(fd), o);
  auto conn = std::make_shared<Conn>(*this, c);
  conns_[conn.get()] = conn;
  conn->start();
}

void UserdbServer::stop() { listeners_.clear(); }

}  // namespace tern::authd
