// ImapSession: the IMAP4rev1 / IMAP4rev2 session as pure logic.
//
// Bytes in (feed), response bytes and an Action out (step); no sockets, no clock
// (SessionConfig::now), no authentication of its own. The daemon is glue around it:
//
//   on input:   session.feed(bytes); pump()
//   pump():     while the socket can take more:
//                 Step s = session.step(); write(s.out);
//                 kNeedInput -> wait for input      kContinue -> loop
//                 kStartTls  -> handshake, then session.tls_started()
//                 kAuthenticate -> tern-authd with auth_request(); reply with
//                                  auth_challenge() or auth_result()
//                 kAuthCancel -> tell tern-authd the client gave up
//                 kLoggedIn  -> (login process) hand the connection to a session
//                               worker with take_buffered()
//                 kIdle      -> call poll() when the mailbox changes
//                 kClose     -> close after writing
//
// The same class runs in the unprivileged login process (state not authenticated:
// only CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE, LOGIN, ID are accepted) and
// in the session worker (constructed authenticated, with the user's MailStore). The
// user's identity comes from whoever constructs the worker's session (tern-authd's
// answer), never from the login process's session.
//
// Mailbox state follows RFC 3501 5.2 / 7.4.1: the session keeps its own
// sequence-number view of the selected mailbox and applies the store's changes
// (EXISTS, EXPUNGE, FETCH FLAGS) when the protocol allows; expunges are held back
// during FETCH, STORE and SEARCH. Long FETCH responses are produced in chunks of
// SessionConfig::output_chunk bytes, one chunk per step(), so a FETCH of a large
// mailbox costs bounded memory, and pipelined commands are executed one per step().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mra/imap_command.h"
#include "mra/imap_reader.h"
#include "mra/imap_render.h"
#include "mra/imap_sequence.h"
#include "mra/mail_store.h"

namespace tern::mra::imap {

struct SessionConfig {
  std::string server_name = "Tern";  // in the greeting
  std::string id_name = "Tern";      // ID response "name"; empty sends ID NIL
  // Whether TLS is active on the connection (implicit TLS, or after STARTTLS).
  bool tls = false;
  // Whether STARTTLS can be offered (a certificate is configured).
  bool starttls = false;
  // Plaintext authentication (LOGIN, PLAIN, LOGIN mechanism) without TLS
  // (Dovecot's !disable_plaintext_auth). When false and TLS is not active, the
  // session announces LOGINDISABLED and hides plaintext mechanisms (RFC 3501 6.2.3).
  bool plaintext_auth_without_tls = false;
  // SASL mechanisms tern-authd offers, upper-case.
  std::vector<std::string> mechanisms = {"PLAIN", "LOGIN"};
  // Limits before authentication: small, because anyone can connect.
  ReaderLimits login_limits{8192, 16384, 8192, 0, true};
  // Limits after authentication.
  ReaderLimits limits{};
  // Bad commands tolerated before "* BYE" (pre-authentication garbage, fuzzers).
  int max_bad_commands = 10;
  // Failed authentications per connection before "* BYE".
  int max_auth_attempts = 3;
  // Output produced by one step() of a long FETCH.
  size_t output_chunk = 256 * 1024;
  // Hierarchy separator announced in LIST and NAMESPACE.
  char separator = '/';
  // The current UNIX time, for SEARCH OLDER/YOUNGER and APPEND without a date.
  std::function<int64_t()> now = [] { return int64_t{0}; };
};

class ImapSession {
 public:
  enum class State {
    kNotAuthenticated,  // RFC 3501 3.1
    kAuthenticated,     // 3.2
    kSelected,          // 3.3
    kLogout,            // 3.4
  };
  enum class Action {
    kNeedInput,     // nothing to do until feed()
    kContinue,      // call step() again once `out` is written
    kStartTls,      // write `out`, do the TLS handshake, call tls_started()
    kAuthenticate,  // consult tern-authd: auth_request(), then auth_challenge()/auth_result()
    kAuthCancel,    // the client aborted AUTHENTICATE; `out` holds the reply
    kIdle,          // in IDLE: call poll() on mailbox changes, step() on input
    kLoggedIn,      // authenticated: the login process hands the connection over now
    kClose,         // write `out` and close the connection
  };
  struct Step {
    std::string out;
    Action action = Action::kNeedInput;
  };
  // What tern-authd is asked (AUTHENTICATE, or LOGIN as PLAIN).
  struct AuthRequest {
    std::string mechanism;                        // upper-case
    std::optional<std::string> initial_response;  // decoded; LOGIN gives "\0user\0password"
    bool login_command = false;                   // came from LOGIN
  };

  // A session before authentication (the login process).
  explicit ImapSession(SessionConfig config);
  // A session of an authenticated user (the session worker).
  ImapSession(SessionConfig config, MailStore& store, std::string user);
  ~ImapSession();

  ImapSession(const ImapSession&) = delete;
  ImapSession& operator=(const ImapSession&) = delete;

  // "* OK [CAPABILITY ...] <server_name> ready." CRLF
  std::string greeting() const;

  void feed(std::string_view bytes) { reader_.feed(bytes); }
  // Bytes fed and not yet consumed: the glue stops reading the socket while this is
  // large (back-pressure), which bounds memory however much a client pipelines.
  size_t buffered() const { return reader_.buffered(); }
  Step step();

  // STARTTLS: the handshake finished. Anything fed before it is dropped.
  void tls_started();

  // AUTHENTICATE / LOGIN, after step() returned kAuthenticate.
  const AuthRequest& auth_request() const { return auth_; }
  // Sends a SASL challenge ("+ <base64>") and waits for the client's answer: the next
  // step() returns kAuthenticate with the decoded answer in auth_response().
  std::string auth_challenge(std::string_view challenge);
  const std::string& auth_response() const { return auth_response_; }
  // Ends the exchange: success (the user tern-authd authenticated) or failure.
  Step auth_result(bool ok, std::string_view user, bool temporary_failure = false);

