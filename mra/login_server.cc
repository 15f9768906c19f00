#include "mra/login_server.h"

#include <malloc.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "common/fault.h"
#include "common/connection.h"
#include "common/log.h"
#include "common/services.h"
#include "common/text.h"
#include "mra/handoff.h"
#include "mra/imap_session.h"
#include "mra/pop3_session.h"

namespace tern::mra {

using common::ErrorKind;
using common::Result;
using common::Status;
using common::UniqueFd;
using common::net::Connection;

namespace {

// What the glue needs of either protocol core.
enum class Act { kNeedInput, kContinue, kStartTls, kAuthenticate, kAuthCancel, kLoggedIn, kIdle, kClose };

template <class A>
Act map_action(A a) {
  switch (a) {
    case A::kNeedInput: return Act::kNeedInput;
    case A::kContinue: return Act::kContinue;
    case A::kStartTls: return Act::kStartTls;
    case A::kAuthenticate: return Act::kAuthenticate;
    case A::kAuthCancel: return Act::kAuthCancel;
    case A::kLoggedIn: return Act::kLoggedIn;
    case A::kClose: return Act::kClose;
    default: return Act::kIdle;  // IMAP's kIdle: not before login
  }
}

class Proto {
 public:
  virtual ~Proto() = default;
  virtual std::string greeting() = 0;
  virtual void feed(std::string_view b) = 0;
  virtual size_t buffered() = 0;
  virtual Act step(std::string& out) = 0;
  virtual void tls_started() = 0;
  virtual std::string mechanism() = 0;
  virtual std::optional<std::string> initial_response() = 0;
  virtual const std::string& auth_response() = 0;
  virtual std::string auth_challenge(std::string_view c) = 0;
  virtual Act auth_result(bool ok, std::string_view user, bool temp, std::string& out) = 0;
  virtual std::string take_buffered() = 0;
  virtual std::string bye(std::string_view reason) = 0;
};

template <class S>
class ProtoOf : public Proto {
 public:
  template <class C>
  explicit ProtoOf(C config) : s_(std::move(config)) {}
  std::string greeting() override { return s_.greeting(); }
  void feed(std::string_view b) override { s_.feed(b); }
  size_t buffered() override { return s_.buffered(); }
  Act step(std::string& out) override {
    auto st = s_.step();
    out = std::move(st.out);
    return map_action(st.action);
  }
  void tls_started() override { s_.tls_started(); }
  std::string mechanism() override { return s_.auth_request().mechanism; }
  std::optional<std::string> initial_response() override { return s_.auth_request().initial_response; }
  const std::string& auth_response() override { return s_.auth_response(); }
  std::string auth_challenge(std::string_view c) override { return s_.auth_challenge(c); }
  Act auth_result(bool ok, std::string_view user, bool temp, std::string& out) override {
    auto st = s_.auth_result(ok, user, temp);
    out = std::move(st.out);
    return map_action(st.action);
  }
  std::string take_buffered() override { return s_.take_buffered(); }
  std::string bye(std::string_view reason) override { return s_.bye(reason); }

