#include "mta/lmtp_client.h"

#include <unistd.h>

#include <chrono>
#include <cstring>

#include "common/connection.h"
#include "common/line_reader.h"
#include "common/text.h"

namespace tern::mta {

using common::smtp::Reply;

void DotStuffer::feed(std::string_view in, std::string& out) {
  for (char c : in) {
    if (line_start_ && c == '.') out += '.';
    out += c;
    line_start_ = c == '\n' && last_ == '\r';
    before_last_ = last_;
    last_ = c;
  }
}

void DotStuffer::finish(std::string& out) {
  if (!(last_ == '\n' && before_last_ == '\r')) out += "\r\n";
  out += ".\r\n";
  line_start_ = true;
}

namespace {

// Bound on the server's reply lines: RFC 5321 4.5.3.1.5 says 512; be generous.
constexpr size_t kMaxReplyLine = 4096;
constexpr size_t kChunk = 64 << 10;

class LmtpSession final : public LmtpInFlight, public std::enable_shared_from_this<LmtpSession> {
 public:
  LmtpSession(common::ev::Loop& loop, std::unique_ptr<LmtpJob> job, std::function<void(LmtpOutcome)> done)
      : loop_(loop), job_(std::move(job)), done_(std::move(done)), lines_(kMaxReplyLine) {
    out_.relay = "tern-mda[" + job_->socket_path + "]";
  }

  void abandon() override {
    done_ = nullptr;
    state_ = State::kDone;
    if (conn_) conn_->abort();
    auto last = std::move(self_);  // freed when the caller lets go
  }

  void start() {
    self_ = shared_from_this();  // alive until the outcome is delivered
    t0_ = std::chrono::steady_clock::now();
    common::net::Connection::Options o;
    o.idle_timeout_ms = job_->timeout_ms;
    auto self = shared_from_this();
    common::net::Connection::connect_unix(loop_, job_->socket_path, o,
                                          [self](common::Result<std::shared_ptr<common::net::Connection>> c) {
                                            if (!c) {
                                              self->fail("4.4.1", "connect to " + self->out_.relay + ": " +
                                                                      c.error().message);
                                              return;
                                            }
                                            self->connected(std::move(c).value());
                                          });
  }

 private:
  enum class State { kGreeting, kLhlo, kMail, kRcpt, kData, kBody, kFinal, kQuit, kDone };

  void connected(std::shared_ptr<common::net::Connection> c) {
    conn_ = std::move(c);
    out_.connect_seconds = elapsed();
    t1_ = std::chrono::steady_clock::now();
    std::weak_ptr<LmtpSession> weak = weak_from_this();
    common::net::Connection::Callbacks cb;
    cb.on_data = [weak](std::string_view d) {
      if (auto s = weak.lock()) s->on_data(d);
    };
    cb.on_close = [weak](common::net::CloseReason, const std::string& detail) {
      if (auto s = weak.lock()) {
        if (s->state_ != State::kDone && s->state_ != State::kQuit) {
          s->fail("4.4.2", "lost connection with " + s->out_.relay + (detail.empty() ? "" : ": " + detail));
        } else {
          s->finish();
        }
      }
    };
    cb.on_drain = [weak] {
      if (auto s = weak.lock()) s->pump_body();
    };
    cb.on_timeout = [weak](common::net::TimeoutKind) {
      if (auto s = weak.lock()) {
        s->fail("4.4.2", "conversation with " + s->out_.relay + " timed out");
      }
    };
    conn_->start(std::move(cb));
  }

  double elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

  void on_data(std::string_view d) {
    lines_.feed(d);
    common::LineReader::Line line;
    while (state_ != State::kDone) {
      common::LineReader::Status st = lines_.next(line);
      if (st == common::LineReader::Status::kNeedMore) return;
      if (st == common::LineReader::Status::kTooLong) {
        fail("4.4.2", "protocol error: reply line too long from " + out_.relay);
        return;
      }
      common::smtp::ReplyParser::Status ps = parser_.feed(line.text);
      if (ps == common::smtp::ReplyParser::Status::kNeedMore) continue;
      if (ps == common::smtp::ReplyParser::Status::kError) {
        fail("4.4.2", "protocol error from " + out_.relay + ": " + parser_.error());
        return;
      }
      on_reply(parser_.take());
    }
  }

