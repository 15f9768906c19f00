#include "mta/smtp_client_conn.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/maillog.h"
#include "common/text.h"

namespace tern::mta {

using common::smtp::Reply;

namespace {

// RFC 5321 4.5.3.1.5 says 512 octets; be generous, but a line is never unbounded.
constexpr size_t kMaxReplyLine = 4096;
constexpr size_t kChunk = 64 << 10;
constexpr size_t kOutputBacklog = 512 << 10;  // write body pieces while less than this waits

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// A server reply turned into the deferral it causes: same detail, class 4.
std::string deferral_dsn(const Reply& r, const char* fallback) {
  if (r.enhanced.size() >= 5 && (r.enhanced[0] == '4' || r.enhanced[0] == '5')) return "4" + r.enhanced.substr(1);
  return fallback;
}

}  // namespace

std::shared_ptr<SmtpClientConn> SmtpClientConn::open(common::ev::Loop& loop, SmtpClientOptions options, Target target,
                                                     Events events) {
  std::shared_ptr<SmtpClientConn> c(new SmtpClientConn(loop, std::move(options), std::move(target), std::move(events)));
  c->self_ = c;
  c->start();
  return c;
}

SmtpClientConn::SmtpClientConn(common::ev::Loop& loop, SmtpClientOptions options, Target target, Events events)
    : loop_(loop),
      opt_(std::move(options)),
      target_(std::move(target)),
      ev_(std::move(events)),
      session_(opt_.session),
      lines_(kMaxReplyLine) {}

SmtpClientConn::~SmtpClientConn() = default;

std::string SmtpClientConn::peer() const {
  std::string addr = target_.address.find(':') != std::string::npos ? "IPv6:" + target_.address : target_.address;
  return common::maillog::endpoint(target_.host, addr);
}

std::string SmtpClientConn::relay() const { return peer() + ":" + std::to_string(target_.port); }

void SmtpClientConn::start() {
  t_open_ = std::chrono::steady_clock::now();
  common::net::Connection::Options o;
  o.idle_timeout_ms = opt_.timeouts.helo_ms;
  o.close_flush_ms = opt_.timeouts.quit_ms;
  const bool v6 = target_.address.find(':') != std::string::npos;
  std::weak_ptr<SmtpClientConn> weak = weak_from_this();
  common::net::Connection::connect_tcp(
      loop_, target_.address, target_.port, v6 ? opt_.bind6 : opt_.bind4, opt_.timeouts.connect_ms, o,
      [weak](common::Result<std::shared_ptr<common::net::Connection>> c) {
        auto self = weak.lock();
        if (!self || self->ended_) {
          if (c) (*c)->abort();
          return;
        }
        if (!c) {
          // "connect 192.0.2.7:25: Connection refused" -> the reason alone.
          std::string why = c.error().message;
          size_t colon = why.rfind(": ");
          if (colon != std::string::npos) why = why.substr(colon + 2);
          self->report_failure({.dsn = "4.4.1", .text = "connect to " + self->relay() + ": " + why});
          return;
        }
        self->connected(std::move(c).value());
      });
}

void SmtpClientConn::connected(std::shared_ptr<common::net::Connection> c) {
  conn_ = std::move(c);
  std::weak_ptr<SmtpClientConn> weak = weak_from_this();
  common::net::Connection::Callbacks cb;
  cb.on_data = [weak](std::string_view d) {
    if (auto s = weak.lock()) s->on_data(d);
  };
  cb.on_drain = [weak] {
    if (auto s = weak.lock()) s->pump_body();
  };
  cb.on_tls_ready = [weak] {
    if (auto s = weak.lock()) s->on_tls_ready();
  };
  cb.on_timeout = [weak](common::net::TimeoutKind) {
    if (auto s = weak.lock()) s->lost("conversation with " + s->relay() + " timed out " + s->session_.stage_text());
  };
  cb.on_close = [weak](common::net::CloseReason reason, const std::string& detail) {
    auto s = weak.lock();
    if (!s || s->ended_) return;
    if (s->quitting_ || reason == common::net::CloseReason::kLocal) {
      s->end();
      return;
    }
    const bool handshaking = s->session_.phase() == ClientSession::Phase::kHandshake ||
                             (s->opt_.session.tls_on_connect && s->conn_ && !s->conn_->tls_ready());
    if (handshaking) {
      s->report_failure({.dsn = "4.7.5",
                         .text = "Cannot start TLS: handshake failure with " + s->relay() +
                                 (detail.empty() ? "" : ": " + common::log_escape(detail, 200)),
                         .greeted = s->session_.phase() != ClientSession::Phase::kGreeting,
                         .tls_failed = true,
                         .relay = s->relay()});
      return;
    }
    s->lost("lost connection with " + s->relay() + " " + s->session_.stage_text());
  };
  conn_->start(std::move(cb));
  if (opt_.session.tls_on_connect) {
    if (!opt_.tls) {
      report_failure({.dsn = "4.7.5", .text = "Cannot start TLS: no client TLS context", .next_host = false});
      return;
    }
    conn_->start_tls(common::tls::client_filter(*opt_.tls, target_.host));
  }
  arm_timeout();
}

void SmtpClientConn::on_tls_ready() {
  if (ended_ || !conn_) return;
  const char* trust = opt_.session.tls == TlsPolicy::kVerify ? "Verified" : "Untrusted";
  common::maillog::tls_established_to("smtp", trust, relay(), conn_->filter()->description());
  if (session_.phase() == ClientSession::Phase::kHandshake) {
    ClientSession::Out out;
    session_.tls_ready(out);
    apply(out);
    after_step();
  }
}

void SmtpClientConn::on_data(std::string_view d) {
  if (ended_) return;
  lines_.feed(d);
  common::LineReader::Line line;
  while (!ended_) {
    common::LineReader::Status st = lines_.next(line);
    if (st == common::LineReader::Status::kNeedMore) return;
    if (st == common::LineReader::Status::kTooLong) {
      lost("protocol error: reply line too long from " + relay());
      return;
    }
    common::smtp::ReplyParser::Status ps = parser_.feed(line.text);
    if (ps == common::smtp::ReplyParser::Status::kNeedMore) continue;
    if (ps == common::smtp::ReplyParser::Status::kError) {
      lost("protocol error from " + relay() + ": " + parser_.error());
      return;
    }
    Reply r = parser_.take();
    ClientSession::Out out;
    session_.on_reply(r, out);
    apply(out);
    if (out.start_tls) {
      // Whatever the server sent after "220" in plaintext is not to be trusted as
      // coming through TLS: drop it (RFC 3207 5, CVE-2011-0411 on the client side).
      lines_.clear();
      parser_ = common::smtp::ReplyParser(false);
      arm_timeout();
      return;
    }
    after_step();
  }
}

void SmtpClientConn::apply(ClientSession::Out& out) {
  if (!conn_ || ended_) return;
  if (!out.write.empty()) conn_->write(out.write);
  if (out.start_tls) {
    if (!opt_.tls) {
      report_failure({.dsn = "4.7.5", .text = "Cannot start TLS: no client TLS context", .next_host = false, .greeted = true});
      return;
    }
    conn_->start_tls(common::tls::client_filter(*opt_.tls, target_.host));
  }
  if (out.close) {
    quitting_ = true;
    conn_->close();
  }
}

void SmtpClientConn::after_step() {
  if (ended_) return;
  // Enhanced status codes are split off replies only when the server announced them.
  parser_.set_enhanced(session_.caps().enhanced);
  const ClientSession::Phase phase = session_.phase();
  if (message_ && session_.results_ready()) {
    TransactionOutcome o;
    o.replies = session_.take_results();
    o.seconds = since(t_tx_);
    message_.reset();
    ev_.done(*this, std::move(o));
    if (ended_) return;
  }
  if (phase == ClientSession::Phase::kFailed) {
    if (quitting_) return;  // QUIT answered; the close is on its way
    if (!was_ready_) {
      establish_failed(session_.failure());
      return;
    }
    if (conn_) conn_->abort();
    end();
    return;
  }
  if (phase == ClientSession::Phase::kBody && message_) pump_body();
  if (ended_) return;
  if (session_.phase() == ClientSession::Phase::kReady && !message_) {
    if (!was_ready_) {
      was_ready_ = true;
      setup_seconds_ = since(t_open_);
    }
    arm_timeout();
    ev_.ready(*this);
    return;
  }
  arm_timeout();
}

void SmtpClientConn::arm_timeout() {
  if (!conn_ || ended_) return;
  const SmtpClientTimeouts& t = opt_.timeouts;
  uint64_t ms = 0;
  if (session_.phase() == ClientSession::Phase::kBody) {
    ms = t.data_xfer_ms;
  } else {
    switch (session_.waiting_for()) {
      case ClientSession::Wait::kGreeting:
      case ClientSession::Wait::kHello:
      case ClientSession::Wait::kAuth: ms = t.helo_ms; break;
      case ClientSession::Wait::kStartTls: ms = t.starttls_ms; break;
      case ClientSession::Wait::kMail: ms = t.mail_ms; break;
      case ClientSession::Wait::kRcpt: ms = t.rcpt_ms; break;
      case ClientSession::Wait::kData: ms = t.data_init_ms; break;
      case ClientSession::Wait::kDataDone: ms = t.data_done_ms; break;
      case ClientSession::Wait::kReset:
      case ClientSession::Wait::kQuit: ms = t.quit_ms; break;
      case ClientSession::Wait::kNothing: ms = 0; break;  // idle: the owner's cache timer decides
    }
  }
  conn_->set_idle_timeout(ms);
}

void SmtpClientConn::send(std::unique_ptr<OutboundMessage> message) {
  if (ended_ || session_.phase() != ClientSession::Phase::kReady || message_) {
    // A bug in the owner; the message comes back as a temporary failure.
    TransactionOutcome o;
    for (size_t i = 0; i < message->tx.rcpts.size(); ++i) {
      o.replies.push_back({Reply(451, "4.3.0", "internal error: connection not ready"), ""});
    }
    common::log::warning("smtp: %s: send() on a connection that is not ready", relay().c_str());
    ev_.done(*this, std::move(o));
    return;
  }
  message_ = std::move(message);
  message_->tx.size = message_->fd ? message_->fd_size : message_->data.size();
  body_off_ = 0;
  stuffer_ = DotStuffer();
  t_tx_ = std::chrono::steady_clock::now();
  ClientSession::Out out;
  session_.begin(message_->tx, out);
  apply(out);
  after_step();
}

void SmtpClientConn::pump_body() {
  if (ended_ || !message_ || session_.phase() != ClientSession::Phase::kBody || !conn_) return;
  const bool bdat = session_.use_bdat();
  const uint64_t total = message_->fd ? message_->fd_size : message_->data.size();
  while (conn_->pending_output() < kOutputBacklog) {
    std::string piece;
    const uint64_t left = total - body_off_;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, left));
    if (!message_->fd) {
      piece.assign(message_->data, static_cast<size_t>(body_off_), n);
    } else if (n > 0) {
      piece.resize(n);
      ssize_t got = ::pread(message_->fd.get(), piece.data(), n, static_cast<off_t>(body_off_));
      if (got <= 0) {
        // The queue file went short under us: the peer cannot be given a partial
        // message (BDAT promised the size), so the connection goes.
        lost(std::string("cannot read queued message: ") + (got < 0 ? std::strerror(errno) : "file is shorter than recorded"));
        return;
      }
      piece.resize(static_cast<size_t>(got));
    }
    body_off_ += piece.size();
    const bool end = body_off_ >= total;
    if (bdat) {
      if (!piece.empty()) conn_->write(piece);
    } else {
      std::string stuffed;
      stuffer_.feed(piece, stuffed);
      if (end) stuffer_.finish(stuffed);
      conn_->write(stuffed);
    }
    if (end) {
      ClientSession::Out out;
      session_.body_sent(out);
      apply(out);
      arm_timeout();
      return;
    }
  }
}