 private:
  S s_;
};

// The authentication identity of a PLAIN message (authzid NUL authcid NUL passwd),
// for the log only; the password is never looked at.
std::string plain_user(const std::optional<std::string>& ir) {
  if (!ir) return "";
  size_t a = ir->find('\0');
  if (a == std::string::npos) return "";
  size_t b = ir->find('\0', a + 1);
  if (b == std::string::npos) return "";
  return ir->substr(a + 1, b - a - 1);
}

std::string tls_file(const std::string& v) { return !v.empty() && v[0] == '<' ? v.substr(1) : v; }

}  // namespace

struct LoginServer::Client {
  uint64_t id = 0;
  bool imap = true;
  std::string service;  // "imap-login" / "pop3-login" (the log's service)
  std::shared_ptr<Connection> conn;
  std::unique_ptr<Proto> proto;
  common::net::PeerInfo peer;
  uint64_t started_ms = 0;
  std::optional<uint32_t> auth_id;
  bool auth_busy = false;            // waiting for tern-authd
  // tern-authd said OK with final SASL data (SCRAM's server signature): it went to
  // the client as a last challenge, and success is declared on its (empty) answer.
  std::optional<common::auth::AuthSuccess> success;
  int attempts = 0;
  std::string mech;
  std::string user;                  // for the log
  bool handing_over = false;
  bool handed_over = false;          // the worker has the session
  bool ip_counted = false;
  // The hand-over in progress.
  UniqueFd postlogin;
  std::unique_ptr<common::ev::FdWatch> postlogin_watch;
  std::string postlogin_in;
  UniqueFd relay_end;                 // TLS: our end of the socketpair until the relay starts
  std::shared_ptr<Connection> plain;  // TLS relay to the worker
};

LoginServer::LoginServer(common::DaemonContext& ctx) : ctx_(ctx), cfg_(ctx.config) {}

LoginServer::~LoginServer() {
  for (auto& [id, c] : clients_) {
    if (c->auth_id && auth_) auth_->cancel(*c->auth_id);
  }
}

Status LoginServer::prepare() {
  const std::string cert = tls_file(cfg_.str("ssl_cert")), key = tls_file(cfg_.str("ssl_key"));
  if (!cert.empty()) {
    Result<std::shared_ptr<common::tls::Context>> t =
        common::tls::Context::server(cert, key, cfg_.str("ssl_min_protocol"), cfg_.str("ssl_cipher_list"));
    if (!t) return common::make_error(ErrorKind::kConfig, "ssl_cert/ssl_key/ssl_cipher_list: " + t.error().message);
    tls_ = std::move(t).value();
  }
  return {};
}

std::vector<std::string> LoginServer::offered_mechanisms() const {
  if (!auth_ || !auth_->connected()) return mechanisms_;
  std::vector<std::string> out;
  for (const std::string& m : mechanisms_) {
    for (const common::auth::Mechanism& a : auth_->mechanisms()) {
      if (a.name == m && !a.private_) {
        out.push_back(m);
        break;
      }
    }
  }
  return out;
}

// $base_dir/login, or "" inside the login chroot (which is that directory).
std::string LoginServer::socket_dir() const {
  return ctx_.chroot_dir.empty() ? cfg_.str("base_dir") + "/" + common::kLoginDir : "";
}

Status LoginServer::start() {
  for (const std::string& m : cfg_.list("auth_mechanisms")) {
    std::string u;
    for (char ch : m) u += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    mechanisms_.push_back(u);
  }
  common::auth::AuthClient::Options ao;
  ao.socket_path = socket_dir() + "/auth-client";
  auth_ = std::make_unique<common::auth::AuthClient>(*ctx_.loop, ao);
  auth_->connect([](Status s) {
    if (!s) common::log::warning("tern-authd: %s (logins fail until it answers)", s.error().message.c_str());
  });
  // A connection is a descriptor, two while a TLS session is relayed to its worker;
  // keep a tenth of the open file limit (at least 128) for authd, the workers'
  // sockets and the log, so login_max_connections refuses before the kernel does.
  const uint64_t nofile = common::open_file_limit();
  const uint64_t keep = std::max<uint64_t>(128, nofile / 10);
  fd_room_ = nofile > keep * 2 ? nofile - keep : nofile / 2;
  if (static_cast<uint64_t>(cfg_.integer("login_max_connections")) > fd_room_) {
    common::log::warning("login_max_connections = %lld does not fit the open file limit %llu: using %llu",
                         static_cast<long long>(cfg_.integer("login_max_connections")),
                         static_cast<unsigned long long>(nofile), static_cast<unsigned long long>(fd_room_));
  }
  for (const char* name : {"imap", "imaps", "pop3", "pop3s"}) {
    for (int fd : ctx_.listeners(name)) {
      if ((std::string(name) == "imaps" || std::string(name) == "pop3s") && !tls_) {
        return common::make_error(ErrorKind::kConfig, std::string(name) + " needs ssl_cert and ssl_key (or set " +
                                                          name + "_port = 0)");
      }
      auto l = std::make_unique<common::net::Listener>(*ctx_.loop, UniqueFd(::dup(fd)), name);
      // Out of descriptors, the same words as over login_max_connections; the TLS
      // ports get the close alone.
      if (std::string(name) == "imap") l->set_refusal("* BYE [UNAVAILABLE] Server is busy, try again later.\r\n");
      if (std::string(name) == "pop3") l->set_refusal("-ERR [SYS/TEMP] Server is busy, try again later.\r\n");
      std::string service = name;
      l->start([this, service](UniqueFd c) { accept(std::move(c), service); });
      listeners_.push_back(std::move(l));
    }
  }
  return {};
}

void LoginServer::stop(std::function<void()> done) {
  listeners_.clear();
  stopped_ = std::move(done);
  std::vector<std::shared_ptr<Client>> all;
  for (auto& [id, c] : clients_) all.push_back(c);
  for (auto& c : all) {
    if (c->plain) continue;  // a relay: the worker says goodbye through it
    if (c->conn->closing()) continue;
    c->conn->write(c->imap ? "* BYE Server shutting down.\r\n" : "-ERR Server shutting down.\r\n");
    c->conn->close();
  }
  stop_timer_ = std::make_unique<common::ev::Timer>(*ctx_.loop);
  stop_timer_->start(kStopGraceMs, [this] {
    std::vector<std::shared_ptr<Client>> left;
    for (auto& [id, c] : clients_) left.push_back(c);
    for (auto& c : left) c->conn->abort();
    if (clients_.empty()) maybe_stopped();
  });
  maybe_stopped();
}

void LoginServer::maybe_stopped() {
  if (!stopped_ || !clients_.empty()) return;
  std::function<void()> done = std::move(stopped_);
  stopped_ = nullptr;
  if (stop_timer_) stop_timer_->stop();
  // One round later than the clients' release lambdas posted with it (see closed()):
  // `done` destroys this server, which they must not outlive.
  common::ev::Loop* loop = &*ctx_.loop;
  loop->post([loop, done = std::move(done)]() mutable { loop->post(std::move(done)); });
}

void LoginServer::accept(UniqueFd fd, const std::string& service) {
  common::fault::point("mra.login.accept");  // the sandbox tests
  auto c = std::make_shared<Client>();
  c->id = ++next_id_;
  c->imap = service == "imap" || service == "imaps";
  c->service = c->imap ? "imap-login" : "pop3-login";
  const bool implicit_tls = service == "imaps" || service == "pop3s";
  common::net::Connection::Options o;
  // Small: a TLS connection stays here for its whole life (the relay), and keeps
  // its read buffer; BoringSSL reassembles records from several reads.
  o.read_chunk = 4096;
  o.absolute_timeout_ms = static_cast<uint64_t>(cfg_.seconds("login_timeout")) * 1000;
  c->conn = Connection::adopt(*ctx_.loop, std::move(fd), o);
  c->peer = c->conn->peer();
  c->started_ms = ctx_.loop->now_ms();
  common::log::Channel log(c->service);

  // Limits before anything is parsed: anyone can connect.
  const uint64_t per_ip = static_cast<uint64_t>(cfg_.integer("login_max_connections_per_ip"));
  const uint64_t total = std::min(static_cast<uint64_t>(cfg_.integer("login_max_connections")), fd_room_);
  std::string refuse;
  if (per_ip_[c->peer.address] >= per_ip) {
    refuse = "Too many connections from your IP address.";
    log.warning("Disconnected: too many connections from %s (login_max_connections_per_ip=%llu)",
                c->peer.address.c_str(), static_cast<unsigned long long>(per_ip));
  } else if (clients_.size() >= total) {
    refuse = "Server is busy, try again later.";
    log.warning("Disconnected: login_max_connections=%llu reached", static_cast<unsigned long long>(total));
  }
  if (per_ip_[c->peer.address] == 0 && !refuse.empty()) per_ip_.erase(c->peer.address);
  if (!refuse.empty()) {
    c->conn->start({});
    c->conn->write(c->imap ? "* BYE [UNAVAILABLE] " + refuse + "\r\n" : "-ERR [SYS/TEMP] " + refuse + "\r\n");
    c->conn->close();
    return;
  }
  ++per_ip_[c->peer.address];
  c->ip_counted = true;

  if (c->imap) {
    imap::SessionConfig sc;
    sc.tls = implicit_tls;
    sc.starttls = tls_ != nullptr;
    sc.plaintext_auth_without_tls = !cfg_.boolean("disable_plaintext_auth");
    sc.mechanisms = offered_mechanisms();
    sc.login_limits.max_line = static_cast<size_t>(cfg_.bytes("imap_login_max_line_length"));
    sc.login_limits.max_literal = sc.login_limits.max_line;
    sc.login_limits.max_command = sc.login_limits.max_line * 2;
    // The worker's limits, for the capabilities announced with the tagged OK.
    sc.limits.max_line = static_cast<size_t>(cfg_.bytes("imap_max_line_length"));
    sc.limits.max_append = cfg_.bytes("imap_append_limit");
    sc.max_bad_commands = static_cast<int>(cfg_.integer("imap_max_bad_commands"));
    sc.now = [] { return static_cast<int64_t>(::time(nullptr)); };
    c->proto = std::make_unique<ProtoOf<imap::ImapSession>>(std::move(sc));
  } else {
    pop3::SessionConfig sc;
    sc.tls = implicit_tls;
    sc.starttls = tls_ != nullptr;
    sc.plaintext_auth_without_tls = !cfg_.boolean("disable_plaintext_auth");
    sc.mechanisms = offered_mechanisms();
    sc.max_bad_commands = static_cast<int>(cfg_.integer("imap_max_bad_commands"));
    c->proto = std::make_unique<ProtoOf<pop3::Pop3Session>>(std::move(sc));
  }
  clients_[c->id] = c;
  std::weak_ptr<Client> weak = c;
  Connection::Callbacks cb;
  cb.on_data = [this, weak](std::string_view data) {
    auto c = weak.lock();
    if (!c || c->handing_over) return;
    if (c->plain) {
      c->plain->write(data);
      // The worker reads slowly: stop taking the client's input until it drains.
      if (c->plain->pending_output() > (1u << 20)) c->conn->pause_reading();
      return;
    }
    c->proto->feed(data);
    // Back-pressure: a client that floods us while we wait for tern-authd or for
    // its output to drain is not read further.
    if (c->proto->buffered() > handoff::kMaxBuffered) c->conn->pause_reading();
    pump(c);
  };
  cb.on_drain = [this, weak] {
    auto c = weak.lock();
    if (!c) return;
    if (c->plain) {
      c->plain->resume_reading();
    } else if (!c->handing_over) {
      pump(c);
    }
  };
  cb.on_tls_ready = [this, weak] {
    auto c = weak.lock();
    if (!c) return;
    c->proto->tls_started();
    pump(c);
  };
  cb.on_timeout = [weak](common::net::TimeoutKind) {
    auto c = weak.lock();
    if (!c) return;
    c->conn->write(c->proto->bye("Disconnected for inactivity."));
    c->conn->close();
  };
  cb.on_close = [this, weak](common::net::CloseReason, const std::string&) {
    if (auto c = weak.lock()) closed(c);
  };
  c->conn->start(std::move(cb));
  if (implicit_tls) c->conn->start_tls(common::tls::server_filter(*tls_));
  c->conn->write(c->proto->greeting());
}

void LoginServer::pump(const std::shared_ptr<Client>& c) {
  // Bounded per call: pre-login input is bounded by the cores' limits and by the
  // connection's back-pressure, and every command produces output or an error.
  while (!c->conn->closing() && !c->handing_over && !c->auth_busy) {
    if (c->conn->pending_output() > (256u << 10)) return;  // on_drain resumes
    std::string out;
    Act a = c->proto->step(out);
    if (!out.empty()) c->conn->write(out);
    switch (a) {
      case Act::kNeedInput:
      case Act::kIdle:
        if (c->proto->buffered() <= handoff::kMaxBuffered) c->conn->resume_reading();
        return;
      case Act::kContinue:
        continue;
      case Act::kStartTls:
        if (!tls_) {
          c->conn->close();
          return;
        }
        c->conn->start_tls(common::tls::server_filter(*tls_));
        return;  // on_tls_ready goes on
      case Act::kAuthenticate:
        begin_auth(c);
        return;
      case Act::kAuthCancel:
        if (c->auth_id) auth_->cancel(*c->auth_id);
        c->auth_id.reset();
        c->success.reset();
        continue;
      case Act::kLoggedIn:
        return;  // only after auth_result(), handled there
      case Act::kClose:
        c->conn->close();
        return;
    }
  }
}

void LoginServer::begin_auth(const std::shared_ptr<Client>& c) {
  if (c->success) {
    // The answer to the final server message: any answer but a cancel completes it
    // (RFC 4422 5: the client checks the server's proof; the server only waits).
    common::auth::AuthSuccess ok = std::move(*c->success);
    c->success.reset();
    c->user = ok.user;
    std::string out;
    Act a = c->proto->auth_result(true, ok.user, false, out);
    if (a == Act::kLoggedIn) hand_over(c, ok.id, ok.user, std::move(out));
    return;
  }
  c->auth_busy = true;
  c->conn->pause_reading();  // input waits until tern-authd answers
  if (c->auth_id) {
    // The client's answer to a challenge.
    if (c->mech == "LOGIN" && c->user.empty()) c->user = c->proto->auth_response();  // LOGIN's first answer
    auth_->respond(*c->auth_id, c->proto->auth_response());
    return;
  }
  ++c->attempts;
  c->mech = c->proto->mechanism();
  c->user = plain_user(c->proto->initial_response());
  common::auth::AuthParams p;
  p.mech = c->mech;
  p.service = c->imap ? "imap" : "pop3";
  p.local_ip = c->peer.local_address;
  p.remote_ip = c->peer.address;
  p.local_port = c->peer.local_port;
  p.remote_port = c->peer.port;
  p.secured = c->conn->tls_active();
  p.initial_response = c->proto->initial_response();
  std::weak_ptr<Client> weak = c;
  c->auth_id = auth_->start(
      p,
      [this, weak](uint32_t, const std::string& challenge) {
        auto c = weak.lock();
        if (!c || c->conn->closing()) return;
        c->conn->write(c->proto->auth_challenge(challenge));
        c->auth_busy = false;
        c->conn->resume_reading();
        pump(c);
      },
      [this, weak](Result<common::auth::AuthSuccess> r) {
        if (auto c = weak.lock()) auth_done(c, std::move(r));
      });
}

void LoginServer::auth_done(const std::shared_ptr<Client>& c, Result<common::auth::AuthSuccess> r) {
  c->auth_id.reset();
  c->auth_busy = false;
  if (c->conn->closing()) return;
  std::string out;
  if (r && !r->final_data.empty()) {
    c->user = r->user;
    c->conn->write(c->proto->auth_challenge(r->final_data));
    c->success = std::move(r).value();
  } else if (r) {
    c->user = r->user;
    Act a = c->proto->auth_result(true, r->user, false, out);
    if (a == Act::kLoggedIn) {
      hand_over(c, r->id, r->user, std::move(out));
      return;
    }
  } else {
    Act a = c->proto->auth_result(false, "", r.error().kind == ErrorKind::kTemp, out);
    c->conn->write(out);
    if (a == Act::kClose) {
      c->conn->close();
      return;
    }
  }
  c->conn->resume_reading();
  pump(c);
}

void LoginServer::hand_over(const std::shared_ptr<Client>& c, uint32_t auth_id, const std::string& user,
                            std::string ok_line) {
  c->handing_over = true;
  c->conn->pause_reading();
  std::string buffered = c->proto->take_buffered();
  if (buffered.size() > handoff::kMaxBuffered) {
    c->conn->write(c->proto->bye("Too much input pipelined after login."));
    c->conn->close();
    return;
  }
  const bool tls = c->conn->tls_active();
  handoff::Fields f{
      {"proto", c->imap ? "imap" : "pop3"},
      {"auth_id", std::to_string(auth_id)},
      {"auth_pid", std::to_string(auth_->pid())},
      {"cookie", auth_->cookie()},
      {"user", user},
      {"method", c->mech},
      {"rip", c->peer.address},
      {"rport", std::to_string(c->peer.port)},
      {"lip", c->peer.local_address},
      {"lport", std::to_string(c->peer.local_port)},
      {"tls", tls ? "1" : "0"},
      {"buffered", buffered},
      {"ok", ok_line},
  };
  std::string packet = handoff::frame(handoff::encode("LOGIN", f));
  Result<UniqueFd> sock = common::net::connect_unix(socket_dir() + "/mra-postlogin");
  if (!sock) {
    common::log::Channel(c->service).error("cannot reach tern-mra-postlogin: %s", sock.error().message.c_str());
    fail_handover(c, "temp", "");
    return;
  }
  int fd_to_send = c->conn->fd();
  if (tls) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
      common::log::Channel(c->service).error("socketpair: %s", std::strerror(errno));
      fail_handover(c, "temp", "");
      return;
    }
    c->relay_end.reset(sv[0]);
    UniqueFd theirs(sv[1]);
    Status s = common::net::send_fd(sock->get(), theirs.get(), packet);
    if (!s) {
      common::log::Channel(c->service).error("hand-over to tern-mra-postlogin: %s", s.error().message.c_str());
      fail_handover(c, "temp", "");
      return;
    }
  } else if (Status s = common::net::send_fd(sock->get(), fd_to_send, packet); !s) {
    common::log::Channel(c->service).error("hand-over to tern-mra-postlogin: %s", s.error().message.c_str());
    fail_handover(c, "temp", "");
    return;
  }
  c->postlogin = std::move(sock).value();
  c->postlogin_watch = std::make_unique<common::ev::FdWatch>(*ctx_.loop, c->postlogin.get());
  std::weak_ptr<Client> weak = c;
  c->postlogin_watch->start(UV_READABLE, [this, weak](int, int) {
    auto c = weak.lock();
    if (!c || !c->postlogin) return;
    char buf[4096];
    ssize_t n = ::recv(c->postlogin.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) c->postlogin_in.append(buf, static_cast<size_t>(n));
    std::optional<size_t> len = handoff::frame_length(c->postlogin_in);
    if (n > 0 && (!len || c->postlogin_in.size() < *len + 4) && c->postlogin_in.size() < 4096) return;
    c->postlogin_watch->stop();
    std::string packet = len && c->postlogin_in.size() >= *len + 4 ? c->postlogin_in.substr(4, *len) : "";
    ctx_.loop->post([this, weak, packet] {
      if (auto c = weak.lock()) handover_reply(c, packet);
    });
  });
}