  // The worker's session after the login process authenticated: attach the store.
  void attach_store(MailStore& store, std::string user);

  // Untagged updates for the selected mailbox (during IDLE, or when the glue wants
  // to push changes); "" when nothing changed.
  std::string poll();

  // "* BYE <reason>" CRLF, and the session is over (timeouts, shutdown).
  std::string bye(std::string_view reason);

  State state() const { return state_; }
  const std::string& user() const { return user_; }
  // What the client said in ID, for the log.
  const std::vector<std::pair<std::string, std::optional<std::string>>>& client_id() const { return client_id_; }
  // Unconsumed input, for handing the connection over.
  std::string take_buffered();
  // The capability list as announced now, space-separated.
  std::string capabilities() const;
  bool in_idle() const { return mode_ == Mode::kIdle; }

 private:
  // One message of the selected mailbox as the client knows it: 8 bytes. Flags,
  // sizes and dates come from Mailbox::fetch_meta() when a command needs them.
  struct ViewMsg {
    uint32_t uid = 0;
    bool recent = false;    // \Recent in this session (RFC 3501 2.3.2)
    bool expunged = false;  // gone from the store, not yet announced
  };
  struct FetchJob;
  enum class Mode {
    kCommands,  // reading commands
    kIdle,      // in IDLE, waiting for DONE
    kAuthWait,  // waiting for tern-authd
    kAuthLine,  // waiting for the client's SASL response line
  };

  Step run_command(const RawCommand& raw);
  Step execute(Command& cmd);
  Step finish(const std::string& tag, std::string out, const std::string& text, bool allow_expunge = true);
  std::string tagged(const std::string& tag, std::string_view status, std::string_view text) const;
  Step bad(const std::string& tag, std::string_view text);
  Step no(const std::string& tag, const tern::common::Error& e, std::string_view context);
  Step spool_start();

  // Commands.
  Step cmd_capability(Command& c);
  Step cmd_logout(Command& c);
  Step cmd_starttls(Command& c);
  Step cmd_login(Command& c);
  Step cmd_authenticate(Command& c);
  Step cmd_enable(Command& c);
  Step cmd_id(Command& c);
  Step cmd_select(Command& c);
  Step cmd_create(Command& c);
  Step cmd_delete(Command& c);
  Step cmd_rename(Command& c);
  Step cmd_subscribe(Command& c);
  Step cmd_list(Command& c);
  Step cmd_namespace(Command& c);
  Step cmd_status(Command& c);
  Step cmd_append(Command& c);
  Step cmd_idle(Command& c);
  Step cmd_close(Command& c);
  Step cmd_expunge(Command& c);
  Step cmd_search(Command& c);
  Step cmd_fetch(Command& c);
  Step cmd_store(Command& c);
  Step cmd_copy(Command& c);
  Step cmd_quota(Command& c);

  Step continue_fetch();
  Step idle_input();
  Step auth_input();

  // Mailbox names between the client's encoding and UTF-8.
  tern::common::Result<std::string> mailbox_from_client(const std::string& raw) const;
  std::string mailbox_to_client(const std::string& utf8) const;
  void append_mailbox(std::string& out, const std::string& utf8) const;

  // The selected mailbox.
  void deselect();
  std::string sync_updates(bool allow_expunge);
  std::string flags_responses() const;  // "* FLAGS" and "* OK [PERMANENTFLAGS"
  std::string keyword_updates();        // flags_responses() when the keywords changed
  std::optional<std::vector<uint32_t>> resolve_seqs(const SequenceSet& set, bool uid, std::string& error) const;
  uint32_t seq_of(uint32_t uid) const;  // 0 if not in the view
  std::string flags_of(const MessageMeta& m, bool recent) const;
  // Metadata of view_[first, last) (their UIDs), in view order; expunged ones left out.
  std::vector<MessageMeta> meta_range(size_t first, size_t last);
  std::string status_items(const std::vector<std::string>& items, const MailboxStatus& st) const;
  bool plaintext_allowed() const { return config_.tls || config_.plaintext_auth_without_tls; }
  RenderMode render_mode() const { return RenderMode{rev2_}; }

  SessionConfig config_;
  ImapReader reader_;
  State state_;
  Mode mode_ = Mode::kCommands;
  MailStore* store_ = nullptr;
  // The APPEND message being spooled (ImapReader kSpoolStart .. the command), and why
  // writing it failed if it did.
  std::unique_ptr<Spool> spool_;
  std::optional<tern::common::Error> spool_error_;
  std::string user_;
  int bad_commands_ = 0;
  int auth_failures_ = 0;

  // Extensions the client enabled (RFC 5161).
  bool rev2_ = false;
  bool condstore_ = false;

  // AUTHENTICATE / LOGIN / IDLE in progress.
  std::string pending_tag_;
  AuthRequest auth_;
  std::string auth_response_;

  // The selected mailbox.
  std::unique_ptr<Mailbox> mailbox_;
  std::string mailbox_name_;  // UTF-8
  bool read_only_ = false;
  std::vector<ViewMsg> view_;
  size_t announced_exists_ = 0;  // the message count the client knows
  std::vector<std::string> announced_keywords_;  // the keywords in the FLAGS the client knows
  NumberSet saved_;  // SEARCH RETURN (SAVE) result, as UIDs (RFC 5182)
  bool saved_valid_ = false;

  std::unique_ptr<FetchJob> fetch_;
  std::vector<std::pair<std::string, std::optional<std::string>>> client_id_;
};

}  // namespace tern::mra::imap
