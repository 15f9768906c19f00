// Cyrus SASL (libsasl2) as tern-authd's mechanism engine.
//
// Cyrus runs the mechanisms (PLAIN, LOGIN, SCRAM-SHA-1/-256, CRAM-MD5 from
// libsasl2-modules); Tern supplies what they need through callbacks:
//   - user names are canonicalised by AuthCore (lower case, auth_default_realm);
//   - plaintext passwords (PLAIN, LOGIN) are checked by AuthCore::verify_plain
//     (crypt(3) for virtual users, PAM through the worker for system users);
//   - SCRAM reads stored secrets (authPassword) and CRAM-MD5 the plaintext-
//     equivalent secret (userPassword, only with auth_plaintext_equivalent) from the
//     "tern" auxprop plugin registered here. Cyrus never sees a crypt hash, and no
//     sasldb or /etc/sasl2 file is consulted.
//
// Every call into Cyrus may block (crypt, PAM): run SaslRequest on the threadpool,
// one thread at a time per request. Cyrus is initialised with pthread mutexes.
#pragma once

#include <sasl/sasl.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "authd/auth_core.h"
#include "common/result.h"

namespace tern::authd {

class Sasl {
 public:
  // Once per process, after dropping privilege (it loads the plugins).
  static common::Status init(AuthCore& core);
  // Mechanisms Cyrus can run, intersected with auth_mechanisms, in that order.
  static std::vector<std::string> available(const AuthCore& core);
  static void done();
};

// The "ip;port" form Cyrus takes for a connection's local or remote end, or "" when
// the peer's lip/rip/lport/rport are not a numeric address and port (Cyrus would
// refuse them, and its sasl_server_new() leaks 232 bytes on that error path: found
// by tests/fuzz/auth_client_session). The addresses are only for Cyrus' logs and
// some mechanisms' bindings, so such a request goes on without them.
std::string sasl_endpoint(std::string_view ip, std::string_view port);

class SaslRequest {
 public:
  struct Params {
    std::string service;  // smtp, imap...
    std::string lip, rip, lport, rport;
    bool final_resp_ok = false;  // SASL_SUCCESS_DATA: the last message goes with OK
  };
  enum class Outcome {
    kContinue,  // send `data` as a challenge
    kOk,        // authenticated as `user`; `data` is the final server message
    kFail,      // wrong credentials or a protocol error by the client
    kTemp,      // a database or the worker failed
  };
  struct Step {
    Outcome outcome = Outcome::kFail;
    std::string data;
    std::string user;     // canonical user, when known (also on failure, for logs)
    std::string reason;   // for the log line: "Password mismatch", "unknown user"...
    std::string passdb;   // "lmdb" or "pam"
  };

  static common::Result<std::unique_ptr<SaslRequest>> create(AuthCore& core, const Params& params);
  ~SaslRequest();
  SaslRequest(const SaslRequest&) = delete;
  SaslRequest& operator=(const SaslRequest&) = delete;

  Step start(const std::string& mech, const std::string* initial_response);
  Step step(const std::string& response);

 private:
  SaslRequest(AuthCore& core, Params params) : core_(core), params_(std::move(params)) {}
  Step outcome(int rc, const char* out, unsigned outlen);
  static int checkpass(sasl_conn_t* conn, void* context, const char* user, const char* pass, unsigned passlen,
                       struct propctx* propctx);
  static int canon_user(sasl_conn_t* conn, void* context, const char* in, unsigned inlen, unsigned flags,
                        const char* user_realm, char* out, unsigned out_max, unsigned* out_len);

  AuthCore& core_;
  Params params_;
  sasl_conn_t* conn_ = nullptr;
  std::vector<sasl_callback_t> callbacks_;
  bool checked_ = false;     // our checkpass ran
  PassCheck check_;
  std::string last_user_;    // the canonical name Cyrus asked about
  std::string mech_;         // the mechanism started
  // LOGIN: the user name the client sent, before its password step (see step()).
  std::optional<std::string> login_user_;
};

}  // namespace tern::authd