void LoginServer::handover_reply(const std::shared_ptr<Client>& c, const std::string& data) {
  c->postlogin_watch.reset();
  c->postlogin.reset();
  if (c->conn->closed()) return;
  std::optional<handoff::Packet> p = handoff::decode(data);
  if (!p || (p->verb != "OK" && p->verb != "FAIL")) {
    common::log::Channel(c->service).error("tern-mra-postlogin gave no usable answer for user=<%s>",
                                           common::log_escape(c->user).c_str());
    fail_handover(c, "temp", "");
    return;
  }
  if (p->verb == "FAIL") {
    fail_handover(c, p->get("kind"), p->get("text"));
    return;
  }
  const bool tls = c->conn->tls_active();
  common::log::Channel(c->service)
      .info("Login: user=<%s>, method=%s, rip=%s, lip=%s, mpid=%s%s, session=<%llx>",
            common::log_escape(c->user).c_str(), c->mech.c_str(), c->peer.address.c_str(),
            c->peer.local_address.c_str(), p->get("pid").c_str(), tls ? ", TLS" : "",
            static_cast<unsigned long long>(c->id));
  c->handed_over = true;
  if (!tls) {
    // The worker holds the socket now; close only our descriptor.
    release_ip(*c);
    c->conn->abort();
    return;
  }
  start_relay(c);
}

