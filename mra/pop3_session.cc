#include "mra/pop3_session.h"

#include <cstdio>
#include <cstring>

#include "common/mime.h"
#include "common/text.h"

namespace tern::mra::pop3 {

namespace mime = tern::common::mime;
using tern::common::ErrorKind;

namespace {

bool is_plaintext_mechanism(std::string_view m) { return m == "PLAIN" || m == "LOGIN"; }

}  // namespace

void append_dot_stuffed(std::string& out, std::string_view raw) {
  // One pass, a line at a time (memchr finds the line ends): a leading '.' doubled,
  // a bare LF written as CRLF (a CR before an LF is kept, a CR elsewhere is data, as
  // mime::to_crlf() has it), a missing final line end added, then the terminator.
  out.reserve(out.size() + raw.size() + raw.size() / 16 + 8);
  const char* d = raw.data();
  const size_t n = raw.size();
  size_t i = 0;
  bool line_start = true;
  while (i < n) {
    if (d[i] == '.') out += '.';  // i is always the start of a line here
    const void* p = std::memchr(d + i, '\n', n - i);
    if (!p) {
      out.append(d + i, n - i);
      line_start = false;
      break;
    }
    size_t lf = static_cast<size_t>(static_cast<const char*>(p) - d);
    if (lf > i && d[lf - 1] == '\r') {
      out.append(d + i, lf + 1 - i);
    } else {
      out.append(d + i, lf - i);
      out.append("\r\n", 2);
    }
    i = lf + 1;
  }
  if (!line_start) out.append("\r\n", 2);
  out.append(".\r\n", 3);
}

std::string dot_stuff(std::string_view raw, std::optional<uint32_t> body_lines) {
  std::string out;
  if (!body_lines) {
    append_dot_stuffed(out, raw);
    return out;
  }
  std::string crlf = mime::to_crlf(raw);
  // The header section (with its blank line), then `body_lines` lines of body.
  size_t end = crlf.find("\r\n\r\n");
  size_t pos = end == std::string::npos ? crlf.size() : end + 4;
  if (crlf.rfind("\r\n", 0) == 0) pos = 2;  // no header at all: an empty first line
  for (uint32_t i = 0; i < *body_lines && pos < crlf.size(); ++i) {
    size_t lf = crlf.find('\n', pos);
    pos = lf == std::string::npos ? crlf.size() : lf + 1;
  }
  append_dot_stuffed(out, std::string_view(crlf).substr(0, pos));
  return out;
}

Pop3Session::Pop3Session(SessionConfig config) : config_(std::move(config)), lines_(config_.max_line) {}

Pop3Session::~Pop3Session() = default;

std::string Pop3Session::greeting() const { return "+OK " + config_.server_name + " ready.\r\n"; }

std::string Pop3Session::capabilities() const {
  std::string c = "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n";
  if (state_ == State::kAuthorization) {
    std::string sasl;
    for (const std::string& m : config_.mechanisms) {
      if (is_plaintext_mechanism(m) && !plaintext_allowed()) continue;
      sasl += " " + m;
    }
    if (!sasl.empty()) c += "SASL" + sasl + "\r\n";
    if (plaintext_allowed()) c += "USER\r\n";
    if (config_.starttls && !config_.tls) c += "STLS\r\n";
  }
  c += "IMPLEMENTATION " + config_.server_name + "\r\n";
  return c;
}

std::string Pop3Session::take_buffered() {
  std::string s(lines_.peek());
  lines_.clear();
  return s;
}

std::string Pop3Session::bye(std::string_view reason) {
  state_ = State::kClosed;
  return "-ERR " + std::string(reason) + "\r\n";
}

Pop3Session::Step Pop3Session::err(std::string_view text, bool counts_as_bad) {
  Step s{"-ERR " + std::string(text) + "\r\n", Action::kContinue};
  if (counts_as_bad && ++bad_commands_ >= config_.max_bad_commands) {
    s.out += "-ERR Too many invalid commands.\r\n";
    state_ = State::kClosed;
    s.action = Action::kClose;
  }
  return s;
}

Pop3Session::Step Pop3Session::step() {
  if (state_ == State::kClosed) return Step{"", Action::kClose};
  if (mode_ == Mode::kAuthWait) return Step{"", Action::kNeedInput};
  if (mode_ == Mode::kAuthLine) return auth_input();
  if (state_ == State::kTransaction && !maildrop_) {
    return Step{"", Action::kNeedInput};  // authenticated; input waits for open_maildrop()
  }
  tern::common::LineReader::Line line;
  tern::common::LineReader::Status st = lines_.next(line);
  if (st == tern::common::LineReader::Status::kNeedMore) return Step{"", Action::kNeedInput};
  if (st == tern::common::LineReader::Status::kTooLong) return err("Line too long.");
  ParseResult r = parse_command(line.text);
  if (auto* e = std::get_if<ParseError>(&r)) return err(e->message);
  return run(std::get<Command>(r));
}

void Pop3Session::tls_started() {
  config_.tls = true;
  lines_.clear();
}

Pop3Session::Step Pop3Session::run(const Command& c) {
  // Any state.
  if (c.verb == Verb::kCapa) return Step{"+OK Capability list follows\r\n" + capabilities() + ".\r\n", Action::kContinue};
  if (c.verb == Verb::kQuit) return quit();
  if (c.verb == Verb::kNoop && state_ == State::kTransaction) return Step{"+OK\r\n", Action::kContinue};

  if (state_ == State::kAuthorization) {
    switch (c.verb) {
      case Verb::kStls:
        if (config_.tls) return err("TLS is already active.");
        if (!config_.starttls) return err("STLS is not available.");
        lines_.clear();  // RFC 2595 4: nothing pipelined before TLS survives it
        return Step{"+OK Begin TLS negotiation now.\r\n", Action::kStartTls};
      case Verb::kUser:
        if (!plaintext_allowed()) return err("[AUTH] Plaintext authentication disallowed on non-secure connections.", false);
        pending_user_ = c.arg;
        return Step{"+OK\r\n", Action::kContinue};
      case Verb::kPass: {
        if (!plaintext_allowed()) return err("[AUTH] Plaintext authentication disallowed on non-secure connections.", false);
        if (pending_user_.empty()) return err("No username given.");
        auth_ = AuthRequest{"PLAIN", std::string(1, '\0') + pending_user_ + std::string(1, '\0') + c.arg};
        pending_user_.clear();
        mode_ = Mode::kAuthWait;
        return Step{"", Action::kAuthenticate};
      }
      case Verb::kAuth: {
        if (c.arg.empty()) {
          // Outlook's "AUTH" without arguments lists the mechanisms.
          std::string out = "+OK\r\n";
          for (const std::string& m : config_.mechanisms) {
            if (is_plaintext_mechanism(m) && !plaintext_allowed()) continue;
            out += m + "\r\n";
          }
          return Step{out + ".\r\n", Action::kContinue};
        }
        bool offered = false;
        for (const std::string& m : config_.mechanisms) offered = offered || m == c.arg;
        if (!offered) return err("Unsupported authentication mechanism.", false);
        if (is_plaintext_mechanism(c.arg) && !plaintext_allowed()) {
          return err("[AUTH] Plaintext authentication disallowed on non-secure connections.", false);
        }
        auth_ = AuthRequest{c.arg, std::nullopt};
        if (c.initial_response) {
          if (*c.initial_response == "=") {
            auth_.initial_response = std::string();
          } else {
            std::optional<std::string> d = tern::common::base64_decode(*c.initial_response);
            if (!d) return err("Invalid base64 in initial response.");
            auth_.initial_response = std::move(*d);
          }
        }
        mode_ = Mode::kAuthWait;
        return Step{"", Action::kAuthenticate};
      }
      default:
        return err("Command not permitted before authentication.");
    }
  }

  // TRANSACTION
  switch (c.verb) {
    case Verb::kStat: {
      uint64_t n = 0, size = 0;
      for (const Msg& m : msgs_) {
        if (m.deleted) continue;
        ++n;
        size += m.size;
      }
      return Step{"+OK " + std::to_string(n) + " " + std::to_string(size) + "\r\n", Action::kContinue};
    }
    case Verb::kList:
    case Verb::kUidl: {
      bool list = c.verb == Verb::kList;
      if (c.msg) {
        Msg* m = message(*c.msg);
        if (!m) return err("No such message.", false);
        return Step{"+OK " + std::to_string(*c.msg) + " " + (list ? std::to_string(m->size) : uidl(*m)) + "\r\n",
                    Action::kContinue};
      }
      std::string out = "+OK\r\n";
      for (size_t i = 0; i < msgs_.size(); ++i) {
        if (msgs_[i].deleted) continue;
        out += std::to_string(i + 1) + " " + (list ? std::to_string(msgs_[i].size) : uidl(msgs_[i])) + "\r\n";
      }
      return Step{out + ".\r\n", Action::kContinue};
    }
    case Verb::kRetr:
    case Verb::kTop: {
      Msg* m = message(*c.msg);
      if (!m) return err("No such message.", false);
      Result<std::string> data = maildrop_->read(m->uid);
      if (!data) {
        if (data.error().kind == ErrorKind::kNotFound) return err("Message was deleted by another session.", false);
        return err("[SYS/TEMP] Can't read the message.", false);
      }
      if (c.verb == Verb::kRetr) {
        m->retrieved = true;
        Step st{"+OK " + std::to_string(m->size) + " octets\r\n", Action::kContinue};
        append_dot_stuffed(st.out, data.value());
        return st;
      }
      return Step{"+OK\r\n" + dot_stuff(data.value(), c.lines), Action::kContinue};
    }
    case Verb::kDele: {
      Msg* m = message(*c.msg);
      if (!m) return err("No such message.", false);
      m->deleted = true;
      return Step{"+OK Marked to be deleted.\r\n", Action::kContinue};
    }
    case Verb::kRset:
      for (Msg& m : msgs_) m.deleted = false;
      return Step{"+OK\r\n", Action::kContinue};
    default:
      return err("Command not permitted in this state.");
  }
}

Pop3Session::Msg* Pop3Session::message(uint32_t n) {
  if (n == 0 || n > msgs_.size() || msgs_[n - 1].deleted) return nullptr;
  return &msgs_[n - 1];
}

std::string Pop3Session::uidl(const Msg& m) const {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%08X%08X", m.uid, uid_validity_);
  return buf;
}

Pop3Session::Step Pop3Session::quit() {
  if (state_ != State::kTransaction || !maildrop_) {
    state_ = State::kClosed;
    return Step{"+OK Logging out.\r\n", Action::kClose};
  }
  // UPDATE (RFC 1939 6): mark retrieved messages seen, then remove the deleted ones.
  std::vector<uint32_t> seen, gone;
  for (const Msg& m : msgs_) {
    if (m.deleted) {
      gone.push_back(m.uid);
    } else if (m.retrieved) {
      seen.push_back(m.uid);
    }
  }
  bool ok = true;
  if (!seen.empty()) ok = maildrop_->store(seen, StoreMode::kAdd, {"\\Seen"}, std::nullopt).ok() && ok;
  if (!gone.empty()) {
    ok = maildrop_->store(gone, StoreMode::kAdd, {"\\Deleted"}, std::nullopt).ok() && ok;
    Result<std::vector<uint32_t>> r = maildrop_->expunge(gone);
    ok = r.ok() && r->size() == gone.size() && ok;
  }
  maildrop_.reset();  // releases the POP3 lock
  state_ = State::kClosed;
  if (!ok) return Step{"-ERR [SYS/TEMP] Some deleted messages were not removed.\r\n", Action::kClose};
  // Says what happened (Dovecot: "Logging out, messages deleted." only after DELE).
  return Step{gone.empty() ? "+OK Logging out.\r\n" : "+OK Logging out, messages deleted.\r\n", Action::kClose};
}

std::string Pop3Session::auth_challenge(std::string_view challenge) {
  mode_ = Mode::kAuthLine;
  return "+ " + tern::common::base64_encode(challenge) + "\r\n";
}

Pop3Session::Step Pop3Session::auth_input() {
  tern::common::LineReader::Line line;
  tern::common::LineReader::Status st = lines_.next(line);
  if (st == tern::common::LineReader::Status::kNeedMore) return Step{"", Action::kNeedInput};
  mode_ = Mode::kCommands;
  if (st == tern::common::LineReader::Status::kTooLong) {
    return Step{"-ERR Authentication response too long.\r\n", Action::kAuthCancel};
  }
  if (line.text == "*") return Step{"-ERR Authentication aborted.\r\n", Action::kAuthCancel};  // RFC 5034 4
  std::optional<std::string> d = tern::common::base64_decode(line.text);
  if (!d) return Step{"-ERR Invalid base64 in authentication response.\r\n", Action::kAuthCancel};
  auth_response_ = std::move(*d);
  mode_ = Mode::kAuthWait;
  return Step{"", Action::kAuthenticate};
}

Pop3Session::Step Pop3Session::auth_result(bool ok, std::string_view user, bool temporary_failure) {
  mode_ = Mode::kCommands;
  if (auth_.initial_response) std::fill(auth_.initial_response->begin(), auth_.initial_response->end(), '\0');
  auth_ = AuthRequest{};
  std::fill(auth_response_.begin(), auth_response_.end(), '\0');
  auth_response_.clear();
  if (ok) {
    user_ = std::string(user);
    state_ = State::kTransaction;  // the maildrop is opened by open_maildrop()
    return Step{"", Action::kLoggedIn};
  }
  if (temporary_failure) return Step{"-ERR [SYS/TEMP] Temporary authentication failure.\r\n", Action::kContinue};
  Step s{"-ERR [AUTH] Authentication failed.\r\n", Action::kContinue};
  if (++auth_failures_ >= config_.max_auth_attempts) {
    s.out += "-ERR Too many invalid authentication attempts.\r\n";
    state_ = State::kClosed;
    s.action = Action::kClose;
  }
  return s;
}

Pop3Session::Step Pop3Session::open_maildrop(MailStore& store, std::string user) {
  user_ = std::move(user);
  Result<std::unique_ptr<Mailbox>> mb = store.open("INBOX", OpenMode::kPop3);
  if (!mb) {
    state_ = State::kClosed;
    if (mb.error().kind == ErrorKind::kInUse) {
      return Step{"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n", Action::kClose};
    }
    return Step{"-ERR [SYS/TEMP] Can't open the mailbox.\r\n", Action::kClose};
  }
  Result<MailboxChanges> snap = mb.value()->sync();
  if (!snap) {
    state_ = State::kClosed;
    return Step{"-ERR [SYS/TEMP] Can't read the mailbox.\r\n", Action::kClose};
  }
  maildrop_ = std::move(mb.value());
  uid_validity_ = maildrop_->uid_validity();
  msgs_.clear();
  for (const MessageMeta& m : snap.value().added) msgs_.push_back(Msg{m.uid, m.size, false, false});
  state_ = State::kTransaction;
  return Step{"+OK Logged in.\r\n", Action::kContinue};
}

}  // namespace tern::mra::pop3