  void on_reply(const Reply& r) {
    switch (state_) {
      case State::kGreeting:
        if (r.code != 220) return fail_with(r, "greeting");
        parser_.set_enhanced(false);
        conn_->write("LHLO " + job_->lhlo_name + "\r\n");
        state_ = State::kLhlo;
        return;
      case State::kLhlo: {
        if (r.code != 250) return fail_with(r, "LHLO");
        bool enhanced = false;
        for (const std::string& l : r.lines) {
          std::string u = l;
          for (char& ch : u) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
          if (u == "ENHANCEDSTATUSCODES") enhanced = true;
          if (u == kDeliveryIdKeyword) delivery_id_ = true;
          if (u == "8BITMIME") eightbit_ = true;
          if (u == "SMTPUTF8") smtputf8_ = true;
        }
        parser_.set_enhanced(enhanced);
        // RFC 2033 4.1: LMTP servers support PIPELINING; send the envelope at once.
        std::string cmds = "MAIL FROM:<" + job_->sender + ">";
        if (job_->body_8bit && eightbit_) cmds += " BODY=8BITMIME";
        if (job_->smtputf8 && smtputf8_) cmds += " SMTPUTF8";
        if (delivery_id_) cmds += std::string(" ") + kDeliveryIdKeyword + "=" + job_->queue_id;
        cmds += "\r\n";
        for (const std::string& a : job_->rcpts) cmds += "RCPT TO:<" + a + ">\r\n";
        cmds += "DATA\r\n";
        conn_->write(cmds);
        state_ = State::kMail;
        out_.replies.assign(job_->rcpts.size(), Reply());
        final_.assign(job_->rcpts.size(), false);
        return;
      }
      case State::kMail:
        mail_reply_ = r;
        state_ = State::kRcpt;
        rcpt_index_ = 0;
        if (job_->rcpts.empty()) state_ = State::kData;
        return;
      case State::kRcpt:
        if (!mail_reply_.positive()) {
          out_.replies[rcpt_index_] = mail_reply_;
          final_[rcpt_index_] = true;
        } else {
          out_.replies[rcpt_index_] = r;
          if (r.positive()) {
            accepted_.push_back(rcpt_index_);
          } else {
            final_[rcpt_index_] = true;
          }
        }
        if (++rcpt_index_ == job_->rcpts.size()) state_ = State::kData;
        return;
      case State::kData:
        if (r.code != 354) {
          // Nobody accepted, or the server refused DATA: those recipients that were
          // accepted get the DATA reply as their outcome.
          for (size_t i : accepted_) {
            out_.replies[i] = r;
            final_[i] = true;
          }
          quit();
          return;
        }
        state_ = State::kBody;
        pump_body();
        return;
      case State::kBody:
        fail("4.4.2", "protocol error: reply before the end of DATA from " + out_.relay);
        return;
      case State::kFinal:
        out_.replies[accepted_[final_index_]] = r;
        final_[accepted_[final_index_]] = true;
        if (++final_index_ == accepted_.size()) {
          out_.transfer_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1_).count();
          quit();
        }
        return;
      case State::kQuit:
      case State::kDone: return;
    }
  }

