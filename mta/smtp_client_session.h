// The SMTP client's protocol state machine (RFC 5321 as a client), without I/O:
// complete server replies go in (from LineReader + ReplyParser), command bytes and
// instructions (start TLS, close) come out. The driver (smtp_client_conn.h) owns the
// socket, the TLS filter, the timers and the message body; this class decides what
// to say and what each reply means. That is what makes every corner testable with
// canned replies, and fuzzable with hostile ones.
//
// One session is one connection: greeting, EHLO (HELO when EHLO is refused),
// STARTTLS as smtp_tls_security_level says (then EHLO again, forgetting what was
// learnt before TLS, RFC 3207 4.2), AUTH PLAIN/LOGIN when there are credentials,
// then any number of transactions (connection reuse), then QUIT.
//
// Transactions: with PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one
// write, and with CHUNKING (RFC 3030) the message follows as one "BDAT n LAST"
// chunk in the same flight, so a message costs one round trip. Without them the
// commands go one at a time. Replies are matched to commands by order (a queue of
// expected replies), which is the same logic for both. SIZE= (RFC 1870),
// BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531) and the DSN parameters (RFC 3461)
// are added when the server advertised them.
//
// Every recipient ends with a reply: its RCPT reply when that was negative, else
// the MAIL reply when MAIL failed, else the reply to DATA or to the end of the
// message. A connection that breaks gives the recipients still open a 4xx made by
// the driver (connection_lost()).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/smtp_reply.h"
#include "mta/smtp_client_sasl.h"

namespace tern::mta {

// What the server's EHLO reply advertised.
struct Capabilities {
  bool esmtp = false;         // EHLO was answered (else HELO)
  bool pipelining = false;    // RFC 2920
  bool size = false;          // RFC 1870
  uint64_t size_limit = 0;    // SIZE's argument; 0: none given
  bool eightbitmime = false;  // RFC 6152
  bool smtputf8 = false;      // RFC 6531
  bool chunking = false;      // RFC 3030
  bool starttls = false;      // RFC 3207
  bool dsn = false;           // RFC 3461
  bool enhanced = false;      // RFC 2034 ENHANCEDSTATUSCODES
  std::vector<std::string> auth;  // RFC 4954 mechanisms, upper case
  std::string server_name;    // first word of the reply's first line
};

// Reads an EHLO reply. Keywords in `discard` (lower case) are ignored, as Postfix's
// smtp_discard_ehlo_keywords does. Unknown keywords and bad arguments are ignored
// too: the server only loses an extension we would not use correctly.
Capabilities parse_ehlo(const common::smtp::Reply& reply, const std::set<std::string>& discard);

// smtp_tls_security_level.
enum class TlsPolicy {
  kNone,     // never STARTTLS
  kMay,      // STARTTLS when offered; plaintext otherwise
  kEncrypt,  // TLS or no delivery; the certificate is not checked
  kVerify,   // TLS with a certificate that is valid for the server's name
};
common::Result<TlsPolicy> parse_tls_policy(std::string_view text);
const char* tls_policy_name(TlsPolicy p);

struct SessionConfig {
  std::string helo_name;
  TlsPolicy tls = TlsPolicy::kMay;
  bool tls_on_connect = false;          // implicit TLS: the session starts inside TLS
  std::set<std::string> discard_ehlo;   // lower case
  // AUTH: with credentials, the session logs in before its first transaction.
  bool auth = false;
  std::string user, password;
  bool plaintext_auth_without_tls = false;  // smtp_sasl_security_options lacks noplaintext
  bool plaintext_auth_with_tls = true;      // smtp_sasl_tls_security_options lacks noplaintext
  std::vector<std::string> mechanism_filter;  // upper case; empty: any we support
};

// One recipient of a transaction.
struct TxRecipient {
  std::string address;   // the envelope address, as it goes between < >
  std::string notify;    // NOTIFY value ("SUCCESS,FAILURE", "NEVER"); empty: none
  std::string orcpt;     // ORCPT value ("rfc822;user+2Bx@example.org", xtext done); empty: none
};

struct Transaction {
  std::string sender;    // "" for <>
  std::vector<TxRecipient> rcpts;
  uint64_t size = 0;     // exact bytes of the message as it will be sent (before dot-stuffing)
  bool eightbit = false; // the message has 8-bit bytes: BODY=8BITMIME
  bool smtputf8 = false; // needs SMTPUTF8 (the caller checked the server offers it)
  std::string ret;       // DSN RET ("FULL", "HDRS"); empty: none
  std::string envid;     // DSN ENVID, xtext done; empty: none
};

// The outcome of one recipient.
struct RecipientReply {
  common::smtp::Reply reply;
  std::string stage;  // the command it answered: "MAIL FROM", "RCPT TO", "DATA", "end of DATA", "BDAT"
};

class ClientSession {
 public:
  // Where the session stands.
  enum class Phase {
    kGreeting,     // waiting for the 220
    kHello,        // EHLO or HELO sent
    kStartTls,     // STARTTLS sent
    kHandshake,    // the driver runs the TLS handshake, then calls tls_ready()
    kAuth,         // AUTH exchange
    kReady,        // between transactions: begin() or quit()
    kTransaction,  // commands of a transaction are answered
    kBody,         // the driver sends the message now, then calls body_sent()
    kReset,        // RSET sent after a failed transaction
    kQuit,         // QUIT sent; close after its reply
    kFailed,       // unusable; failure() says why (the driver closes)
  };
  // What the driver must do after a call.
  struct Out {
    std::string write;       // bytes to send (commands, CRLF included)
    bool start_tls = false;  // put TLS in front of the socket now (after sending `write`)
    bool close = false;      // close the connection (after sending `write`)
  };
  // Why a session could not be used.
  enum class FailureKind {
    kProtocol,     // the server broke the protocol (unparsable, unexpected reply)
    kGreeting,     // the greeting was not 220
    kHello,        // EHLO and HELO were refused
    kTlsRequired,  // TLS policy unmet: STARTTLS not offered or refused
    kAuth,         // authentication failed or impossible
    kLoop,         // the server calls itself by our name: mail would loop
    kReset,        // RSET failed between transactions
  };
  struct Failure {
    FailureKind kind = FailureKind::kProtocol;
    common::smtp::Reply reply;  // the server's reply, or one made up to describe the failure
    std::string stage;          // the command the reply answered
    std::string detail;         // more words for the log (no secrets)
    bool local = false;         // `reply` was made up here, the server did not say it
  };
  // What the session waits for (the driver picks the timeout).
  enum class Wait { kGreeting, kHello, kStartTls, kAuth, kMail, kRcpt, kData, kDataDone, kReset, kQuit, kNothing };