void LoginServer::start_relay(const std::shared_ptr<Client>& c) {
  common::net::Connection::Options o;
  o.read_chunk = 4096;
  c->plain = Connection::adopt(*ctx_.loop, std::move(c->relay_end), o);
  c->conn->set_absolute_timeout(0);  // the worker times the session out from now on
  c->handing_over = false;
  std::weak_ptr<Client> weak = c;
  Connection::Callbacks cb;
  cb.on_data = [weak](std::string_view data) {
    auto c = weak.lock();
    if (!c) return;
    c->conn->write(data);
    // The client reads slowly: stop taking the worker's output until it drains.
    if (c->conn->pending_output() > (1u << 20)) c->plain->pause_reading();
  };
  cb.on_drain = [weak] {
    if (auto c = weak.lock()) c->conn->resume_reading();
  };
  cb.on_close = [weak](common::net::CloseReason, const std::string&) {
    if (auto c = weak.lock()) c->conn->close();
  };
  c->plain->start(std::move(cb));
  c->conn->resume_reading();
}

void LoginServer::fail_handover(const std::shared_ptr<Client>& c, const std::string& kind, const std::string& text) {
  if (c->conn->closing()) return;
  std::string reason = !text.empty() && kind == "limit" ? text : "Internal error occurred. Refer to server log for more information.";
  if (c->imap) {
    c->conn->write("* BYE " + std::string(kind == "limit" ? "" : "[UNAVAILABLE] ") + reason + "\r\n");
  } else {
    c->conn->write("-ERR " + std::string(kind == "limit" ? "[IN-USE] " : "[SYS/TEMP] ") + reason + "\r\n");
  }
  c->conn->close();
}

