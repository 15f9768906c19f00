#include "mta/smtp_client_session.h"

#include <algorithm>

#include "common/text.h"

namespace tern::mta {

using common::smtp::Reply;

namespace {

std::string upper(std::string_view s) {
  std::string u(s);
  for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return u;
}

// Nothing that ends a command line may reach one.
bool line_safe(std::string_view s) { return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos; }

}  // namespace

Capabilities parse_ehlo(const Reply& reply, const std::set<std::string>& discard) {
  Capabilities c;
  c.esmtp = true;
  if (!reply.lines.empty()) {
    std::string_view first = reply.lines[0];
    c.server_name = std::string(first.substr(0, first.find(' ')));
  }
  for (size_t i = 1; i < reply.lines.size(); ++i) {
    std::vector<std::string> words = common::split_any(reply.lines[i], " ");
    if (words.empty()) continue;
    std::string kw = upper(words[0]);
    std::vector<std::string> args(words.begin() + 1, words.end());
    // "AUTH=LOGIN PLAIN": the pre-RFC form some old servers still send.
    if (kw.rfind("AUTH=", 0) == 0) {
      args.insert(args.begin(), kw.substr(5));
      kw = "AUTH";
    }
    if (discard.count(common::to_lower(kw))) continue;
    if (kw == "PIPELINING") {
      c.pipelining = true;
    } else if (kw == "SIZE") {
      c.size = true;
      std::optional<uint64_t> n = args.empty() ? std::nullopt : common::parse_u64(args[0]);
      c.size_limit = n ? *n : 0;
    } else if (kw == "8BITMIME") {
      c.eightbitmime = true;
    } else if (kw == "SMTPUTF8") {
      c.smtputf8 = true;
    } else if (kw == "CHUNKING") {
      c.chunking = true;
    } else if (kw == "STARTTLS") {
      c.starttls = true;
    } else if (kw == "DSN") {
      c.dsn = true;
    } else if (kw == "ENHANCEDSTATUSCODES") {
      c.enhanced = true;
    } else if (kw == "AUTH") {
      for (const std::string& a : args) {
        std::string m = upper(a);
        // Bounded: a server cannot make us keep an endless list.
        if (c.auth.size() < 32 && std::find(c.auth.begin(), c.auth.end(), m) == c.auth.end()) c.auth.push_back(m);
      }
    }
  }
  return c;
}

common::Result<TlsPolicy> parse_tls_policy(std::string_view text) {
  std::string t = common::to_lower(common::trim(text));
  if (t == "none" || t.empty()) return TlsPolicy::kNone;
  if (t == "may") return TlsPolicy::kMay;
  if (t == "encrypt") return TlsPolicy::kEncrypt;
  if (t == "verify") return TlsPolicy::kVerify;
  return common::make_error(common::ErrorKind::kConfig, "smtp_tls_security_level: '" + common::log_escape(text, 40) +
                                                            "' is not one of none, may, encrypt, verify");
}

const char* tls_policy_name(TlsPolicy p) {
  switch (p) {
    case TlsPolicy::kNone: return "none";
    case TlsPolicy::kMay: return "may";
    case TlsPolicy::kEncrypt: return "encrypt";
    case TlsPolicy::kVerify: return "verify";
  }
  return "?";
}

ClientSession::ClientSession(SessionConfig config) : cfg_(std::move(config)), tls_(cfg_.tls_on_connect) {}

ClientSession::Wait ClientSession::waiting_for() const {
  switch (phase_) {
    case Phase::kGreeting: return Wait::kGreeting;
    case Phase::kHello: return Wait::kHello;
    case Phase::kStartTls:
    case Phase::kHandshake: return Wait::kStartTls;
    case Phase::kAuth: return Wait::kAuth;
    case Phase::kReset: return Wait::kReset;
    case Phase::kQuit: return Wait::kQuit;
    case Phase::kTransaction:
    case Phase::kBody:
      if (expect_.empty()) return Wait::kNothing;
      switch (expect_.front().first) {
        case Expect::kMail: return Wait::kMail;
        case Expect::kRcpt: return Wait::kRcpt;
        case Expect::kData: return Wait::kData;
        case Expect::kDataDone:
        case Expect::kBdat: return Wait::kDataDone;
        case Expect::kRset: return Wait::kReset;
      }
      return Wait::kNothing;
    case Phase::kReady:
    case Phase::kFailed: return Wait::kNothing;
  }
  return Wait::kNothing;
}

std::string ClientSession::stage_text() const {
  switch (phase_) {
    case Phase::kGreeting: return "while receiving the initial server greeting";
    case Phase::kHello: return helo_fallback_ ? "while performing the HELO handshake" : "while performing the EHLO handshake";
    case Phase::kStartTls:
    case Phase::kHandshake: return "while performing the STARTTLS handshake";
    case Phase::kAuth: return "while performing SASL authentication";
    case Phase::kReset: return "while sending RSET";
    case Phase::kQuit: return "while sending QUIT";
    case Phase::kBody:
      if (!bdat_ || !body_sent_) return "while sending message body";
      [[fallthrough]];
    case Phase::kTransaction:
      if (expect_.empty()) return "while sending message body";
      switch (expect_.front().first) {
        case Expect::kMail: return "while sending MAIL FROM";
        case Expect::kRcpt: return "while sending RCPT TO";
        case Expect::kData: return "while sending DATA command";
        case Expect::kDataDone:
        case Expect::kBdat: return "while sending end of data -- message may be sent more than once";
        case Expect::kRset: return "while sending RSET";
      }
      return "";
    case Phase::kReady: return "while the connection was idle";
    case Phase::kFailed: return "after the session failed";
  }
  return "";
}

void ClientSession::fail(FailureKind kind, Reply reply, std::string stage, std::string detail, bool local) {
  if (phase_ == Phase::kTransaction || phase_ == Phase::kBody) {
    // Recipients still open get a temporary failure: the message was not taken.
    Reply r(451, "4.5.0", "protocol error: " + (detail.empty() ? reply.summary() : detail));
    for (auto& res : results_) {
      if (!res) res = RecipientReply{r, stage};
    }
    results_ready_ = true;
  }
  failure_ = Failure{kind, std::move(reply), std::move(stage), std::move(detail), local};
  phase_ = Phase::kFailed;
}

void ClientSession::send_ehlo(Out& out) {
  helo_fallback_ = false;
  out.write += "EHLO " + cfg_.helo_name + "\r\n";
  phase_ = Phase::kHello;
}

void ClientSession::on_reply(const Reply& r, Out& out) {
  switch (phase_) {
    case Phase::kGreeting:
      if (r.code != 220) return fail(FailureKind::kGreeting, r, "server greeting");
      send_ehlo(out);
      return;
    case Phase::kHello:
      if (!helo_fallback_) {
        if (r.code == 250) {
          caps_ = parse_ehlo(r, cfg_.discard_ehlo);
          after_hello(out);
          return;
        }
        if (r.code >= 500 && r.code < 600) {
          // RFC 5321 3.2: a server that does not know EHLO gets HELO.
          helo_fallback_ = true;
          out.write += "HELO " + cfg_.helo_name + "\r\n";
          return;
        }
        return fail(FailureKind::kHello, r, "EHLO");
      }
      if (r.code != 250) return fail(FailureKind::kHello, r, "HELO");
      caps_ = Capabilities{};
      if (!r.lines.empty()) caps_.server_name = r.lines[0].substr(0, r.lines[0].find(' '));
      after_hello(out);
      return;
    case Phase::kStartTls:
      if (r.code == 220) {
        out.start_tls = true;
        phase_ = Phase::kHandshake;
        return;
      }
      if (cfg_.tls == TlsPolicy::kMay) {
        // Opportunistic: a server that cannot start TLS gets the mail in plaintext
        // (RFC 3207 4.1 leaves this to the client; Postfix does the same).
        start_auth(out);
        return;
      }
      return fail(FailureKind::kTlsRequired, r, "STARTTLS", "TLS is required, but the server refused to start TLS");
    case Phase::kHandshake:
      return fail(FailureKind::kProtocol, r, "STARTTLS", "reply during the TLS handshake");
    case Phase::kAuth:
      if (r.code == 235) {
        authenticated_ = true;
        sasl_.reset();
        ready(out);
        return;
      }
      if (r.code == 334 && sasl_) {
        // Bounded: a server that challenges forever must not keep us talking.
        if (++auth_rounds_ > 4) {
          out.write += "*\r\n";
          return fail(FailureKind::kAuth, r, "AUTH", "too many SASL challenges");
        }
        common::Result<std::string> resp = sasl_->respond(r.lines.empty() ? "" : r.lines[0]);
        if (!resp) {
          out.write += "*\r\n";  // RFC 4954 4: cancel the exchange
          return fail(FailureKind::kAuth, r, "AUTH", resp.error().message);
        }
        out.write += *resp + "\r\n";
        return;
      }
      return fail(FailureKind::kAuth, r, "AUTH", "SASL authentication failed");
    case Phase::kReady:
      // Nothing was asked: a server that speaks now (421 on idle timeout) is ending
      // the session.
      return fail(FailureKind::kProtocol, r, "idle", "unexpected reply while idle");
    case Phase::kTransaction:
    case Phase::kBody:
      transaction_reply(r, out);
      return;
    case Phase::kReset:
      if (!r.positive()) return fail(FailureKind::kReset, r, "RSET");
      ready(out);
      return;
    case Phase::kQuit:
      out.close = true;
      phase_ = Phase::kFailed;
      failure_ = Failure{FailureKind::kProtocol, r, "QUIT", "session ended", false};
      return;
    case Phase::kFailed: return;
  }
}

void ClientSession::after_hello(Out& out) {
  // A server that greets with our own name is ourselves (or claims to be): the mail
  // would come straight back (Postfix: "mail for X loops back to myself").
  if (!caps_.server_name.empty() && common::iequals(caps_.server_name, cfg_.helo_name)) {
    return fail(FailureKind::kLoop, Reply(554, "5.4.6", "mail loops back to myself"), helo_fallback_ ? "HELO" : "EHLO",
                "the server greets with our own name " + common::log_escape(cfg_.helo_name, 255), true);
  }
  if (!tls_ && cfg_.tls != TlsPolicy::kNone) {
    if (caps_.starttls) {
      out.write += "STARTTLS\r\n";
      phase_ = Phase::kStartTls;
      return;
    }
    if (cfg_.tls != TlsPolicy::kMay) {
      return fail(FailureKind::kTlsRequired, Reply(451, "4.7.4", "TLS is required, but was not offered"),
                  helo_fallback_ ? "HELO" : "EHLO", "TLS is required, but was not offered", true);
    }
  }
  start_auth(out);
}

void ClientSession::tls_ready(Out& out) {
  if (phase_ != Phase::kHandshake) return;
  tls_ = true;
  // RFC 3207 4.2: forget everything the server said before TLS.
  caps_ = Capabilities{};
  send_ehlo(out);
}

void ClientSession::start_auth(Out& out) {
  if (!cfg_.auth || authenticated_ || caps_.auth.empty()) {
    // No credentials, or a server that does not offer AUTH: carry on without, as
    // Postfix does (the server refuses what it will not relay).
    ready(out);
    return;
  }
  const bool plaintext_ok = tls_ ? cfg_.plaintext_auth_with_tls : cfg_.plaintext_auth_without_tls;
  std::optional<std::string> mech = choose_mechanism(caps_.auth, cfg_.mechanism_filter, plaintext_ok);
  if (!mech) {
    std::string detail = "no usable SASL mechanism (server offers " + common::join(caps_.auth, " ") + "; Tern has PLAIN, LOGIN";
    if (!plaintext_ok) detail += tls_ ? "; smtp_sasl_tls_security_options has noplaintext" :
                                        "; without TLS, smtp_sasl_security_options = noplaintext forbids them";
    detail += ")";
    return fail(FailureKind::kAuth, Reply(454, "4.7.0", "cannot authenticate"), "AUTH", detail, true);
  }
  common::Result<SaslClient> c = SaslClient::start(*mech, cfg_.user, cfg_.password);
  if (!c) return fail(FailureKind::kAuth, Reply(454, "4.7.0", "cannot authenticate"), "AUTH", c.error().message, true);
  sasl_ = std::move(c).value();
  auth_rounds_ = 0;
  out.write += sasl_->command() + "\r\n";
  phase_ = Phase::kAuth;
}

void ClientSession::ready(Out&) { phase_ = Phase::kReady; }

std::string ClientSession::mail_command() const {
  std::string c = "MAIL FROM:<" + tx_.sender + ">";
  if (caps_.size) c += " SIZE=" + std::to_string(tx_.size);
  if (tx_.eightbit && caps_.eightbitmime) c += " BODY=8BITMIME";
  if (tx_.smtputf8 && caps_.smtputf8) c += " SMTPUTF8";
  if (caps_.dsn && !tx_.ret.empty()) c += " RET=" + tx_.ret;
  if (caps_.dsn && !tx_.envid.empty()) c += " ENVID=" + tx_.envid;
  return c + "\r\n";
}

std::string ClientSession::rcpt_command(size_t i) const {
  const TxRecipient& r = tx_.rcpts[i];
  std::string c = "RCPT TO:<" + r.address + ">";
  if (caps_.dsn && !r.notify.empty()) c += " NOTIFY=" + r.notify;
  if (caps_.dsn && !r.orcpt.empty()) c += " ORCPT=" + r.orcpt;
  return c + "\r\n";
}

void ClientSession::begin(const Transaction& t, Out& out) {
  if (phase_ != Phase::kReady) return;
  tx_ = t;
  results_.assign(t.rcpts.size(), std::nullopt);
  accepted_.clear();
  expect_.clear();
  mail_reply_.reset();
  next_rcpt_ = 0;
  results_ready_ = false;
  body_sent_ = false;
  // RFC 3030: with CHUNKING the message goes as it is, no dot-stuffing, no end marker.
  bdat_ = caps_.chunking;
  // Our own queue gave us these, but they end up between a command's brackets:
  // anything that could end the line is refused here rather than sent.
  bool safe = line_safe(t.sender) && line_safe(t.envid) && line_safe(t.ret);
  for (const TxRecipient& r : t.rcpts) safe = safe && line_safe(r.address) && line_safe(r.notify) && line_safe(r.orcpt);
  if (!safe || t.rcpts.empty()) {
    for (auto& res : results_) res = RecipientReply{Reply(550, "5.1.3", "bad address syntax in the queue file"), "MAIL FROM"};
    results_ready_ = true;
    return;
  }
  data_done_ = false;
  phase_ = Phase::kTransaction;
  if (caps_.pipelining) {
    // RFC 2920 3.1: MAIL, RCPT and DATA (or BDAT) may all go in one write.
    out.write += mail_command();
    expect_.emplace_back(Expect::kMail, 0);
    for (size_t i = 0; i < t.rcpts.size(); ++i) {
      out.write += rcpt_command(i);
      expect_.emplace_back(Expect::kRcpt, i);
    }
    if (bdat_) {
      out.write += "BDAT " + std::to_string(t.size) + " LAST\r\n";
      expect_.emplace_back(Expect::kBdat, 0);
      phase_ = Phase::kBody;
    } else {
      out.write += "DATA\r\n";
      expect_.emplace_back(Expect::kData, 0);
    }
    return;
  }
  out.write += mail_command();
  expect_.emplace_back(Expect::kMail, 0);
}

void ClientSession::send_rcpt(size_t i, Out& out) {
  out.write += rcpt_command(i);
  expect_.emplace_back(Expect::kRcpt, i);
}

void ClientSession::after_rcpts(Out& out) {
  if (accepted_.empty()) return;  // finish_transaction resets
  if (bdat_) {
    out.write += "BDAT " + std::to_string(tx_.size) + " LAST\r\n";
    expect_.emplace_back(Expect::kBdat, 0);
    phase_ = Phase::kBody;
  } else {
    out.write += "DATA\r\n";
    expect_.emplace_back(Expect::kData, 0);
  }
}

void ClientSession::transaction_reply(const Reply& r, Out& out) {
  if (expect_.empty()) {
    return fail(FailureKind::kProtocol, r, "DATA", "reply before the end of the message: " + r.summary());
  }
  auto [what, index] = expect_.front();
  expect_.pop_front();
  const bool mail_ok = mail_reply_ && mail_reply_->positive();
  switch (what) {
    case Expect::kMail:
      mail_reply_ = r;
      if (!r.positive()) {
        for (auto& res : results_) res = RecipientReply{r, "MAIL FROM"};
      } else if (!caps_.pipelining) {
        send_rcpt(0, out);
      }
      break;
    case Expect::kRcpt:
      if (mail_ok) {
        if (r.positive()) {
          accepted_.push_back(index);
        } else {
          results_[index] = RecipientReply{r, "RCPT TO"};
        }
      }
      if (!caps_.pipelining && mail_ok) {
        if (index + 1 < tx_.rcpts.size()) {
          send_rcpt(index + 1, out);
        } else {
          after_rcpts(out);
        }
      }
      break;
    case Expect::kData:
      if (r.code == 354) {
        if (accepted_.empty()) {
          // RFC 2920 3.1 says a server with no valid recipient must refuse DATA; one
          // that says 354 anyway gets an empty message, whose outcome means nothing.
          out.write += ".\r\n";
          expect_.emplace_back(Expect::kDataDone, 0);
          body_sent_ = true;
          return;
        }
        phase_ = Phase::kBody;
        return;
      }
      for (size_t i : accepted_) results_[i] = RecipientReply{r, "DATA"};
      break;
    case Expect::kDataDone:
      for (size_t i : accepted_) results_[i] = RecipientReply{r, "end of DATA"};
      data_done_ = true;
      break;
    case Expect::kBdat:
      if (!body_sent_) {
        return fail(FailureKind::kProtocol, r, "BDAT", "reply before the whole BDAT chunk was sent: " + r.summary());
      }
      for (size_t i : accepted_) results_[i] = RecipientReply{r, "end of DATA"};
      data_done_ = true;
      break;
    case Expect::kRset: break;
  }
  if (expect_.empty() && phase_ == Phase::kTransaction) finish_transaction(out);
}

void ClientSession::body_sent(Out&) {
  if (phase_ != Phase::kBody) return;
  body_sent_ = true;
  phase_ = Phase::kTransaction;
  if (!bdat_) expect_.emplace_back(Expect::kDataDone, 0);
}

void ClientSession::finish_transaction(Out& out) {
  for (auto& res : results_) {
    if (!res) res = RecipientReply{Reply(451, "4.5.0", "protocol error: no reply for this recipient"), "RCPT TO"};
  }
  results_ready_ = true;
  // A server that accepted MAIL holds a transaction until the end of the message;
  // when the message never went, RSET clears it before the connection is reused.
  if (mail_reply_ && mail_reply_->positive() && !data_done_) {
    out.write += "RSET\r\n";
    phase_ = Phase::kReset;
    return;
  }
  data_done_ = false;
  phase_ = Phase::kReady;
}

std::vector<RecipientReply> ClientSession::take_results() {
  std::vector<RecipientReply> out;
  out.reserve(results_.size());
  for (auto& r : results_) out.push_back(r ? std::move(*r) : RecipientReply{Reply(451, "4.5.0", "no reply"), ""});
  results_.clear();
  results_ready_ = false;
  data_done_ = false;
  return out;
}

bool ClientSession::any_accepted() const { return !accepted_.empty(); }

void ClientSession::quit(Out& out) {
  if (phase_ == Phase::kFailed || phase_ == Phase::kQuit) return;
  out.write += "QUIT\r\n";
  phase_ = Phase::kQuit;
}

void ClientSession::connection_lost(const Reply& r) {
  if (phase_ == Phase::kTransaction || phase_ == Phase::kBody) {
    for (auto& res : results_) {
      if (!res) res = RecipientReply{r, ""};
    }
    results_ready_ = true;
  }
  if (phase_ != Phase::kFailed) failure_ = Failure{FailureKind::kProtocol, r, "", "connection lost", true};
  phase_ = Phase::kFailed;
}

}  // namespace tern::mta
