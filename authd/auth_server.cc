#include "authd/auth_server.h"

#include <unistd.h>

#include <map>

#include "authd/client_trust.h"
#include "authd/password.h"
#include "authd/sasl.h"
#include "common/auth_protocol.h"
#include "common/connection.h"
#include "common/line_reader.h"
#include "common/log.h"
#include "common/text.h"

namespace tern::authd {

namespace ap = common::auth_protocol;

namespace {

const common::log::Channel kLog("auth");
// How long a request may wait for the client's next CONT (Dovecot: 3 minutes for
// the whole request; a login process answers a challenge in milliseconds, a human
// behind it in seconds).
constexpr uint64_t kClientWaitMs = 120000;

bool is_plaintext_mech(const std::string& m) { return m == "PLAIN" || m == "LOGIN"; }

// A user name as one token for a log line that fail2ban parses: no spaces, commas
// or parentheses, which would end the \S* or (...) the filters expect.
std::string log_token(std::string_view s) {
  std::string out = common::log_escape(s, 128);
  for (char& c : out) {
    if (c == ' ' || c == ',' || c == '(' || c == ')') c = '?';
  }
  return out.empty() ? "?" : out;
}

}  // namespace

std::string AuthServer::dovecot_fail_line(const std::string& passdb, const std::string& user, const std::string& rip,
                                          const std::string& session, const std::string& reason) {
  // Dovecot (auth_verbose): "passwd-file(user,192.0.2.7,<sess>): Password mismatch".
  return passdb + "(" + log_token(user) + "," + (rip.empty() ? "unknown" : log_token(rip)) + ",<" + session +
         ">): " + reason;
}

std::string AuthServer::postfix_fail_line(const std::string& rip, const std::string& mech) {
  // Postfix smtpd: "warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: ..."
  return "unknown[" + (rip.empty() ? std::string("unknown") : log_token(rip)) + "]: SASL " + mech +
         " authentication failed: authentication failure";
}

// One AUTH request. Held by shared_ptr: the connection's table and any threadpool
// work in progress; the SaslRequest is touched by one thread at a time.
struct AuthServer::Request {
  ap::RequestId id = 0;
  ap::AuthCommand cmd;
  std::unique_ptr<SaslRequest> sasl;
  bool busy = false;           // a step is on the threadpool or waiting for admission
  bool done = false;
  uint64_t deadline_ms = 0;    // for the client's next CONT
  std::string session;         // "C<cuid>:<id>" in log lines
  std::string penalty_key;     // rip from a trusted peer, else the peer's local uid
};

class AuthServer::Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(AuthServer& server, std::shared_ptr<common::net::Connection> c, uint64_t cuid)
      : server_(server), core_(server.core_), conn_(std::move(c)), cuid_(cuid), reader_(ap::kMaxLineLength),
        tick_(core_.loop()),
        trusted_(peer_trusted(conn_->peer().has_creds, conn_->peer().uid, core_.settings().client_trusted_uids)) {}

  ~Conn() {
    // Requests still on the threadpool finish there; nobody is told.
    for (auto& [id, r] : requests_) r->done = true;
  }

