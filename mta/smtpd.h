// The SMTP server of tern-mta: the listeners smtp (25), submission (587, RFC 6409)
// and smtps (465, RFC 8314), one Session per connection, and what sessions share
// (settings read once from the config, the per-client counters Postfix keeps in
// anvil(8), the recipient tables, the queue).
//
// A session is a state machine over a Connection. Lines come from a LineReader (only
// CRLF ends a command; a bare LF or CR is refused with 550 5.5.2 and the client is
// disconnected, as Postfix's smtpd_forbid_bare_newline = yes does), message bodies
// from the DATA reader (only CRLF.CRLF ends DATA) or BDAT chunks. The body streams
// through the header filter into the queue's BodyWriter; nothing holds a whole
// message in memory. The 250 after DATA is sent from the queue's enqueue callback,
// that is, once the message is durable.
//
// Policy questions (restrictions, recipient tables) are answered by smtpd_check.h
// and recipients.h, which do no I/O; a session gathers the facts they need (DNS,
// the user database) asynchronously first, pausing its input meanwhile.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/cidr.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/dns.h"
#include "common/loop.h"
#include "common/sockets.h"
#include "common/tls.h"
#include "mta/queue_store.h"
#include "mta/recipients.h"
#include "mta/sasl.h"
#include "mta/smtpd_check.h"

namespace tern::mta {

// Which listener a connection came in on.
enum class Port {
  kMx,          // "smtp": mail from anywhere; STARTTLS offered, AUTH when configured
  kSubmission,  // "submission": RFC 6409, AUTH required, STARTTLS before plaintext AUTH
  kSmtps,       // "smtps": RFC 8314 implicit TLS, AUTH required
  kLocal,       // "sendmail": the local socket of the sendmail command (peer uid known)
};

struct SmtpdSettings {
  std::string myhostname;
  std::string banner;
  std::string mail_name;
  uint64_t message_size_limit = 0;   // 0: none
  uint64_t queue_minfree = 0;        // free bytes the queue file system keeps (Postfix)
  std::string queue_directory;       // whose file system queue_minfree is about
  size_t recipient_limit = 1000;
  int64_t conn_count_limit = 0, conn_rate_limit = 0, msg_rate_limit = 0, rcpt_rate_limit = 0;
  // smtpd_client_connection_limit: network sessions at once, all clients together.
  uint64_t conn_limit = 10000;
  uint64_t rate_unit_ms = 60000;
  common::NetworkList mynetworks;
  common::NetworkList limit_exceptions;
  common::NetworkList bare_newline_exclusions;
  uint64_t timeout_ms = 300000;
  uint64_t error_sleep_ms = 1000;
  int soft_error_limit = 10, hard_error_limit = 20, junk_limit = 100;
  bool delay_reject = true, helo_required = false, forbid_bare_newline = true, disable_vrfy = false;
  bool reject_unlisted_recipient = true;
  Restrictions client, helo, sender, relay, recipient, data;
  CheckCodes codes;
  std::string tls_level = "may";     // none, may, encrypt (the MX port)
  bool tls_auth_only = true;
  bool sasl_on_mx = false;
  bool broken_sasl_auth_clients = false;
  bool sasl_noanonymous = true, sasl_noplaintext = false;
  bool sasl_authenticated_header = false;
  int auth_failure_limit = 3;
  size_t header_size_limit = 102400;
  std::vector<std::string> message_drop_headers;  // lower case
  bool always_add_missing_headers = false;
  std::string message_id_domain;
  std::string myorigin;
  bool peername_lookup = true;
  bool dns_configured = false;       // dns_servers is set

  static common::Result<SmtpdSettings> from_config(const common::Config& cfg);
};

// Per-client counters (Postfix anvil): simultaneous connections, and connections,
// messages and recipients per time unit.
class Anvil {
 public:
  explicit Anvil(uint64_t unit_ms) : unit_ms_(unit_ms) {}
  void connect(const std::string& addr, uint64_t now_ms);
  void disconnect(const std::string& addr);
  int64_t connections(const std::string& addr) const;
  // The count of this event in the current time unit after adding `n`.
  int64_t rate(const std::string& addr, int which, uint64_t now_ms, int64_t n = 1);
  enum { kConnRate = 0, kMsgRate = 1, kRcptRate = 2 };

