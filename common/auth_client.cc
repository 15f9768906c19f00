#include "common/auth_client.h"

#include <unistd.h>

#include "common/line_reader.h"
#include "common/log.h"
#include "common/text.h"

namespace tern::common::auth {

namespace ap = auth_protocol;

std::string field(const Fields& f, std::string_view key) {
  for (const auto& [k, v] : f) {
    if (k == key) return v;
  }
  return "";
}

namespace {

Fields parse_fields(const std::vector<std::string>& args, size_t from) {
  Fields out;
  for (size_t i = from; i < args.size(); ++i) {
    ap::Field f = ap::split_field(args[i]);
    out.emplace_back(std::string(f.key), std::string(f.value));
  }
  return out;
}

// A line-based connection to one authd socket, shared by both clients: lazy connect,
// handshake, pending requests with deadlines, failure of everything on disconnect.
class Channel {
 public:
  struct Hooks {
    // A complete handshake line (before DONE for auth-client); false: protocol error.
    std::function<bool(const ap::Line&)> on_handshake_line;
    // A reply line after the handshake; false: protocol error.
    std::function<bool(const ap::Line&)> on_reply;
    // Every pending request must fail with this error.
    std::function<void(const Error&)> on_fail_all;
    // The handshake is complete when this returns true.
    std::function<bool()> handshake_done;
    std::function<std::string()> hello;  // what to send on connect
    std::function<void()> on_tick;       // once a second, for deadlines
  };

  Channel(ev::Loop& loop, std::string path, uint64_t connect_timeout_ms, Hooks hooks)
      : loop_(loop), path_(std::move(path)), connect_timeout_ms_(connect_timeout_ms), hooks_(std::move(hooks)),
        reader_(ap::kMaxLineLength), tick_(loop), connect_timer_(loop) {}

  ~Channel() {
    alive_.reset();
    if (conn_) conn_->abort();
  }

  bool ready() const { return conn_ && !conn_->closing() && handshaken_; }
  bool connecting() const { return connecting_; }

  void ensure(std::function<void(Status)> cb) {
    if (ready()) {
      // Never call back from inside the caller's call.
      std::weak_ptr<int> alive = alive_;
      loop_.post([alive, cb = std::move(cb)] {
        if (alive.lock()) cb(Status());
      });
      return;
    }
    waiters_.push_back(std::move(cb));
    if (connecting_) return;
    connecting_ = true;
    handshaken_ = false;
    reader_.clear();
    std::weak_ptr<int> alive = alive_;
    connect_timer_.start(connect_timeout_ms_, [this, alive] {
      if (!alive.lock() || !connecting_) return;
      if (conn_) conn_->abort();
      fail(make_error(ErrorKind::kTemp, "connect " + path_ + ": timed out"));
    });
    net::Connection::Options o;
    net::Connection::connect_unix(loop_, path_, o, [this, alive](Result<std::shared_ptr<net::Connection>> c) {
      if (!alive.lock()) {
        if (c) c.value()->abort();
        return;
      }
      if (!connecting_) {  // timed out meanwhile
        if (c) c.value()->abort();
        return;
      }
      if (!c) {
        fail(make_error(ErrorKind::kTemp, c.error().message));
        return;
      }
      conn_ = std::move(c).value();
      net::Connection::Callbacks cb;
      cb.on_data = [this, alive](std::string_view d) {
        if (alive.lock()) on_data(d);
      };
      cb.on_close = [this, alive](net::CloseReason r, const std::string& detail) {
        if (!alive.lock()) return;
        conn_.reset();
        fail(make_error(ErrorKind::kTemp, "connection to " + path_ + " closed (" + close_reason_name(r) +
                                              (detail.empty() ? "" : ": " + detail) + ")"));
      };
      conn_->start(std::move(cb));
      conn_->write(hooks_.hello());
      if (!tick_.active()) {
        tick_.start(1000, [this, alive] {
          if (alive.lock() && hooks_.on_tick) hooks_.on_tick();
        }, 1000);
      }
    });
  }

  void send(const std::string& line) {
    if (ready()) conn_->write(line);
  }

  void close_with(const std::string& why) {
    if (conn_) conn_->abort();
    conn_.reset();
    fail(make_error(ErrorKind::kTemp, why));
  }