  common::Status start() {
    common::Result<std::string> rnd = random_bytes(16);
    if (!rnd) return rnd.take_error();
    cookie_ = common::hex_encode(*rnd);
    std::weak_ptr<Conn> weak = shared_from_this();
    common::net::Connection::Callbacks cb;
    cb.on_data = [weak](std::string_view d) {
      if (auto self = weak.lock()) self->on_data(d);
    };
    cb.on_close = [weak](common::net::CloseReason, const std::string&) {
      if (auto self = weak.lock()) {
        self->tick_.stop();
        self->server_.conns_.erase(self.get());
      }
    };
    conn_->start(std::move(cb));
    std::string hello = ap::make_line({"VERSION", std::to_string(ap::kClientMajor), std::to_string(ap::kClientMinor)});
    for (const std::string& m : server_.mechs_) {
      std::vector<std::string> w{"MECH", m};
      if (is_plaintext_mech(m)) w.push_back("plaintext");
      if (m == "CRAM-MD5") w.push_back("dictionary");
      if (m.rfind("SCRAM-", 0) == 0) w.push_back("mutual-auth");
      hello += ap::make_line(w);
    }
    hello += ap::make_line({"SPID", std::to_string(::getpid())});
    hello += ap::make_line({"CUID", std::to_string(cuid_)});
    hello += ap::make_line({"COOKIE", cookie_});
    hello += ap::make_line({"DONE"});
    conn_->write(hello);
    tick_.start(5000, [weak] {
      if (auto self = weak.lock()) self->expire();
    }, 5000);
    return {};
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
    kLog.warning("auth client (pid %u, C%llu): %s; disconnecting", cpid_, static_cast<unsigned long long>(cuid_),
                 why.c_str());
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
    if (!got_version_) {
      if (cmd != "VERSION" || p.line.args.size() < 2 || p.line.args[0] != std::to_string(ap::kClientMajor)) {
        disconnect("expected VERSION\t" + std::to_string(ap::kClientMajor) + " first, got " + common::log_escape(cmd, 32));
        return;
      }
      got_version_ = true;
      return;
    }
    if (cmd == "VERSION") {
      disconnect("VERSION sent twice");
      return;
    }
    if (cmd == "CPID") {
      const uint64_t pid = p.line.args.empty() ? 0 : common::parse_u64(p.line.args[0]).value_or(0);
      if (cpid_ != 0 || pid == 0 || pid > 0xffffffffu) {
        disconnect(cpid_ ? "CPID sent twice" : "invalid CPID");
        return;
      }
      cpid_ = static_cast<uint32_t>(pid);
      return;
    }
    if (cpid_ == 0) {
      disconnect("CPID missing before " + common::log_escape(cmd, 32));
      return;
    }
    if (cmd == "AUTH") {
      handle_auth(p.line);
    } else if (cmd == "CONT") {
      handle_cont(p.line);
    } else {
      disconnect("unknown command " + common::log_escape(cmd, 32));
    }
  }

  void handle_auth(const ap::Line& line) {
    ap::AuthParse a = ap::parse_auth(line);
    if (a.error == ap::AuthParseError::kMissingArgs || a.error == ap::AuthParseError::kBadId) {
      disconnect(std::string("bad AUTH: ") + ap::auth_parse_error_text(a.error));
      return;
    }
    const std::string id = std::to_string(a.cmd.id);
    if (requests_.count(a.cmd.id)) {
      disconnect("AUTH id " + id + " already in use");
      return;
    }
    if (requests_.size() >= ap::kMaxRequestsPerConnection) {
      disconnect("too many requests in flight");
      return;
    }
    if (a.error != ap::AuthParseError::kNone) {
      reply(ap::make_line({"FAIL", id, std::string("reason=") + ap::auth_parse_error_text(a.error)}));
      return;
    }
    // What the peer says about its client counts only if the peer is a login process
    // we trust (client_trust.h); before anything below looks at secured or rip.
    if (!trusted_) {
      std::vector<std::string> dropped = drop_client_claims(a.cmd);
      if (!dropped.empty() && !warned_untrusted_) {
        warned_untrusted_ = true;
        std::string names;
        for (const std::string& n : dropped) names += (names.empty() ? "" : ", ") + n;
        kLog.warning("auth client (pid %u, uid %d, C%llu): not in auth_client_trusted_users, ignoring %s",
                     cpid_, static_cast<int>(conn_->peer().uid), static_cast<unsigned long long>(cuid_),
                     names.c_str());
      }
    }
    bool offered = false;
    for (const std::string& m : server_.mechs_) offered = offered || m == a.cmd.mech;
    if (!offered) {
      reply(ap::make_line({"FAIL", id, "reason=Unsupported authentication mechanism"}));
      return;
    }
    if (is_plaintext_mech(a.cmd.mech) && !a.cmd.secured && core_.settings().disable_plaintext_auth) {
      kLog.info("%s", server_.dovecot_fail_line("auth", "", a.cmd.rip, session(a.cmd.id),
                                               "Plaintext authentication disallowed on non-secure (SSL/TLS) connections")
                          .c_str());
      reply(ap::make_line({"FAIL", id, "reason=Plaintext authentication disallowed on non-secure (SSL/TLS) connections."}));
      return;
    }
    auto r = std::make_shared<Request>();
    r->id = a.cmd.id;
    r->cmd = std::move(a.cmd);
    r->session = session(r->id);
    r->penalty_key = trusted_ ? r->cmd.rip : local_penalty_key(conn_->peer().uid);
    r->busy = true;
    requests_[r->id] = r;
    // The penalty for this IP's recent failures is paid before anything is checked.
    const uint64_t delay = r->cmd.no_penalty ? 0 : core_.penalty().delay_ms(r->penalty_key, core_.loop().now_ms());
    std::weak_ptr<Conn> weak = shared_from_this();
    auto go = [weak, r] {
      auto self = weak.lock();
      if (!self || r->done) return;
      self->run_step(r, true, std::string());
    };
    if (delay == 0) {
      go();
      return;
    }
    // Owned by the connection (a vanished client's timers die with it); fired ones
    // are dropped by expire(), never inside their own callback.
    auto timer = std::make_shared<common::ev::Timer>(core_.loop());
    timer->start(delay, go);
    timers_.push_back(timer);
  }

