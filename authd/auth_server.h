// The auth-client server: Dovecot's auth protocol 1.2, server side, for tern-mta,
// tern-mra's login process and Postfix (smtpd_sasl_type = dovecot).
//
// Per connection: the handshake (VERSION, MECH with flags, SPID, CUID, COOKIE, DONE),
// then any number of AUTH requests in flight, each driven through Cyrus SASL on the
// threadpool, with CONT rounds. A failed request is penalised by its remote IP
// (PenaltyTable; an untrusted peer's by its uid) and answered only after
// auth_failure_delay; a success is remembered for auth-userdb REQUEST under the
// connection's cookie.
//
// TRUST  The socket is 0666: any local process may connect. Everything it sends is
//        parsed as untrusted and bounded (line length, requests in flight, SASL
//        message size, request lifetime). A protocol error closes that one
//        connection; other clients never notice. What a peer says about its client
//        (rip, secured, no-penalty...) is believed only from root and the users of
//        auth_client_trusted_users, by SO_PEERCRED (client_trust.h).
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "authd/auth_core.h"
#include "common/sockets.h"

namespace tern::authd {

class AuthServer {
 public:
  explicit AuthServer(AuthCore& core);
  ~AuthServer();
  void listen(int fd);
  void accept(common::UniqueFd fd);
  void stop();
  size_t connections() const { return conns_.size(); }

  // The log lines for a failed authentication (exposed for tests): the Dovecot
  // passdb shape that fail2ban's `dovecot` filter matches, and for SMTP services the
  // Postfix shape that its `postfix` filter (mode=auth) matches.
  static std::string dovecot_fail_line(const std::string& passdb, const std::string& user, const std::string& rip,
                                       const std::string& session, const std::string& reason);
  static std::string postfix_fail_line(const std::string& rip, const std::string& mech);

 private:
  class Conn;
  struct Request;
  AuthCore& core_;
  std::vector<std::string> mechs_;  // offered, in order
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::unordered_map<Conn*, std::shared_ptr<Conn>> conns_;
  uint64_t next_cuid_ = 1;
};

}  // namespace tern::authd