 private:
  void on_data(std::string_view d) {
    reader_.feed(d);
    LineReader::Line line;
    for (;;) {
      if (!conn_) return;
      LineReader::Status st = reader_.next(line);
      if (st == LineReader::Status::kNeedMore) return;
      if (st == LineReader::Status::kTooLong) {
        close_with("tern-authd sent an overlong line");
        return;
      }
      ap::ParsedLine p = ap::parse_line(line.text);
      if (!p.ok) {
        close_with(std::string("malformed line from tern-authd: ") + ap::line_error_text(p.error));
        return;
      }
      if (!handshaken_) {
        if (!hooks_.on_handshake_line(p.line)) {
          close_with("unexpected handshake from " + path_ + ": " + log_escape(p.line.command, 32));
          return;
        }
        if (hooks_.handshake_done()) {
          handshaken_ = true;
          connecting_ = false;
          connect_timer_.stop();
          auto w = std::move(waiters_);
          waiters_.clear();
          for (auto& cb : w) cb(Status());
        }
        continue;
      }
      if (!hooks_.on_reply(p.line)) {
        close_with("unexpected reply from tern-authd: " + log_escape(p.line.command, 32));
        return;
      }
    }
  }

  void fail(const Error& e) {
    connecting_ = false;
    handshaken_ = false;
    connect_timer_.stop();
    auto w = std::move(waiters_);
    waiters_.clear();
    for (auto& cb : w) cb(e);
    hooks_.on_fail_all(e);
  }

  ev::Loop& loop_;
  std::string path_;
  uint64_t connect_timeout_ms_;
  Hooks hooks_;
  LineReader reader_;
  ev::Timer tick_;
  ev::Timer connect_timer_;
  std::shared_ptr<net::Connection> conn_;
  bool connecting_ = false;
  bool handshaken_ = false;
  std::vector<std::function<void(Status)>> waiters_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
};

}  // namespace

// ---- AuthClient --------------------------------------------------------------------

class AuthClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  struct Pending {
    AuthParams params;
    ChallengeFn on_challenge;
    DoneFn on_done;
    uint64_t deadline = 0;
    bool sent = false;
  };

  Impl(ev::Loop& loop, Options o) : loop_(loop), opt_(std::move(o)) {
    if (opt_.pid == 0) opt_.pid = static_cast<uint32_t>(::getpid());
    Channel::Hooks h;
    h.hello = [this] {
      hs_ = Handshake{};
      return ap::make_line({"VERSION", std::to_string(ap::kClientMajor), std::to_string(ap::kClientMinor)}) +
             ap::make_line({"CPID", std::to_string(opt_.pid)});
    };
    h.on_handshake_line = [this](const ap::Line& l) { return handshake_line(l); };
    h.handshake_done = [this] { return hs_.done; };
    h.on_reply = [this](const ap::Line& l) { return reply(l); };
    h.on_fail_all = [this](const Error& e) { fail_all(e); };
    h.on_tick = [this] { expire(); };
    channel_ = std::make_unique<Channel>(loop_, opt_.socket_path, opt_.connect_timeout_ms, std::move(h));
  }

  struct Handshake {
    bool version = false, done = false;
    std::vector<Mechanism> mechs;
    std::string cookie;
    uint32_t spid = 0;
  };

  bool handshake_line(const ap::Line& l) {
    if (l.command == "VERSION") {
      if (l.args.size() < 2 || l.args[0] != std::to_string(ap::kClientMajor)) return false;
      hs_.version = true;
      return true;
    }
    if (!hs_.version) return false;
    if (l.command == "MECH") {
      if (l.args.empty()) return false;
      Mechanism m;
      m.name = l.args[0];
      for (size_t i = 1; i < l.args.size(); ++i) {
        if (l.args[i] == "plaintext") m.plaintext = true;
        else if (l.args[i] == "dictionary") m.dictionary = true;
        else if (l.args[i] == "mutual-auth") m.mutual_auth = true;
        else if (l.args[i] == "private") m.private_ = true;
      }
      hs_.mechs.push_back(std::move(m));
      return true;
    }
    if (l.command == "SPID") {
      if (l.args.empty()) return false;
      hs_.spid = static_cast<uint32_t>(parse_u64(l.args[0]).value_or(0));
      return true;
    }
    if (l.command == "CUID") return true;
    if (l.command == "COOKIE") {
      if (l.args.empty() || l.args[0].size() != ap::kCookieHexLength) return false;
      hs_.cookie = l.args[0];
      return true;
    }
    if (l.command == "DONE") {
      hs_.done = true;
      mechs_ = hs_.mechs;
      cookie_ = hs_.cookie;
      spid_ = hs_.spid;
      return true;
    }
    return false;
  }

