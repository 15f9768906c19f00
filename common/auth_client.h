// Asynchronous clients of tern-authd on the event loop, for the other daemons.
//
//   AuthClient   auth-client socket: SASL authentication for tern-mta (SMTP AUTH) and
//                tern-mra's login process (IMAP AUTHENTICATE/LOGIN, POP3 AUTH/USER).
//                Many requests in flight on one connection; CONT rounds go through
//                a challenge callback.
//   UserdbClient auth-userdb socket: USER lookups (uid, gid, home, mail, quota_rule)
//                for tern-mda; REQUEST (auth id + cookie -> user) for tern-mra's
//                session workers; PASS and LIST.
//
// Both connect lazily, reconnect after a failure (the next request connects again),
// and bound every request with a timeout. Results are Result values: an unknown
// user is kNotFound, a failed authentication kPerm (message = the server's reason, or
// "Authentication failed"), a server that is down or slow kTemp. Callbacks run on the
// loop thread, exactly once per request, never from inside the call that started it.
// Not thread-safe: use from the loop thread.
//
// The protocol itself (versions, commands, limits) is common/auth_protocol.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/auth_protocol.h"
#include "common/connection.h"
#include "common/loop.h"
#include "common/result.h"

namespace tern::common::auth {

using auth_protocol::RequestId;
using Fields = std::vector<std::pair<std::string, std::string>>;

// The value of `key` in fields, or "" when absent.
std::string field(const Fields& f, std::string_view key);

// A mechanism the server offers, with Dovecot's flags.
struct Mechanism {
  std::string name;
  bool plaintext = false;    // sends the password in the clear (PLAIN, LOGIN)
  bool dictionary = false;   // open to dictionary attacks (CRAM-MD5)
  bool mutual_auth = false;  // the server proves itself (SCRAM)
  bool private_ = false;     // not to be advertised to clients
};

struct AuthParams {
  std::string mech;              // "PLAIN", "LOGIN", "SCRAM-SHA-256"...
  std::string service;           // "smtp", "imap", "pop3"
  std::string local_ip, remote_ip;
  uint16_t local_port = 0, remote_port = 0;
  bool secured = false;          // TLS (or another channel the caller trusts)
  bool no_penalty = false;
  std::optional<std::string> initial_response;  // raw bytes (not base64)
};

struct AuthSuccess {
  RequestId id = 0;              // for auth-userdb REQUEST, with cookie() and pid()
  std::string user;
  std::string final_data;        // server's last SASL message (SCRAM's v=...), raw
  Fields fields;                 // other OK fields
};

class AuthClient {
 public:
  struct Options {
    std::string socket_path;              // $base_dir/auth-client
    uint64_t connect_timeout_ms = 5000;
    // Must exceed auth_failure_delay plus the largest penalty (15 s by default).
    uint64_t request_timeout_ms = 60000;
    uint32_t pid = 0;                     // CPID; 0: getpid()
  };
  AuthClient(ev::Loop& loop, Options options);
  ~AuthClient();
  AuthClient(const AuthClient&) = delete;
  AuthClient& operator=(const AuthClient&) = delete;

  // The server's challenge for request `id` (raw bytes); answer with respond().
  using ChallengeFn = std::function<void(RequestId id, const std::string& challenge)>;
  using DoneFn = std::function<void(Result<AuthSuccess>)>;
  // Starts one authentication and returns its id (connecting first if needed).
  RequestId start(const AuthParams& params, ChallengeFn on_challenge, DoneFn on_done);
  void respond(RequestId id, std::string_view response);
  // Forgets a request (the caller's client went away); its callbacks will not run.
  void cancel(RequestId id);
  // Connects (if needed) and calls back once the handshake is done.
  void connect(std::function<void(Status)> cb);

  bool connected() const;
  const std::vector<Mechanism>& mechanisms() const;
  const std::string& cookie() const;   // this connection's COOKIE, for REQUEST
  uint32_t pid() const;                // the CPID sent
  uint32_t server_pid() const;
  size_t in_flight() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

struct UserInfo {
  std::string user;
  std::optional<uint32_t> uid, gid;
  std::string home, mail, quota_rule;
  Fields fields;   // everything, including the above
};

class UserdbClient {
 public:
  struct Options {
    std::string socket_path;  // $base_dir/auth-userdb
    uint64_t connect_timeout_ms = 5000;
    uint64_t request_timeout_ms = 30000;
  };
  UserdbClient(ev::Loop& loop, Options options);
  ~UserdbClient();
  UserdbClient(const UserdbClient&) = delete;
  UserdbClient& operator=(const UserdbClient&) = delete;

  using UserFn = std::function<void(Result<UserInfo>)>;
  // USER: kNotFound for an unknown user.
  void user(const std::string& user, const std::string& service, UserFn cb);
  // REQUEST: who logged in with auth request `auth_id` on the auth-client connection
  // of process `client_pid` whose COOKIE was `cookie`. Works once per login.
  void request(uint32_t client_pid, RequestId auth_id, const std::string& cookie, UserFn cb);
  // PASS: the canonical name if the user exists and may log in (no password check).
  void pass(const std::string& user, const std::string& service, std::function<void(Result<std::string>)> cb);
  // LIST: users matching a glob mask ("" for all).
  void list(const std::string& mask, std::function<void(Result<std::vector<std::string>>)> cb);

  bool connected() const;
  size_t in_flight() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

// Parses a USER reply's arguments (after the id) into UserInfo; exposed for tests.
Result<UserInfo> parse_user_reply(const std::vector<std::string>& args_after_id);

}  // namespace tern::common::auth