void SmtpClientConn::lost(const std::string& why) {
  if (ended_) return;
  if (!was_ready_) {
    report_failure({.dsn = "4.4.2", .text = why, .greeted = session_.phase() != ClientSession::Phase::kGreeting});
    return;
  }
  session_.connection_lost(Reply(421, "4.4.2", why));
  if (message_ && session_.results_ready()) {
    TransactionOutcome o;
    o.replies = session_.take_results();
    o.seconds = since(t_tx_);
    message_.reset();
    ev_.done(*this, std::move(o));
  }
  if (conn_) conn_->abort();
  end();
}

void SmtpClientConn::establish_failed(const ClientSession::Failure& f) {
  ConnectFailure cf;
  cf.greeted = true;
  cf.relay = relay();
  const std::string said = "host " + peer() + " said: " + f.reply.summary() + " (in reply to " + f.stage + " command)";
  switch (f.kind) {
    case ClientSession::FailureKind::kGreeting:
      cf.dsn = deferral_dsn(f.reply, "4.3.0");
      cf.text = "host " + peer() + " refused to talk to me: " + f.reply.summary();
      break;
    case ClientSession::FailureKind::kHello:
      cf.dsn = deferral_dsn(f.reply, "4.3.0");
      cf.text = said;
      break;
    case ClientSession::FailureKind::kTlsRequired:
      cf.dsn = "4.7.4";
      cf.text = f.stage == "STARTTLS" ? "TLS is required, but host " + peer() + " refused to start TLS: " + f.reply.summary()
                                      : "TLS is required, but was not offered by host " + peer();
      break;
    case ClientSession::FailureKind::kAuth:
      cf.dsn = "4.7.0";
      cf.text = f.local ? "SASL authentication failed; cannot authenticate to server " + peer() + ": " + f.detail
                        : "SASL authentication failed; server " + peer() + " said: " + f.reply.summary();
      break;
    case ClientSession::FailureKind::kLoop:
      cf.dsn = "5.4.6";
      cf.text = "mail loops back to myself: " + f.detail + " at " + relay();
      cf.next_host = false;
      cf.permanent = true;
      break;
    case ClientSession::FailureKind::kProtocol:
    case ClientSession::FailureKind::kReset:
      cf.dsn = "4.5.0";
      cf.text = f.detail.empty() ? said : "protocol error with " + relay() + ": " + f.detail;
      break;
  }
  report_failure(std::move(cf));
}

void SmtpClientConn::report_failure(ConnectFailure f) {
  if (ended_) return;
  ended_ = true;
  if (conn_) conn_->abort();
  if (ev_.failed) ev_.failed(*this, f);
  auto self = std::move(self_);
  loop_.post([self] {});
}

void SmtpClientConn::quit() {
  if (ended_ || !conn_) return;
  ClientSession::Out out;
  session_.quit(out);
  quitting_ = true;
  conn_->write(out.write);
  conn_->set_idle_timeout(opt_.timeouts.quit_ms);
  // Postfix does not wait for the QUIT reply either; close() flushes first.
  conn_->close();
}

void SmtpClientConn::abort() {
  if (ended_) return;
  quitting_ = true;
  if (conn_) conn_->abort();
  end();
}

void SmtpClientConn::end() {
  if (ended_) return;
  ended_ = true;
  if (was_ready_) {
    if (ev_.closed) ev_.closed(*this);
  } else if (ev_.failed) {
    ev_.failed(*this, ConnectFailure{.dsn = "4.4.2", .text = "connection with " + relay() + " closed"});
  }
  auto self = std::move(self_);
  loop_.post([self] {});
}

}  // namespace tern::mta