  bool reply(const ap::Line& l) {
    if (l.args.empty()) return false;
    std::optional<RequestId> id = ap::parse_request_id(l.args[0]);
    if (!id) return false;
    auto it = pending_.find(*id);
    if (it == pending_.end()) return true;  // cancelled or timed out: ignore
    if (l.command == "CONT") {
      std::string data;
      if (l.args.size() > 1 && !l.args[1].empty()) {
        std::optional<std::string> d = base64_decode(l.args[1]);
        if (!d) return false;
        data = std::move(*d);
      }
      it->second.deadline = loop_.now_ms() + opt_.request_timeout_ms;
      ChallengeFn cb = it->second.on_challenge;
      if (cb) cb(*id, data);
      return true;
    }
    if (l.command == "OK") {
      Pending p = std::move(it->second);
      pending_.erase(it);
      AuthSuccess s;
      s.id = *id;
      s.fields = parse_fields(l.args, 1);
      s.user = field(s.fields, "user");
      std::string resp = field(s.fields, "resp");
      if (!resp.empty()) s.final_data = base64_decode(resp).value_or("");
      p.on_done(std::move(s));
      return true;
    }
    if (l.command == "FAIL") {
      Pending p = std::move(it->second);
      pending_.erase(it);
      Fields f = parse_fields(l.args, 1);
      bool temp = false;
      for (const auto& [k, v] : f) temp = temp || k == "temp";
      std::string reason = field(f, "reason");
      if (reason.empty()) reason = temp ? "Temporary authentication failure" : "Authentication failed";
      p.on_done(make_error(temp ? ErrorKind::kTemp : ErrorKind::kPerm, reason));
      return true;
    }
    return false;
  }

  void fail_all(const Error& e) {
    auto pending = std::move(pending_);
    pending_.clear();
    for (auto& [id, p] : pending) p.on_done(e);
  }

  void expire() {
    const uint64_t now = loop_.now_ms();
    std::vector<RequestId> late;
    for (const auto& [id, p] : pending_) {
      if (p.deadline <= now) late.push_back(id);
    }
    for (RequestId id : late) {
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      Pending p = std::move(it->second);
      pending_.erase(it);
      p.on_done(make_error(ErrorKind::kTemp, "tern-authd did not answer in time"));
    }
  }

  std::string auth_line(RequestId id, const AuthParams& a) {
    std::vector<std::string> w{"AUTH", std::to_string(id), a.mech, "service=" + a.service};
    if (!a.local_ip.empty()) w.push_back("lip=" + a.local_ip);
    if (!a.remote_ip.empty()) w.push_back("rip=" + a.remote_ip);
    if (a.local_port) w.push_back("lport=" + std::to_string(a.local_port));
    if (a.remote_port) w.push_back("rport=" + std::to_string(a.remote_port));
    if (a.secured) w.push_back("secured");
    if (a.no_penalty) w.push_back("no-penalty");
    w.push_back("final-resp-ok");  // reply() takes resp= from OK
    if (a.initial_response) {
      w.push_back("resp=" + (a.initial_response->empty() ? std::string("=") : base64_encode(*a.initial_response)));
    }
    return ap::make_line(w);
  }

  RequestId start(const AuthParams& params, ChallengeFn on_challenge, DoneFn on_done) {
    RequestId id = next_id_++;
    if (next_id_ == 0) next_id_ = 1;
    Pending p;
    p.params = params;
    p.on_challenge = std::move(on_challenge);
    p.on_done = std::move(on_done);
    p.deadline = loop_.now_ms() + opt_.request_timeout_ms + opt_.connect_timeout_ms;
    pending_[id] = std::move(p);
    std::weak_ptr<Impl> weak = shared_from_this();
    channel_->ensure([weak, id](Status st) {
      auto self = weak.lock();
      if (!self) return;
      auto it = self->pending_.find(id);
      if (it == self->pending_.end()) return;
      if (!st) return;  // fail_all() already answered it
      it->second.sent = true;
      it->second.deadline = self->loop_.now_ms() + self->opt_.request_timeout_ms;
      self->channel_->send(self->auth_line(id, it->second.params));
    });
    return id;
  }

  void respond(RequestId id, std::string_view data) {
    if (!pending_.count(id)) return;
    channel_->send(ap::make_line({"CONT", std::to_string(id), data.empty() ? std::string() : base64_encode(data)}));
  }

  ev::Loop& loop_;
  Options opt_;
  std::unique_ptr<Channel> channel_;
  Handshake hs_;
  std::vector<Mechanism> mechs_;
  std::string cookie_;
  uint32_t spid_ = 0;
  std::map<RequestId, Pending> pending_;
  RequestId next_id_ = 1;
};

