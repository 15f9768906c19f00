// Pop3Session: the POP3 session (RFC 1939, CAPA RFC 2449, AUTH RFC 5034, STLS
// RFC 2595) as pure logic, in the style of ImapSession: feed() bytes, step() gives
// response bytes and an Action; no sockets, no clock, no authentication of its own.
//
// Runs in the login process (AUTHORIZATION state: USER/PASS, AUTH, STLS, CAPA, QUIT)
// and in the session worker, which opens the maildrop (INBOX, OpenMode::kPop3, so a
// second POP3 session on the same mailbox gets -ERR [IN-USE], RFC 2449 8.1.1) with
// open_maildrop() and only then says "+OK" to the PASS/AUTH (RFC 1939 7: the server
// answers positively once the maildrop is locked).
//
// The maildrop is a snapshot taken at open: message numbers never change within the
// session. DELE only marks; the marked messages are expunged at QUIT (UPDATE state)
// and nowhere else, so a dropped connection deletes nothing. Messages fetched with
// RETR get \Seen at QUIT, as Dovecot does. UIDLs are "%08X%08X" of UID and
// UIDVALIDITY (Dovecot's default pop3_uidl_format), so they are stable across
// sessions as long as the mailbox's UIDVALIDITY is, and shared with IMAP's UIDs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/line_reader.h"
#include "mra/mail_store.h"
#include "mra/pop3_parser.h"

namespace tern::mra::pop3 {

struct SessionConfig {
  std::string server_name = "Tern";  // greeting and CAPA IMPLEMENTATION
  bool tls = false;                   // TLS active (995, or after STLS)
  bool starttls = false;              // STLS can be offered
  bool plaintext_auth_without_tls = false;
  std::vector<std::string> mechanisms = {"PLAIN", "LOGIN"};
  // Longest line accepted at all: SASL responses may exceed the 255-octet command
  // limit (RFC 5034 4); longer lines are discarded and answered with -ERR.
  size_t max_line = 8192;
  int max_bad_commands = 10;
  int max_auth_attempts = 3;
};

class Pop3Session {
 public:
  enum class State {
    kAuthorization,  // RFC 1939 3
    kTransaction,    // the maildrop is open
    kClosed,         // after QUIT (and UPDATE) or a fatal error
  };
  enum class Action {
    kNeedInput,     // nothing to do until feed()
    kContinue,      // call step() again once `out` is written
    kStartTls,      // write `out`, do the TLS handshake, call tls_started()
    kAuthenticate,  // consult tern-authd: auth_request(), then auth_challenge()/auth_result()
    kAuthCancel,    // the client aborted AUTH; `out` holds the reply
    kLoggedIn,      // authenticated: hand over, then open_maildrop() in the worker
    kClose,         // write `out` and close
  };
  struct Step {
    std::string out;
    Action action = Action::kNeedInput;
  };
  struct AuthRequest {
    std::string mechanism;
    std::optional<std::string> initial_response;  // decoded; USER/PASS gives "\0user\0password"
  };

  explicit Pop3Session(SessionConfig config);
  ~Pop3Session();

  // "+OK <server_name> ready." CRLF
  std::string greeting() const;
  void feed(std::string_view bytes) { lines_.feed(bytes); }
  size_t buffered() const { return lines_.buffered(); }
  Step step();

  void tls_started();

  const AuthRequest& auth_request() const { return auth_; }
  std::string auth_challenge(std::string_view challenge);
  const std::string& auth_response() const { return auth_response_; }
  // Failure: -ERR [AUTH] (or [SYS/TEMP]). Success: kLoggedIn, no output yet.
  Step auth_result(bool ok, std::string_view user, bool temporary_failure = false);

  // In the worker: locks and snapshots the user's INBOX; "+OK" or "-ERR [IN-USE]".
  Step open_maildrop(MailStore& store, std::string user);

  std::string bye(std::string_view reason);
  std::string take_buffered();
  State state() const { return state_; }
  const std::string& user() const { return user_; }
  std::string capabilities() const;  // the CAPA list, CRLF-separated

 private:
  struct Msg {
    uint32_t uid = 0;
    uint64_t size = 0;
    bool deleted = false;
    bool retrieved = false;
  };
  enum class Mode {
    kCommands,  // reading commands
    kAuthWait,  // waiting for tern-authd
    kAuthLine,  // waiting for the client's SASL response line
  };

  Step run(const Command& c);
  Step err(std::string_view text, bool counts_as_bad = true);
  Step auth_input();
  Step quit();
  Msg* message(uint32_t n);
  std::string uidl(const Msg& m) const;
  bool plaintext_allowed() const { return config_.tls || config_.plaintext_auth_without_tls; }

  SessionConfig config_;
  tern::common::LineReader lines_;
  State state_ = State::kAuthorization;
  Mode mode_ = Mode::kCommands;
  int bad_commands_ = 0;
  int auth_failures_ = 0;
  std::string user_;
  std::string pending_user_;  // USER given, PASS not yet
  AuthRequest auth_;
  std::string auth_response_;

  std::unique_ptr<Mailbox> maildrop_;
  uint32_t uid_validity_ = 0;
  std::vector<Msg> msgs_;
};

// The message as POP3 sends it: CRLF line ends, lines starting with '.' doubled, a
// final CRLF if missing, then ".\r\n" (RFC 1939 3). With `body_lines`, only the
// header and that many body lines (TOP).
std::string dot_stuff(std::string_view message, std::optional<uint32_t> body_lines = std::nullopt);
// The same without TOP, appended to `out` in one pass over the stored message.
void append_dot_stuffed(std::string& out, std::string_view message);

}  // namespace tern::mra::pop3