  void handle_cont(const ap::Line& line) {
    ap::ContParse c = ap::parse_cont(line);
    if (!c.ok) {
      disconnect(std::string("bad CONT: ") + c.error);
      return;
    }
    auto it = requests_.find(c.id);
    if (it == requests_.end()) {
      // Dovecot answers a CONT for an unknown (timed out) id with FAIL.
      reply(ap::make_line({"FAIL", std::to_string(c.id), "reason=Authentication request timed out"}));
      return;
    }
    std::shared_ptr<Request> r = it->second;
    if (r->busy) {
      disconnect("CONT for request " + std::to_string(c.id) + " before its challenge");
      return;
    }
    r->busy = true;
    run_step(r, false, std::move(c.response));
  }

  // Admits the step under the IP's concurrency limit, then runs it on the threadpool.
  void run_step(const std::shared_ptr<Request>& r, bool first, std::string data) {
    std::weak_ptr<Conn> weak = shared_from_this();
    AuthCore* core = &core_;
    const std::string ip = r->penalty_key;
    auto data_p = std::make_shared<std::string>(std::move(data));
    core_.penalty().admit(ip, core_.loop().now_ms(), [weak, core, r, first, data_p, ip] {
      if (r->done) {
        // The client went away while this waited in line.
        core->loop().post([core, ip] { core->penalty().release(ip, core->loop().now_ms()); });
        return;
      }
      auto result = std::make_shared<SaslRequest::Step>();
      core->queue_work(
          [core, r, first, data_p, result] {
            if (first) {
              SaslRequest::Params p{r->cmd.service, r->cmd.lip, r->cmd.rip, r->cmd.lport, r->cmd.rport, r->cmd.final_resp_ok};
              common::Result<std::unique_ptr<SaslRequest>> s = SaslRequest::create(*core, p);
              if (!s) {
                result->outcome = SaslRequest::Outcome::kTemp;
                result->reason = s.error().message;
                return;
              }
              r->sasl = std::move(s).value();
              *result = r->sasl->start(r->cmd.mech, r->cmd.has_initial_response ? &r->cmd.initial_response : nullptr);
            } else {
              *result = r->sasl->step(*data_p);
            }
            std::fill(data_p->begin(), data_p->end(), '\0');
          },
          [weak, core, r, result, ip] {
            core->penalty().release(ip, core->loop().now_ms());
            auto self = weak.lock();
            if (!self || r->done) {
              // The client went away; a failure still counts against its IP.
              if (result->outcome == SaslRequest::Outcome::kFail) core->penalty().record_failure(ip, core->loop().now_ms());
              return;
            }
            self->finish_step(r, *result);
          });
    });
  }

  void finish_step(const std::shared_ptr<Request>& r, const SaslRequest::Step& s) {
    const std::string id = std::to_string(r->id);
    r->busy = false;
    switch (s.outcome) {
      case SaslRequest::Outcome::kContinue:
        r->deadline_ms = core_.loop().now_ms() + kClientWaitMs;
        reply(ap::make_line({"CONT", id, s.data.empty() ? std::string() : common::base64_encode(s.data)}));
        return;
      case SaslRequest::Outcome::kOk: {
        finish(r);
        core_.penalty().record_success(r->penalty_key);
        core_.remember_success(cookie_, cpid_, r->id, s.user);
        kLog.debug("%s(%s,%s,<%s>): authenticated (%s, service=%s)", s.passdb.c_str(), log_token(s.user).c_str(),
                   log_token(r->cmd.rip).c_str(), r->session.c_str(), r->cmd.mech.c_str(), log_token(r->cmd.service).c_str());
        std::vector<std::string> w{"OK", id, "user=" + s.user};
        if (!s.data.empty()) w.push_back("resp=" + common::base64_encode(s.data));
        reply(ap::make_line(w));
        return;
      }
      case SaslRequest::Outcome::kTemp: {
        finish(r);
        kLog.warning("%s", AuthServer::dovecot_fail_line(s.passdb.empty() ? "auth" : s.passdb, s.user, r->cmd.rip,
                                                         r->session, s.reason)
                               .c_str());
        reply(ap::make_line({"FAIL", id, "temp", "reason=Temporary authentication failure"}));
        return;
      }
      case SaslRequest::Outcome::kFail: {
        finish(r);
        const uint64_t now = core_.loop().now_ms();
        core_.penalty().record_failure(r->penalty_key, now);
        kLog.info("%s", AuthServer::dovecot_fail_line(s.passdb.empty() ? "lmdb" : s.passdb, s.user, r->cmd.rip,
                                                      r->session, s.reason.empty() ? "invalid credentials" : s.reason)
                            .c_str());
        if (r->cmd.service == "smtp" || r->cmd.service == "submission" || r->cmd.service == "smtps") {
          kLog.warning("%s", AuthServer::postfix_fail_line(r->cmd.rip, r->cmd.mech).c_str());
        }
        std::vector<std::string> w{"FAIL", id};
        if (!s.user.empty() && common::auth_protocol::valid_user_name(s.user)) w.push_back("user=" + s.user);
        std::string line = ap::make_line(w);
        const uint64_t delay = core_.settings().failure_delay_ms;
        if (delay == 0) {
          reply(line);
          return;
        }
        std::weak_ptr<Conn> weak = shared_from_this();
        auto timer = std::make_shared<common::ev::Timer>(core_.loop());
        timer->start(delay, [weak, line] {
          if (auto self = weak.lock()) self->reply(line);
        });
        timers_.push_back(timer);
        return;
      }
    }
  }