AuthClient::AuthClient(ev::Loop& loop, Options options) : impl_(std::make_shared<Impl>(loop, std::move(options))) {}
AuthClient::~AuthClient() { impl_->pending_.clear(); }

RequestId AuthClient::start(const AuthParams& params, ChallengeFn on_challenge, DoneFn on_done) {
  return impl_->start(params, std::move(on_challenge), std::move(on_done));
}
void AuthClient::respond(RequestId id, std::string_view response) { impl_->respond(id, response); }
void AuthClient::cancel(RequestId id) { impl_->pending_.erase(id); }
void AuthClient::connect(std::function<void(Status)> cb) { impl_->channel_->ensure(std::move(cb)); }
bool AuthClient::connected() const { return impl_->channel_->ready(); }
const std::vector<Mechanism>& AuthClient::mechanisms() const { return impl_->mechs_; }
const std::string& AuthClient::cookie() const { return impl_->cookie_; }
uint32_t AuthClient::pid() const { return impl_->opt_.pid; }
uint32_t AuthClient::server_pid() const { return impl_->spid_; }
size_t AuthClient::in_flight() const { return impl_->pending_.size(); }

// ---- UserdbClient ------------------------------------------------------------------

Result<UserInfo> parse_user_reply(const std::vector<std::string>& args) {
  if (args.empty() || !ap::valid_user_name(args[0])) return make_error(ErrorKind::kProtocol, "USER reply without a user");
  UserInfo u;
  u.user = args[0];
  u.fields = parse_fields(args, 1);
  for (const auto& [k, v] : u.fields) {
    if (k == "uid" || k == "gid") {
      std::optional<uint64_t> n = parse_u64(v);
      if (!n || *n > 0xffffffffu) return make_error(ErrorKind::kProtocol, "USER reply with a bad " + k);
      (k == "uid" ? u.uid : u.gid) = static_cast<uint32_t>(*n);
    } else if (k == "home") {
      u.home = v;
    } else if (k == "mail") {
      u.mail = v;
    } else if (k == "quota_rule") {
      u.quota_rule = v;
    }
  }
  return u;
}

class UserdbClient::Impl : public std::enable_shared_from_this<Impl> {
 public:
  struct Pending {
    std::string line;
    std::function<void(const ap::Line&)> on_reply;   // USER/PASS/NOTFOUND/FAIL/DONE
    std::function<void(const Error&)> on_error;
    std::vector<std::string> list;                   // LIST accumulates
    uint64_t deadline = 0;
  };

  Impl(ev::Loop& loop, Options o) : loop_(loop), opt_(std::move(o)) {
    Channel::Hooks h;
    h.hello = [this] {
      got_version_ = false;
      return ap::make_line({"VERSION", std::to_string(ap::kMasterMajor), std::to_string(ap::kMasterMinor)});
    };
    h.on_handshake_line = [this](const ap::Line& l) {
      if (l.command != "VERSION" || l.args.size() < 2 || l.args[0] != std::to_string(ap::kMasterMajor)) return false;
      got_version_ = true;
      return true;
    };
    h.handshake_done = [this] { return got_version_; };
    h.on_reply = [this](const ap::Line& l) { return reply(l); };
    h.on_fail_all = [this](const Error& e) {
      auto p = std::move(pending_);
      pending_.clear();
      for (auto& [id, r] : p) r.on_error(e);
    };
    h.on_tick = [this] { expire(); };
    channel_ = std::make_unique<Channel>(loop_, opt_.socket_path, opt_.connect_timeout_ms, std::move(h));
  }

  bool reply(const ap::Line& l) {
    if (l.command == "SPID") return true;  // sent right after VERSION
    if (l.args.empty()) return false;
    std::optional<RequestId> id = ap::parse_request_id(l.args[0]);
    if (!id) return false;
    auto it = pending_.find(*id);
    if (it == pending_.end()) return true;
    if (l.command == "LIST") {
      if (l.args.size() >= 2) it->second.list.push_back(l.args[1]);
      it->second.deadline = loop_.now_ms() + opt_.request_timeout_ms;
      return true;
    }
    Pending p = std::move(it->second);
    pending_.erase(it);
    if (l.command == "DONE" && !p.list.empty()) {
      ap::Line done = l;
      done.args.insert(done.args.end(), p.list.begin(), p.list.end());
      p.on_reply(done);
    } else {
      p.on_reply(l);
    }
    return true;
  }