 private:
  struct Client {
    int64_t count = 0;
    uint64_t window_start[3] = {0, 0, 0};
    int64_t in_window[3] = {0, 0, 0};
  };
  void gc(uint64_t now_ms);
  uint64_t unit_ms_;
  std::map<std::string, Client> clients_;
  uint64_t last_gc_ = 0;
};

class Session;

class SmtpServer {
 public:
  // Called after a message is durably queued.
  using OnQueued = std::function<void(const std::string& queue_id)>;

  SmtpServer(common::ev::Loop& loop, SmtpdSettings settings, QueueStore& queue, RecipientTables& tables,
             std::shared_ptr<common::tls::Context> tls, SaslServer* sasl, common::dns::Resolver* resolver,
             OnQueued on_queued);
  ~SmtpServer();
  // Starts accepting on the given listening sockets.
  void listen(int fd, Port port, const std::string& name);
  // Stops accepting; sessions run on until they end.
  void stop();
  size_t sessions() const { return sessions_.size(); }
  // Sessions on the network ports, which smtpd_client_connection_limit bounds, and
  // the bound in force (the setting, lowered to fit the open file limit).
  size_t network_sessions() const { return network_.size(); }
  uint64_t connection_limit() const { return conn_limit_; }

  // For sessions.
  common::ev::Loop& loop() { return loop_; }
  const SmtpdSettings& settings() const { return settings_; }
  QueueStore& queue() { return queue_; }
  RecipientTables& tables() { return tables_; }
  common::tls::Context* tls() { return tls_.get(); }
  // The context for ports where TLS is mandatory (smtpd_tls_mandatory_ciphers);
  // without one, tls() serves them too.
  void set_mandatory_tls(std::shared_ptr<common::tls::Context> c) { mandatory_tls_ = std::move(c); }
  // What a handshake on `port` uses: the mandatory context on submission and smtps,
  // and on the MX port when smtpd_tls_security_level = encrypt.
  common::tls::Context* tls_for(Port port) {
    const bool mandatory = port == Port::kSubmission || port == Port::kSmtps ||
                           (port == Port::kMx && settings_.tls_level == "encrypt");
    return mandatory && mandatory_tls_ ? mandatory_tls_.get() : tls_.get();
  }
  SaslServer* sasl() { return sasl_; }
  common::dns::Resolver* resolver() { return resolver_; }
  Anvil& anvil() { return anvil_; }
  void queued(const std::string& queue_id) {
    if (on_queued_) on_queued_(queue_id);
  }
  // The local socket's XSHOWQ and XFLUSH.
  std::function<std::string()> showq = [] { return std::string("Mail queue is empty\n"); };
  std::function<void()> flush = [] {};
  // The local socket's queue commands (ternctl queue flush|hold|release|delete):
  // verb FLUSH, HOLD, RELEASE or DELETE, argument a queue id or ALL.
  using QueueAdmin = std::function<void(const std::string& verb, const std::string& arg,
                                        std::function<void(common::smtp::Reply)> done)>;
  QueueAdmin queue_admin;
  void session_ended(Session* s);

 private:
  std::string too_many_connections() const;
  void refuse(common::UniqueFd fd, bool plaintext);
  common::ev::Loop& loop_;
  SmtpdSettings settings_;
  QueueStore& queue_;
  RecipientTables& tables_;
  std::shared_ptr<common::tls::Context> tls_, mandatory_tls_;
  SaslServer* sasl_;
  common::dns::Resolver* resolver_;
  OnQueued on_queued_;
  Anvil anvil_;
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::map<Session*, std::shared_ptr<Session>> sessions_;
  std::set<Session*> network_;  // the sessions that count against conn_limit_
  uint64_t conn_limit_ = 0;
  bool at_limit_ = false;       // the limit was reached and not yet left (one warning each time)
};

}  // namespace tern::mta