  void finish(const std::shared_ptr<Request>& r) {
    r->done = true;
    requests_.erase(r->id);
  }

  // Drops requests whose client stopped answering, and timers that have fired.
  void expire() {
    const uint64_t now = core_.loop().now_ms();
    std::vector<std::shared_ptr<Request>> late;
    for (auto& [id, r] : requests_) {
      if (!r->busy && r->deadline_ms && r->deadline_ms <= now) late.push_back(r);
    }
    for (auto& r : late) {
      finish(r);
      reply(ap::make_line({"FAIL", std::to_string(r->id), "reason=Authentication request timed out"}));
    }
    std::erase_if(timers_, [](const std::shared_ptr<common::ev::Timer>& t) { return !t->active(); });
  }

  std::string session(ap::RequestId id) const { return "C" + std::to_string(cuid_) + ":" + std::to_string(id); }

  AuthServer& server_;
  AuthCore& core_;
  std::shared_ptr<common::net::Connection> conn_;
  uint64_t cuid_;
  common::LineReader reader_;
  common::ev::Timer tick_;
  std::string cookie_;
  bool trusted_;                   // the peer may vouch for its client
  bool warned_untrusted_ = false;  // logged once per connection
  bool got_version_ = false;
  uint32_t cpid_ = 0;
  std::map<ap::RequestId, std::shared_ptr<Request>> requests_;
  std::vector<std::shared_ptr<common::ev::Timer>> timers_;
};

AuthServer::AuthServer(AuthCore& core) : core_(core), mechs_(Sasl::available(core)) {
  // SCRAM needs a stored secret per user. With auth_scram_secrets = no new passwords
  // get none, so unless some user still has one (a database from before, or from
  // when it was on), offering SCRAM would only make clients that prefer it (mutt,
  // anything on Cyrus or GNU SASL) fail where PLAIN over TLS works.
  if (!core_.settings().scram_secrets && !core_.any_scram_secrets()) {
    std::vector<std::string> dropped;
    for (auto it = mechs_.begin(); it != mechs_.end();) {
      if (it->rfind("SCRAM-", 0) == 0) {
        dropped.push_back(*it);
        it = mechs_.erase(it);
      } else {
        ++it;
      }
    }
    if (!dropped.empty()) {
      kLog.info("%s not offered: auth_scram_secrets = no and no user has SCRAM secrets", common::join(dropped, ", ").c_str());
    }
  }
}

AuthServer::~AuthServer() { stop(); }

void AuthServer::listen(int fd) {
  auto l = std::make_unique<common::net::Listener>(core_.loop(), common::UniqueFd(::dup(fd)), ap::kClientSocket);
  l->start([this](common::UniqueFd c) { accept(std::move(c)); });
  listeners_.push_back(std::move(l));
}

void AuthServer::accept(common::UniqueFd fd) {
  auto c = common::net::Connection::adopt(core_.loop(), std::move(fd));
  auto conn = std::make_shared<Conn>(*this, c, next_cuid_++);
  conns_[conn.get()] = conn;
  if (common::Status s = conn->start(); !s) {
    kLog.warning("auth client: %s", s.error().message.c_str());
    conns_.erase(conn.get());
    c->abort();
  }
}

void AuthServer::stop() { listeners_.clear(); }

}  // namespace tern::authd
