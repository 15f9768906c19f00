// The login process of tern-mra: IMAP (143, 993) and POP3 (110, 995) up to the
// moment a client has authenticated, then the hand-over (handoff.h).
//
// Here every pre-authentication byte is read: TLS (implicit, STARTTLS, STLS),
// CAPABILITY/CAPA, LOGIN, AUTHENTICATE, USER/PASS, AUTH, through the pure session
// cores (imap_session.h, pop3_session.h), with credentials checked by tern-authd over
// its auth-client socket. Limits: login_timeout for the whole pre-login phase (much
// shorter than the 30 minutes allowed after login), login_max_connections_per_ip,
// login_max_connections, the session cores' line/literal/bad-command bounds, and
// tern-authd's per-IP failure penalty.
//
// After a successful authentication the connection goes to tern-mra-postlogin with
// the auth request id: a plaintext connection as its socket, a TLS one as one end of
// a socketpair while this process keeps the TLS session and relays plaintext both
// ways (as Dovecot's login processes do for TLS). The tagged OK (IMAP) or +OK (POP3)
// is written by the session worker once the mailbox is usable, never from here.
//
// Logs in Dovecot's shapes (fail2ban's dovecot filter matches them):
//   imap-login: Login: user=<u>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=812, TLS, session=<...>
//   imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u>, method=PLAIN, rip=..., lip=..., TLS, session=<...>
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/auth_client.h"
#include "common/daemon.h"
#include "common/sockets.h"
#include "common/tls.h"

namespace tern::mra {

class LoginServer {
 public:
  explicit LoginServer(common::DaemonContext& ctx);
  ~LoginServer();
  // Before the privilege drop: reads the TLS key (readable by root only).
  common::Status prepare();
  // After it: connects to tern-authd and starts accepting.
  common::Status start();
  // Stops accepting and ends the logins in progress ("Server shutting down."). TLS
  // relays stay until their worker, which is stopping too, has sent its BYE and
  // closed (at most kStopGraceMs); then `done` runs, on the loop, once.
  void stop(std::function<void()> done);
  static constexpr uint64_t kStopGraceMs = 5000;

  struct Client;

 private:
  void accept(common::UniqueFd fd, const std::string& service);
  void pump(const std::shared_ptr<Client>& c);
  void begin_auth(const std::shared_ptr<Client>& c);
  void auth_done(const std::shared_ptr<Client>& c, common::Result<common::auth::AuthSuccess> r);
  void hand_over(const std::shared_ptr<Client>& c, uint32_t auth_id, const std::string& user, std::string ok_line);
  void handover_reply(const std::shared_ptr<Client>& c, const std::string& packet);
  void start_relay(const std::shared_ptr<Client>& c);
  void fail_handover(const std::shared_ptr<Client>& c, const std::string& kind, const std::string& text);
  void closed(const std::shared_ptr<Client>& c);
  void release_ip(Client& c);
  // auth_mechanisms less those tern-authd does not offer (SCRAM without stored
  // secrets), once its handshake has said which; before that, all of auth_mechanisms.
  std::vector<std::string> offered_mechanisms() const;

  std::string socket_dir() const;
  common::DaemonContext& ctx_;
  const common::Config& cfg_;
  std::shared_ptr<common::tls::Context> tls_;
  std::unique_ptr<common::auth::AuthClient> auth_;
  std::vector<std::unique_ptr<common::net::Listener>> listeners_;
  std::map<uint64_t, std::shared_ptr<Client>> clients_;
  std::map<std::string, uint64_t> per_ip_;
  uint64_t fd_room_ = UINT64_MAX;  // connections the open file limit leaves room for
  uint64_t next_id_ = 0;
  std::vector<std::string> mechanisms_;
  // Shutting down: called once the last relay has closed (or the grace ran out).
  std::function<void()> stopped_;
  std::unique_ptr<common::ev::Timer> stop_timer_;
  std::unique_ptr<common::ev::Timer> trim_timer_;  // malloc_trim once no client is left
  void maybe_stopped();
};

}  // namespace tern::mra