void LoginServer::release_ip(Client& c) {
  if (!c.ip_counted) return;
  c.ip_counted = false;
  auto it = per_ip_.find(c.peer.address);
  if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
}

void LoginServer::closed(const std::shared_ptr<Client>& c) {
  if (c->auth_id) auth_->cancel(*c->auth_id);
  c->auth_id.reset();
  if (c->plain) c->plain->close();
  release_ip(*c);
  if (!c->handed_over) {
    const uint64_t secs = (ctx_.loop->now_ms() - c->started_ms) / 1000;
    std::string why = c->attempts ? "auth failed, " + std::to_string(c->attempts) + " attempts in " +
                                        std::to_string(secs) + " secs"
                                  : "no auth attempts in " + std::to_string(secs) + " secs";
    std::string fields = c->user.empty() && !c->attempts ? "user=<>" : "user=<" + common::log_escape(c->user) + ">";
    if (!c->mech.empty()) fields += ", method=" + c->mech;
    common::log::Channel(c->service)
        .info("Disconnected (%s): %s, rip=%s, lip=%s%s, session=<%llx>", why.c_str(), fields.c_str(),
              c->peer.address.c_str(), c->peer.local_address.c_str(), c->conn->tls_active() ? ", TLS" : "",
              static_cast<unsigned long long>(c->id));
  }
  std::shared_ptr<Client> keep = c;
  clients_.erase(c->id);
  // Objects owning loop handles are destroyed outside their own callbacks.
  ctx_.loop->post([keep] {});
  // No client left: return the heap their buffers and TLS sessions grew (glibc keeps
  // freed memory below the heap's top otherwise), so a burst of logins does not stay
  // in the login process's footprint.
  // A second later and only if still so, not on every gap between two logins.
  if (clients_.empty()) {
    if (!trim_timer_) trim_timer_ = std::make_unique<common::ev::Timer>(*ctx_.loop);
    trim_timer_->start(1000, [this] {
      if (clients_.empty()) ::malloc_trim(0);
    });
  }
  maybe_stopped();
}

}  // namespace tern::mra
