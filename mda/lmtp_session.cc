#include "mda/lmtp_session.h"

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "common/text.h"
#include "mda/delivery_ids.h"

namespace tern::mda {

using common::Result;
using common::smtp::Command;
using common::smtp::CommandOptions;
using common::smtp::Reply;
using common::smtp::Verb;

namespace {

std::string rfc5322_date(time_t t) {
  struct tm tm;
  ::localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
  return buf;
}

}  // namespace

LmtpSession::LmtpSession(Options options, Host* host, std::string session_id)
    : opt_(std::move(options)), host_(host), id_(std::move(session_id)) {}

void LmtpSession::start() {
  reply(Reply(220, "", opt_.hostname + " Tern LMTP ready"));
}

void LmtpSession::reply(const Reply& r) {
  if (closed_) return;
  host_->write(r.format());
}

void LmtpSession::error_reply(const Reply& r) {
  reply(r);
  // Postfix smtpd_hard_error_limit: a client that keeps getting errors is broken or
  // probing; stop listening to it.
  if (++errors_ >= opt_.hard_error_limit) {
    reply(Reply(421, "4.7.0", opt_.hostname + " Error: too many errors"));
    close_now();
  }
}

void LmtpSession::close_now() {
  if (closed_) return;
  closed_ = true;
  state_ = State::kClosed;
  host_->close();
}

void LmtpSession::on_closed() {
  closed_ = true;
  state_ = State::kClosed;
}

void LmtpSession::on_timeout() {
  reply(Reply(421, "4.4.2", opt_.hostname + " Error: timeout exceeded"));
  close_now();
}

void LmtpSession::busy(bool b) {
  busy_ = b;
  if (!closed_) host_->pause(b);
}

void LmtpSession::on_input(std::string_view bytes) {
  if (closed_) return;
  reader_.feed(bytes);
  pump();
}

void LmtpSession::reset_transaction() {
  have_mail_ = false;
  sender_.clear();
  mail_params_ = {};
  rcpts_.clear();
  spool_.reset();
  data_.reset();
  bdat_left_ = 0;
  bdat_last_ = false;
  bdat_bad_ = false;
  bdat_endings_ = {};
}

void LmtpSession::pump() {
  if (in_pump_) return;  // re-entered from a synchronous Host callback
  in_pump_ = true;
  while (!closed_ && !busy_) {
    if (state_ == State::kData) {
      std::string_view buf = reader_.peek();
      if (buf.empty()) break;
      std::string out;
      common::smtp::DataReader::Feed f = data_.feed(buf, out);
      reader_.take_raw(f.consumed);
      spool_->append(out);
      if (f.done) end_of_message();
      continue;
    }
    if (state_ == State::kBdat) {
      std::string_view buf = reader_.peek();
      if (bdat_left_ > 0 && buf.empty()) break;
      size_t n = static_cast<size_t>(std::min<uint64_t>(bdat_left_, buf.size()));
      std::string_view chunk = reader_.take_raw(n);
      bdat_left_ -= n;
      if (!bdat_bad_) {
        if (mail_params_.body != common::smtp::Body::kBinaryMime) bdat_endings_.feed(chunk);
        spool_->append(chunk);
      }
      if (bdat_left_ > 0) continue;
      state_ = State::kCommand;
      if (bdat_bad_) {
        bdat_bad_ = false;
        error_reply(rcpts_.empty() && have_mail_ ? Reply(503, "5.5.1", "Error: no valid recipients")
                                                 : Reply(503, "5.5.1", "Error: need MAIL command"));
        continue;
      }
      if (bdat_last_) {
        end_of_message();
      } else {
        reply(Reply(250, "2.0.0", std::to_string(spool_->received_size()) + " octets received"));
      }
      continue;
    }
    common::LineReader::Line line;
    common::LineReader::Status st = reader_.next(line);
    if (st == common::LineReader::Status::kNeedMore) break;
    if (st == common::LineReader::Status::kTooLong) {
      error_reply(Reply(500, "5.5.2", "Error: line too long"));
      continue;
    }
    if (line.ending == common::LineReader::Ending::kLf && opt_.forbid_bare_newline) {
      reply(Reply(550, "5.5.2", "Error: bare <LF> received"));
      close_now();
      break;
    }
    command(line.text);
  }
  in_pump_ = false;
}

void LmtpSession::command(std::string_view line) {
  CommandOptions co;
  co.lmtp = true;
  co.binarymime = true;
  co.chunking = true;
  co.smtputf8 = true;
  co.dsn = false;
  co.size = true;
  co.delivery_id = host_->delivery_ids();
  common::smtp::CommandResult r = common::smtp::parse_command(line, co);
  if (Reply* rep = std::get_if<Reply>(&r)) {
    error_reply(*rep);
    return;
  }
  Command& c = std::get<Command>(r);
  switch (c.verb) {
    case Verb::kLhlo: {
      helo_ = c.argument;
      reset_transaction();
      std::vector<std::string> lines = {opt_.hostname, "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8",
                                        "CHUNKING", "BINARYMIME"};
      lines.push_back(opt_.size_limit ? "SIZE " + std::to_string(opt_.size_limit) : "SIZE");
      if (host_->delivery_ids()) lines.push_back("XTERN-DELIVERY-ID");
      reply(Reply(250, "", lines));
      return;
    }
    case Verb::kMail:
      do_mail(c);
      return;
    case Verb::kRcpt:
      do_rcpt(c);
      return;
    case Verb::kData:
      do_data();
      return;
    case Verb::kBdat:
      do_bdat(c);
      return;
    case Verb::kRset:
      reset_transaction();
      reply(Reply(250, "2.0.0", "Ok"));
      return;
    case Verb::kNoop:
      reply(Reply(250, "2.0.0", "Ok"));
      return;
    case Verb::kQuit:
      reply(Reply(221, "2.0.0", "Bye"));
      close_now();
      return;
    case Verb::kHelp:
      reply(Reply(214, "2.0.0", "Commands: LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT"));
      return;
    case Verb::kVrfy:
    case Verb::kExpn:
    case Verb::kStartTls:
    case Verb::kAuth:
    case Verb::kHelo:
    case Verb::kEhlo:
      error_reply(Reply(502, "5.5.1", "Error: command not implemented"));
      return;
  }
}

void LmtpSession::do_mail(Command& c) {
  if (helo_.empty()) return error_reply(Reply(503, "5.5.1", "Error: send LHLO first"));
  if (have_mail_) return error_reply(Reply(503, "5.5.1", "Error: nested MAIL command"));
  if (opt_.size_limit && c.mail.size && *c.mail.size > opt_.size_limit) {
    return error_reply(Reply(552, "5.3.4", "Message size exceeds fixed limit"));
  }
  have_mail_ = true;
  sender_ = c.path.null ? "" : c.path.mailbox.address();
  mail_params_ = c.mail;
  reply(Reply(250, "2.1.0", "Ok"));
}

void LmtpSession::do_rcpt(Command& c) {
  if (!have_mail_) return error_reply(Reply(503, "5.5.1", "Error: need MAIL command"));
  if (rcpts_.size() >= opt_.recipient_limit) return reply(Reply(452, "4.5.3", "Error: too many recipients"));
  const common::smtp::Mailbox& mb = c.path.mailbox;
  if (mb.utf8 && !mail_params_.smtputf8) {
    return error_reply(Reply(553, "5.6.7", "Non-ASCII recipient address without SMTPUTF8"));
  }
  Rcpt rc;
  rc.address = c.path.postmaster ? mb.local_part : mb.address();
  std::string local = mb.local_part;
  LocalPart lp = split_detail(local, opt_.recipient_delimiter);
  if (c.path.postmaster) lp = {"postmaster", ""};
  rc.detail = opt_.save_to_detail_mailbox ? lp.detail : "";
  // Userdb key: the address without its +detail; then, for a local domain, the bare
  // local part (system users: "user", as Postfix's local(8) would look them up).
  std::string full = mb.domain.empty() ? lp.user : lp.user + "@" + mb.domain;
  if (mb.quoted && full.find_first_of(" \"\\\t") != std::string::npos) {
    // Quoted local parts with spaces never name a userdb entry; saying so here keeps
    // such bytes out of the auth protocol.
    return error_reply(Reply(550, "5.1.1", "<" + rc.address + "> User doesn't exist"));
  }
  std::string alt;
  if (!mb.domain.empty()) {
    for (const std::string& d : opt_.local_domains) {
      if (common::iequals(d, mb.domain)) alt = lp.user;
    }
  }
  busy(true);
  std::weak_ptr<LmtpSession> weak = weak_from_this();
  auto finish = [weak, rc](Result<MailUser> u) mutable {
    std::shared_ptr<LmtpSession> self = weak.lock();
    if (!self) return;
    self->busy(false);
    if (!u) {
      if (u.error().kind == common::ErrorKind::kNotFound) {
        self->error_reply(Reply(550, "5.1.1", "<" + rc.address + "> User doesn't exist"));
      } else {
        common::log::warning("%s: user lookup for %s failed: %s", self->id_.c_str(), common::log_escape(rc.address).c_str(),
                             u.error().message.c_str());
        self->reply(Reply(451, "4.3.0", "<" + rc.address + "> Temporary user lookup failure"));
      }
    } else {
      rc.user = std::move(u).value();
      self->rcpts_.push_back(std::move(rc));
      self->reply(Reply(250, "2.1.5", "Ok"));
    }
    self->pump();
  };
  host_->lookup(full, [this, weak, alt, finish](Result<MailUser> u) mutable {
    if (!u && u.error().kind == common::ErrorKind::kNotFound && !alt.empty() && !weak.expired()) {
      host_->lookup(alt, finish);
      return;
    }
    finish(std::move(u));
  });
}

void LmtpSession::do_data() {
  if (!have_mail_) return error_reply(Reply(503, "5.5.1", "Error: need MAIL command"));
  if (rcpts_.empty()) return error_reply(Reply(503, "5.5.1", "Error: no valid recipients"));
  if (mail_params_.body == common::smtp::Body::kBinaryMime) {
    return error_reply(Reply(503, "5.5.1", "Error: BODY=BINARYMIME needs BDAT"));
  }
  spool_ = std::make_shared<MessageSpool>(opt_.temp_dir, opt_.size_limit);
  data_.reset();
  state_ = State::kData;
  reply(Reply(354, "", "End data with <CR><LF>.<CR><LF>"));
}

void LmtpSession::do_bdat(const Command& c) {
  bdat_left_ = c.bdat_size;
  bdat_last_ = c.bdat_last;
  state_ = State::kBdat;
  // RFC 3030 2: the chunk is read even when the command fails.
  if (!have_mail_ || rcpts_.empty()) {
    bdat_bad_ = true;
    return;
  }
  if (!spool_) spool_ = std::make_shared<MessageSpool>(opt_.temp_dir, opt_.size_limit);
}

void LmtpSession::reply_all(const Reply& r) {
  for (size_t i = 0; i < rcpts_.size(); ++i) reply(r);
}

std::string LmtpSession::received_header(const Rcpt& r) const {
  std::string h = "Received: from " + common::log_escape(helo_, 100) + " (" + opt_.peer + ")\n\tby " + opt_.hostname +
                  " (Tern) with LMTP id " + id_ + "-" + std::to_string(messages_);
  h += "\n\tfor <" + common::log_escape(r.address, 200) + ">; " + rfc5322_date(::time(nullptr)) + "\n";
  return h;
}

void LmtpSession::end_of_message() {
  state_ = State::kCommand;
  ++messages_;
  bool bare_lf = data_.bare_lf() || bdat_endings_.bare_lf();
  bool bare_cr = data_.bare_cr();
  if (!data_.done()) {
    bdat_endings_.finish();
    bare_lf = bdat_endings_.bare_lf();
    bare_cr = bdat_endings_.bare_cr();
  }
  common::Status spooled = spool_->finish();
  if (opt_.forbid_bare_newline && (bare_lf || bare_cr)) {
    // smtpd_forbid_bare_newline = yes: refuse and disconnect (see the header).
    common::log::info("%s: reject: bare %s received from %s; helo=<%s>", id_.c_str(), bare_lf ? "<LF>" : "<CR>",
                      opt_.peer.c_str(), common::log_escape(helo_, 100).c_str());
    reply_all(Reply(550, "5.5.2", bare_lf ? "Error: bare <LF> received" : "Error: bare <CR> received"));
    close_now();
    return;
  }
  if (spool_->too_big()) {
    reply_all(Reply(552, "5.3.4", "Message size exceeds fixed limit"));
    reset_transaction();
    return;
  }
  if (!spooled) {
    common::log::warning("%s: %s", id_.c_str(), spooled.error().message.c_str());
    reply_all(Reply(451, "4.3.0", "Temporary internal failure"));
    reset_transaction();
    return;
  }
  // XTERN-DELIVERY-ID: recipients this delivery id already reached get their 250
  // again without a second copy (tern-mta crashed before recording our 250).
  const std::string delivery_id = mail_params_.delivery_id;
  std::vector<bool> again(rcpts_.size(), false);
  std::vector<DeliveryJob> jobs;
  const time_t now = ::time(nullptr);
  for (size_t i = 0; i < rcpts_.size(); ++i) {
    const Rcpt& r = rcpts_[i];
    if (!delivery_id.empty() && host_->delivered_before(delivery_id, r.user, r.address)) {
      again[i] = true;
      continue;
    }
    DeliveryJob j;
    j.user = r.user;
    j.envelope.sender = sender_;
    j.envelope.recipient = r.address;
    j.envelope.folder = r.detail;
    j.envelope.received = received_header(r);
    j.envelope.arrival = now;
    if (!delivery_id.empty()) j.envelope.delivery_key = delivery_key(delivery_id, r.address);
    jobs.push_back(std::move(j));
  }
  const std::string msgid = find_message_id(spool_->head(16384));
  busy(true);
  std::weak_ptr<LmtpSession> weak = weak_from_this();
  std::vector<std::string> users, addresses;
  for (size_t i = 0; i < rcpts_.size(); ++i) {
    if (again[i]) continue;
    users.push_back(rcpts_[i].user.name);
    addresses.push_back(rcpts_[i].address);
  }
  auto finish = [weak, users, addresses, again, msgid, delivery_id](std::vector<Outcome> outcomes) {
    std::shared_ptr<LmtpSession> self = weak.lock();
    if (!self) return;
    std::vector<std::string> delivered;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      // Dovecot's line shape: lmtp(user)<session>: msgid=<...>: saved mail to INBOX
      common::log::info("lmtp(%s)<%s>: msgid=%s: %s", common::log_escape(users[i], 200).c_str(), self->id_.c_str(),
                        msgid.empty() ? "unspecified" : common::log_escape(msgid, 200).c_str(),
                        outcomes[i].log.c_str());
      if (outcomes[i].reply.positive() && !outcomes[i].key_recorded) delivered.push_back(addresses[i]);
    }
    // The replies, once the delivery id is recorded (or at once without one).
    auto respond = [weak, again, delivery_id, outcomes = std::move(outcomes)](common::Status recorded) {
      std::shared_ptr<LmtpSession> me = weak.lock();
      if (!me) return;
      if (!recorded) {
        // A failure here risks only a duplicate should tern-mta crash now, so the
        // replies stand.
        common::log::warning("%s: cannot record delivery id %s: %s", me->id_.c_str(), delivery_id.c_str(),
                             recorded.error().message.c_str());
      }
      size_t k = 0;
      for (size_t i = 0; i < again.size(); ++i) {
        if (again[i]) {
          common::log::info("%s: delivery id %s already delivered to %s: not again", me->id_.c_str(),
                            delivery_id.c_str(), common::log_escape(me->rcpts_[i].address, 200).c_str());
          me->reply(Reply(250, "2.0.0", "<" + me->rcpts_[i].address + "> Ok: already delivered"));
        } else {
          me->reply(outcomes[k++].reply);
        }
      }
      me->reset_transaction();
      me->busy(false);
      me->pump();
    };
    if (!delivery_id.empty() && !delivered.empty()) {
      // Pairs the delivery did not record with the UID (mbox, a system user's
      // helper, a failed index update): durable before the 250s go out; recorded
      // off the event loop (an fdatasync), shared with the other sessions' records
      // of the moment.
      self->host_->record_delivered(delivery_id, delivered, std::move(respond));
    } else {
      respond({});
    }
  };
  if (jobs.empty()) {
    finish({});
    return;
  }
  host_->deliver(spool_, std::move(jobs), finish);
}

}  // namespace tern::mda
