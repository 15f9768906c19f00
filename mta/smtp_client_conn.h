// One outgoing SMTP connection: the socket, TLS, timers and the message bytes around
// the protocol state machine of smtp_client_session.h. It connects to one address,
// gets the session ready (greeting, EHLO, STARTTLS, AUTH), then runs transactions
// for whoever owns it (transport_smtp.h), one at a time, until it is told to quit.
//
// The body streams: from memory or from the queue file 64 KB at a time, dot-stuffed
// for DATA or as it is for BDAT, written only while the socket keeps up, so a 50 MB
// message costs no more memory than a small one.
//
// Bytes the server sends after its "220" to STARTTLS and before the handshake are
// thrown away, never read as replies (the client side of CVE-2011-0411).
//
// Timeouts are Postfix's, one per stage (smtp_helo_timeout, smtp_mail_timeout, ...):
// each restarts whenever bytes move.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/connection.h"
#include "common/line_reader.h"
#include "common/loop.h"
#include "common/smtp_reply.h"
#include "common/tls.h"
#include "common/unique_fd.h"
#include "mta/dns_routing.h"
#include "mta/lmtp_client.h"
#include "mta/smtp_client_session.h"

namespace tern::mta {

struct SmtpClientTimeouts {
  uint64_t connect_ms = 30000;
  uint64_t helo_ms = 300000;
  uint64_t starttls_ms = 300000;
  uint64_t mail_ms = 300000;
  uint64_t rcpt_ms = 300000;
  uint64_t data_init_ms = 120000;
  uint64_t data_xfer_ms = 180000;
  uint64_t data_done_ms = 600000;
  uint64_t quit_ms = 300000;
};

struct SmtpClientOptions {
  SessionConfig session;
  SmtpClientTimeouts timeouts;
  std::string bind4, bind6;                        // source addresses
  std::shared_ptr<common::tls::Context> tls;       // the client context for this policy (may be null with kNone)
};

// Why a connection never became usable.
struct ConnectFailure {
  std::string dsn;             // "4.4.1"
  std::string text;            // "connect to mx.example.org[192.0.2.7]:25: Connection refused"
  bool next_host = true;       // another MX host may do better
  bool permanent = false;      // the message cannot go anywhere (mail loop)
  bool greeted = false;        // the server spoke (counts against smtp_mx_session_limit)
  bool tls_failed = false;     // the TLS handshake failed (policy may: retry in plaintext)
  std::string relay{};         // the server that refused, for relay= in the log ("": none, it never spoke)
};

// A message for one transaction: the envelope and where its bytes come from.
struct OutboundMessage {
  Transaction tx;              // tx.size is set from the body by send()
  std::string data;            // the message, or
  common::UniqueFd fd;         // a large message's queue file (data empty)
  uint64_t fd_size = 0;
};

struct TransactionOutcome {
  std::vector<RecipientReply> replies;  // one per recipient; stage "" for replies made up here
  double seconds = 0;                   // the transaction's duration (delays= d)
};

class SmtpClientConn : public std::enable_shared_from_this<SmtpClientConn> {
 public:
  struct Events {
    std::function<void(SmtpClientConn&)> ready;                          // usable: send() or quit()
    std::function<void(SmtpClientConn&, TransactionOutcome)> done;       // a transaction finished
    std::function<void(SmtpClientConn&, const ConnectFailure&)> failed;  // ended before it was ever ready
    std::function<void(SmtpClientConn&)> closed;                         // ended after it was ready
  };

  static std::shared_ptr<SmtpClientConn> open(common::ev::Loop& loop, SmtpClientOptions options, Target target,
                                              Events events);
  ~SmtpClientConn();

  // Starts a transaction; the connection must be ready.
  void send(std::unique_ptr<OutboundMessage> message);
  void quit();
  void abort();

  const Capabilities& caps() const { return session_.caps(); }
  const Target& target() const { return target_; }
  // "mx.example.org[192.0.2.7]:25", as logs name the relay.
  std::string relay() const;
  // "mx.example.org[192.0.2.7]", as Postfix names the host in "host ... said:".
  std::string peer() const;
  bool tls() const { return session_.tls(); }
  // Seconds from open() to the first ready (delays= c of the first message).
  double setup_seconds() const { return setup_seconds_; }
  std::chrono::steady_clock::time_point opened() const { return t_open_; }
  bool busy() const { return message_ != nullptr; }

 private:
  SmtpClientConn(common::ev::Loop& loop, SmtpClientOptions options, Target target, Events events);
  void start();
  void connected(std::shared_ptr<common::net::Connection> c);
  void on_data(std::string_view d);
  void apply(ClientSession::Out& out);
  void after_step();
  void arm_timeout();
  void pump_body();
  void on_tls_ready();
  void lost(const std::string& why);
  void establish_failed(const ClientSession::Failure& f);
  void report_failure(ConnectFailure f);
  void end();

  common::ev::Loop& loop_;
  SmtpClientOptions opt_;
  Target target_;
  Events ev_;
  ClientSession session_;
  std::shared_ptr<common::net::Connection> conn_;
  common::LineReader lines_;
  common::smtp::ReplyParser parser_{false};
  bool was_ready_ = false;      // reached kReady at least once
  bool ended_ = false;          // failed or closed was reported
  bool quitting_ = false;
  std::unique_ptr<OutboundMessage> message_;
  uint64_t body_off_ = 0;
  DotStuffer stuffer_;
  std::chrono::steady_clock::time_point t_open_, t_tx_;
  double setup_seconds_ = 0;
  std::shared_ptr<SmtpClientConn> self_;  // alive while the socket is
};

}  // namespace tern::mta