  void expire() {
    const uint64_t now = loop_.now_ms();
    std::vector<RequestId> late;
    for (const auto& [id, p] : pending_) {
      if (p.deadline <= now) late.push_back(id);
    }
    for (RequestId id : late) {
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      Pending p = std::move(it->second);
      pending_.erase(it);
      p.on_error(make_error(ErrorKind::kTemp, "tern-authd did not answer in time"));
    }
  }

  void submit(std::vector<std::string> words, std::function<void(const ap::Line&)> on_reply,
              std::function<void(const Error&)> on_error) {
    RequestId id = next_id_++;
    if (next_id_ == 0) next_id_ = 1;
    words.insert(words.begin() + 1, std::to_string(id));
    Pending p;
    p.line = ap::make_line(words);
    p.on_reply = std::move(on_reply);
    p.on_error = std::move(on_error);
    p.deadline = loop_.now_ms() + opt_.request_timeout_ms + opt_.connect_timeout_ms;
    pending_[id] = std::move(p);
    std::weak_ptr<Impl> weak = shared_from_this();
    channel_->ensure([weak, id](Status st) {
      auto self = weak.lock();
      if (!self || !st) return;
      auto it = self->pending_.find(id);
      if (it == self->pending_.end()) return;
      self->channel_->send(it->second.line);
    });
  }

  void user_like(std::vector<std::string> words, UserFn cb) {
    auto shared = std::make_shared<UserFn>(std::move(cb));
    submit(
        std::move(words),
        [shared](const ap::Line& l) {
          if (l.command == "USER") {
            std::vector<std::string> rest(l.args.begin() + 1, l.args.end());
            (*shared)(parse_user_reply(rest));
          } else if (l.command == "NOTFOUND") {
            (*shared)(make_error(ErrorKind::kNotFound, "no such user"));
          } else {
            Fields f = parse_fields(l.args, 1);
            std::string reason = field(f, "reason");
            (*shared)(make_error(ErrorKind::kTemp, reason.empty() ? "userdb lookup failed" : reason));
          }
        },
        [shared](const Error& e) { (*shared)(e); });
  }

  ev::Loop& loop_;
  Options opt_;
  std::unique_ptr<Channel> channel_;
  bool got_version_ = false;
  std::map<RequestId, Pending> pending_;
  RequestId next_id_ = 1;
};

UserdbClient::UserdbClient(ev::Loop& loop, Options options) : impl_(std::make_shared<Impl>(loop, std::move(options))) {}
UserdbClient::~UserdbClient() { impl_->pending_.clear(); }

void UserdbClient::user(const std::string& user, const std::string& service, UserFn cb) {
  impl_->user_like({"USER", user, "service=" + service}, std::move(cb));
}

void UserdbClient::request(uint32_t client_pid, RequestId auth_id, const std::string& cookie, UserFn cb) {
  impl_->user_like({"REQUEST", std::to_string(client_pid), std::to_string(auth_id), cookie}, std::move(cb));
}

void UserdbClient::pass(const std::string& user, const std::string& service,
                        std::function<void(Result<std::string>)> cb) {
  auto shared = std::make_shared<std::function<void(Result<std::string>)>>(std::move(cb));
  impl_->submit(
      {"PASS", user, "service=" + service},
      [shared](const ap::Line& l) {
        if (l.command == "PASS") {
          std::string u = field(parse_fields(l.args, 1), "user");
          (*shared)(u);
        } else if (l.command == "NOTFOUND") {
          (*shared)(make_error(ErrorKind::kNotFound, "no such user"));
        } else {
          (*shared)(make_error(ErrorKind::kTemp, "passdb lookup failed"));
        }
      },
      [shared](const Error& e) { (*shared)(e); });
}

void UserdbClient::list(const std::string& mask, std::function<void(Result<std::vector<std::string>>)> cb) {
  auto shared = std::make_shared<std::function<void(Result<std::vector<std::string>>)>>(std::move(cb));
  std::vector<std::string> words{"LIST"};
  if (!mask.empty()) words.push_back("user=" + mask);
  impl_->submit(
      std::move(words),
      [shared](const ap::Line& l) {
        if (l.command == "DONE") {
          (*shared)(std::vector<std::string>(l.args.begin() + 1, l.args.end()));
        } else {
          (*shared)(make_error(ErrorKind::kTemp, "user listing failed"));
        }
      },
      [shared](const Error& e) { (*shared)(e); });
}

bool UserdbClient::connected() const { return impl_->channel_->ready(); }
size_t UserdbClient::in_flight() const { return impl_->pending_.size(); }

}  // namespace tern::common::auth