  explicit ClientSession(SessionConfig config);

  Phase phase() const { return phase_; }
  const Capabilities& caps() const { return caps_; }
  bool tls() const { return tls_; }
  bool authenticated() const { return authenticated_; }
  const Failure& failure() const { return failure_; }
  Wait waiting_for() const;
  // "while sending RCPT TO" and friends, for "lost connection with X while ...".
  std::string stage_text() const;

  // One complete reply from the server.
  void on_reply(const common::smtp::Reply& reply, Out& out);
  // The TLS handshake (after STARTTLS) finished.
  void tls_ready(Out& out);

  // Starts a transaction (phase kReady). The message goes as one BDAT chunk when
  // use_bdat() says so (the session already wrote "BDAT <size> LAST" when it enters
  // kBody: the driver sends exactly `size` bytes), else after DATA, dot-stuffed.
  void begin(const Transaction& t, Out& out);
  bool use_bdat() const { return bdat_; }
  // The driver has written the whole message (and for DATA the final ".").
  void body_sent(Out& out);
  // The transaction has every recipient's outcome (phase left kTransaction/kBody).
  bool results_ready() const { return results_ready_; }
  std::vector<RecipientReply> take_results();
  // Whether the server took the message for at least one recipient.
  bool any_accepted() const;

  void quit(Out& out);
  // The connection broke or timed out: recipients without an outcome get `r`
  // (stage from stage_text()), and the session is over.
  void connection_lost(const common::smtp::Reply& r);

 private:
  // One reply the session waits for, in the order the commands went out.
  enum class Expect { kMail, kRcpt, kData, kDataDone, kBdat, kRset };
  void fail(FailureKind kind, common::smtp::Reply reply, std::string stage, std::string detail = "", bool local = false);
  void send_ehlo(Out& out);
  void after_hello(Out& out);
  void start_auth(Out& out);
  void ready(Out& out);
  void send_rcpt(size_t i, Out& out);
  void after_rcpts(Out& out);
  void finish_transaction(Out& out);
  void transaction_reply(const common::smtp::Reply& r, Out& out);
  std::string mail_command() const;
  std::string rcpt_command(size_t i) const;

  SessionConfig cfg_;
  Phase phase_ = Phase::kGreeting;
  Capabilities caps_;
  bool tls_ = false;
  bool helo_fallback_ = false;  // EHLO was refused; HELO sent
  bool authenticated_ = false;
  std::optional<SaslClient> sasl_;
  int auth_rounds_ = 0;
  Failure failure_;

  // The transaction in progress.
  Transaction tx_;
  bool bdat_ = false;
  bool body_sent_ = false;
  std::deque<std::pair<Expect, size_t>> expect_;  // (what, recipient index for kRcpt)
  std::optional<common::smtp::Reply> mail_reply_;
  std::vector<std::optional<RecipientReply>> results_;
  std::vector<size_t> accepted_;
  size_t next_rcpt_ = 0;        // without pipelining: the next RCPT to send
  bool results_ready_ = false;
  bool data_done_ = false;      // the end of the message was answered
};

}  // namespace tern::mta
