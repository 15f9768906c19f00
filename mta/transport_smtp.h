// The SMTP transport (Postfix's smtp(8) delivery agent with the part of qmgr(8)
// that shares connections out): delivery jobs from the queue manager, one per
// message and next hop, go to per-destination queues; each destination has at most
// smtp_destination_concurrency_limit connections, and all of them together at most
// default_process_limit. A connection that finished a message takes the next one
// waiting for its destination (connection reuse, up to
// smtp_connection_reuse_time_limit), or waits smtp_connection_cache_time_limit for
// one before it says QUIT.
//
// A new connection is made by routing the next hop (dns_routing.h) and trying the
// addresses in order: a host that does not answer, does not greet, or cannot do
// what the TLS policy requires gives way to the next (at most smtp_mx_address_limit
// addresses and smtp_mx_session_limit greeted sessions). With policy "may", a host
// whose TLS handshake fails is tried again in plaintext, as Postfix does.
//
// When a destination fails as a whole (its DNS, or every address), the jobs waiting
// for it get the same outcome at once ("delivery temporarily suspended: ...")
// instead of each waiting out its own timeouts; the scheduler retries them later.
//
// Per message, once a connection is ready: SMTPUTF8 mail that needs it bounces when
// the server lacks it (5.6.7), a message over the server's SIZE bounces (5.3.4),
// 8-bit mail to a server without 8BITMIME is converted to quoted-printable
// (smtp_client_mime.h) or, if that cannot be done, bounces (5.6.3).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/loop.h"
#include "common/maps.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "mta/dns_routing.h"
#include "mta/smtp_client_conn.h"

namespace tern::mta {

struct SmtpTransportSettings {
  SmtpClientTimeouts timeouts;
  std::string helo_name;
  TlsPolicy tls = TlsPolicy::kMay;
  bool wrapper_mode = false;            // smtp_tls_wrappermode
  std::string ca_file;                  // smtp_tls_CAfile
  std::set<std::string> discard_ehlo;
  std::string bind4, bind6;
  std::optional<NextHop> relayhost;
  size_t dest_concurrency = 20;
  size_t total_concurrency = 100;
  size_t rcpt_limit = 50;
  size_t mx_session_limit = 2;
  size_t mx_address_limit = 5;
  uint64_t cache_time_ms = 2000;
  uint64_t reuse_time_ms = 300000;
  bool sasl = false;
  std::vector<std::string> sasl_password_maps;
  bool sasl_plaintext = false;          // smtp_sasl_security_options lacks noplaintext
  bool sasl_tls_plaintext = true;       // smtp_sasl_tls_security_options lacks noplaintext
  std::vector<std::string> sasl_mechanisms;  // filter, upper case
  std::string myhostname;
  bool ipv4 = true, ipv6 = true;

  static common::Result<SmtpTransportSettings> from_config(const common::Config& cfg);
};

struct SmtpJobRecipient {
  std::string address;
  uint8_t notify = 0;    // NotifyBits (queue_store.h)
  std::string orcpt;     // "rfc822;user@example.org" as stored
};

// One delivery: one message's recipients for one next hop.
struct SmtpJob {
  std::string queue_id;
  NextHop hop;
  std::string sender;
  bool body_8bit = false;
  bool smtputf8 = false;
  std::string ret, envid;
  std::vector<SmtpJobRecipient> rcpts;
};

// One recipient's outcome, for the queue manager's log line and queue record.
struct SmtpResult {
  char status = 'd';         // 's' sent, 'd' deferred, 'b' bounced
  std::string dsn;           // "2.0.0"
  std::string text;          // "250 2.0.0 Ok: queued as X", "host mx[addr] said: 550 ... (in reply to RCPT TO command)"
  std::string relay = "none";  // "mx.example.org[192.0.2.7]:25"
  std::string remote_mta;    // the server's name, for the DSN's Remote-MTA
  std::string diagnostic;    // the server's reply, for the DSN's Diagnostic-Code
  bool dsn_passed = false;   // the server took our DSN parameters: it reports from now on
  double conn_seconds = 0;   // delays= c
  double xfer_seconds = 0;   // delays= d
};

// A message's bytes, as the queue has them.
struct QueuedBody {
  std::string data;          // small bodies, or
  common::UniqueFd fd;       // a large body's file
  uint64_t size = 0;
};

class SmtpTransport {
 public:
  using BodyReader = std::function<common::Result<QueuedBody>(const std::string& queue_id)>;
  using Done = std::function<void(std::vector<SmtpResult>)>;

  static common::Result<std::unique_ptr<SmtpTransport>> create(common::ev::Loop& loop, SmtpTransportSettings s,
                                                               common::dns::Resolver* resolver, BodyReader bodies);
  ~SmtpTransport();

  // The next hop of a recipient domain (relayhost when set).
  common::Result<NextHop> nexthop(const std::string& domain) const;
  size_t recipient_limit() const { return s_.rcpt_limit; }

  // `done` runs once, on the loop thread, with one result per recipient in order.
  void submit(SmtpJob job, Done done);
  // Closes every connection; jobs not done are dropped without their callbacks.
  void stop();

  size_t connections() const { return total_; }

 private:
  struct Pending {
    SmtpJob job;
    Done done;
  };
  struct Dest;
  struct Attempt;

  SmtpTransport(common::ev::Loop& loop, SmtpTransportSettings s, common::dns::Resolver* resolver, BodyReader bodies);
  void dispatch(Dest& d);
  void dispatch_waiting();
  void start_attempt(Dest& d, Pending p);
  void try_target(std::shared_ptr<Attempt> a);
  // `relay`: the server that refused after greeting us, for the log ("": relay=none).
  void attempt_failed(std::shared_ptr<Attempt> a, const std::string& dsn, const std::string& text, bool permanent,
                      const std::string& relay = "");
  void run(Dest& d, std::shared_ptr<SmtpClientConn> c, Pending p, double conn_seconds);
  void conn_ready(const std::string& key, SmtpClientConn& c);
  void conn_gone(const std::string& key, SmtpClientConn* c);
  void park(Dest& d, std::shared_ptr<SmtpClientConn> c);
  SmtpClientOptions options_for(const NextHop& hop, bool plaintext) const;
  std::optional<std::pair<std::string, std::string>> credentials(const NextHop& hop, const std::string& host) const;
  Dest& dest(const NextHop& hop);
  void maybe_erase(const std::string& key);

  common::ev::Loop& loop_;
  SmtpTransportSettings s_;
  std::unique_ptr<Router> router_;
  BodyReader bodies_;
  std::shared_ptr<common::tls::Context> tls_;
  std::vector<std::unique_ptr<common::Map>> password_maps_;
  std::map<std::string, std::unique_ptr<Dest>> dests_;
  std::set<std::string> waiting_;   // destinations with jobs waiting for a connection slot
  size_t total_ = 0;                // connections open or opening
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace tern::mta
