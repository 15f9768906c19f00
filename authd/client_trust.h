// Which auth-client peers may speak for the client behind them.
//
// An AUTH line carries what a login process saw of its client: rip/lip/rport/lport
// (the remote IP is the penalty key, the address in the log lines fail2ban reads, and
// PAM_RHOST), `secured` (the connection is TLS, so plaintext mechanisms may pass
// disable_plaintext_auth) and `no-penalty` (the login process already applied one).
// The auth-client socket is 0666 so that a login process of any user can reach it;
// Dovecot makes the same claims safe by letting only the login users connect
// (unix_listener auth-client { user group mode }). Here the claims are honoured only
// from peers whose SO_PEERCRED uid is trusted: root, tern-authd's own uid and the
// users in auth_client_trusted_users (by default mail_owner, default_login_user and
// postfix: the processes that really terminate client connections). Any other local
// process is itself the client: its claims are dropped and its failures are
// penalised under its uid, so rotating rip= or sending no-penalty buys it nothing.
//
// Pure decisions, no I/O: the server passes in the peer's credentials.
#pragma once

#include <sys/types.h>

#include <span>
#include <string>
#include <vector>

#include "common/auth_protocol.h"

namespace tern::authd {

// Whether a peer may speak for its client. has_creds false (no SO_PEERCRED) is never
// trusted; uid 0 always is.
bool peer_trusted(bool has_creds, uid_t uid, std::span<const uid_t> trusted_uids);

// For an untrusted peer: clears every field that vouches for the client (rip, lip,
// rport, lport, secured, valid-client-cert, no-penalty) and returns the names of those
// that were sent, in protocol spelling, for the log line ("" fields are not listed).
std::vector<std::string> drop_client_claims(common::auth_protocol::AuthCommand& cmd);

// The penalty key of an untrusted peer: one per local uid ("local uid 1000"). It
// cannot collide with an IP address, so a local user never shares an IP's count.
std::string local_penalty_key(uid_t uid);

}  // namespace tern::authd