  void pump_body() {
    if (state_ != State::kBody) return;
    // Write while the socket keeps up; on_drain calls back for more.
    while (conn_->pending_output() < (512u << 10)) {
      std::string piece, stuffed;
      if (!job_->body_fd) {
        size_t n = std::min(kChunk, job_->inline_body.size() - body_off_);
        piece.assign(job_->inline_body, body_off_, n);
      } else {
        uint64_t left = job_->body_size - body_off_;
        piece.resize(static_cast<size_t>(std::min<uint64_t>(kChunk, left)));
        ssize_t n = piece.empty() ? 0 : ::pread(job_->body_fd.get(), piece.data(), piece.size(), static_cast<off_t>(body_off_));
        if (n < 0) {
          fail("4.3.0", "cannot read queued message body: " + std::string(std::strerror(errno)));
          return;
        }
        if (n == 0 && left > 0) {
          fail("4.3.0", "queued message body is shorter than recorded");
          return;
        }
        piece.resize(static_cast<size_t>(n));
      }
      body_off_ += piece.size();
      stuffer_.feed(piece, stuffed);
      const bool end = piece.empty() || body_off_ >= (job_->body_fd ? job_->body_size : job_->inline_body.size());
      if (end) stuffer_.finish(stuffed);
      conn_->write(stuffed);
      if (end) {
        state_ = State::kFinal;
        final_index_ = 0;
        return;
      }
    }
  }

  void quit() {
    state_ = State::kQuit;
    conn_->write("QUIT\r\n");
    conn_->close();
  }

  // The session ended before every recipient had its final reply: those get `r`.
  void fail_with(const Reply& r, const char* stage) {
    (void)stage;
    if (out_.replies.size() != job_->rcpts.size()) {
      out_.replies.assign(job_->rcpts.size(), r);
      final_.assign(job_->rcpts.size(), true);
    }
    for (size_t i = 0; i < out_.replies.size(); ++i) {
      if (!final_[i]) {
        out_.replies[i] = r;
        final_[i] = true;
      }
    }
    quit();
  }

  void fail(const std::string& enhanced, const std::string& text) {
    if (state_ == State::kDone) return;
    Reply r(451, enhanced, text);
    if (out_.replies.size() != job_->rcpts.size()) {
      out_.replies.assign(job_->rcpts.size(), r);
      final_.assign(job_->rcpts.size(), true);
    }
    for (size_t i = 0; i < out_.replies.size(); ++i) {
      if (!final_[i]) out_.replies[i] = r;
    }
    state_ = State::kDone;
    if (conn_) conn_->abort();
    deliver_result();
  }

  void finish() {
    if (state_ == State::kDone) return;
    state_ = State::kDone;
    for (size_t i = 0; i < out_.replies.size(); ++i) {
      if (!final_[i]) out_.replies[i] = Reply(451, "4.4.2", "lost connection with " + out_.relay);
    }
    deliver_result();
  }

  void deliver_result() {
    if (!done_) return;
    auto d = std::move(done_);
    done_ = nullptr;
    LmtpOutcome o = std::move(out_);
    auto self = std::move(self_);
    loop_.post([d, o, self]() mutable { d(std::move(o)); });
  }

  common::ev::Loop& loop_;
  std::unique_ptr<LmtpJob> job_;
  std::function<void(LmtpOutcome)> done_;
  std::shared_ptr<common::net::Connection> conn_;
  common::LineReader lines_;
  common::smtp::ReplyParser parser_{false};
  State state_ = State::kGreeting;
  LmtpOutcome out_;
  Reply mail_reply_;
  size_t rcpt_index_ = 0;
  std::vector<size_t> accepted_;
  std::vector<bool> final_;             // the recipient's reply is its final outcome
  std::shared_ptr<LmtpSession> self_;
  size_t final_index_ = 0;
  bool delivery_id_ = false, eightbit_ = false, smtputf8_ = false;
  uint64_t body_off_ = 0;
  DotStuffer stuffer_;
  std::chrono::steady_clock::time_point t0_, t1_;
};

}  // namespace

std::weak_ptr<LmtpInFlight> lmtp_deliver(common::ev::Loop& loop, std::unique_ptr<LmtpJob> job,
                                         std::function<void(LmtpOutcome)> done) {
  auto s = std::make_shared<LmtpSession>(loop, std::move(job), std::move(done));
  s->start();
  return s;
}

}  // namespace tern::mta
