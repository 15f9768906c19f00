// The state tern-authd's two protocol servers share: settings, the password and user
// databases, the per-IP penalty table, and the table of finished authentications that
// auth-userdb REQUEST turns into a user.
//
// Credential checks (crypt(3), PAM through the auth worker) are blocking and run on
// the libuv threadpool; verify_plain() and the auxprop lookups are safe to call from
// there. Everything else runs on the loop thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "authd/penalty.h"
#include "authd/userdb.h"
#include "common/auth_protocol.h"
#include "common/config.h"
#include "common/loop.h"
#include "common/privilege.h"
#include "common/result.h"

namespace tern::authd {

class WorkerClient;

struct AuthSettings {
  std::vector<std::string> mechanisms;  // upper-case, from auth_mechanisms
  bool disable_plaintext_auth = true;
  uint64_t failure_delay_ms = 2000;
  PenaltyPolicy penalty;
  std::string default_realm;
  bool passdb_lmdb = true, passdb_pam = false;
  bool userdb_lmdb = true, userdb_passwd = false;
  UserdbDefaults defaults;
  common::ValidIds ids;  // first/last_valid_uid, first/last_valid_gid
  bool plaintext_equivalent = false;
  bool scram_secrets = false;  // auth_scram_secrets: new passwords get SCRAM secrets
  std::vector<uid_t> userdb_allowed_uids;  // may use auth-userdb (plus root)
  // May vouch for their clients on auth-client (plus root): client_trust.h.
  std::vector<uid_t> client_trusted_uids;
  std::string pam_service = "tern";
  std::string db_path;

  // Reads the auth keys; resolves mail_uid/mail_gid and the allowed users to numbers
  // (getpw* at start-up only). Errors name the key.
  static common::Result<AuthSettings> from_config(const common::Config& cfg);
};

// A userdb answer: the canonical user name and its fields (uid, gid, home, mail...).
struct UserdbResult {
  std::string user;
  std::vector<std::pair<std::string, std::string>> fields;
};

// The outcome of a plaintext password check.
struct PassCheck {
  enum class Status {
    kOk,         // right password; `user` is the canonical name
    kMismatch,   // wrong password
    kUnknown,    // no such user (in any passdb)
    kDisabled,   // the user exists but is disabled
    kTemp,       // the database or worker failed: try later
  } status = Status::kUnknown;
  std::string user;
  std::string passdb;  // "lmdb" or "pam": the driver named in the log line
  std::string detail;  // for the log (never the password)
};

class AuthCore {
 public:
  AuthCore(common::ev::Loop& loop, AuthSettings settings, std::unique_ptr<UserDb> db, WorkerClient* worker);
  ~AuthCore();

  const AuthSettings& settings() const { return settings_; }
  common::ev::Loop& loop() { return loop_; }
  PenaltyTable& penalty() { return penalty_; }

  // Userdb lookup: virtual users (LMDB, on the loop thread) then system users
  // (passwd, through the worker). kNotFound for an unknown user.
  void userdb_lookup(const std::string& user, std::function<void(common::Result<UserdbResult>)> cb);
  // Passdb lookup without a password: does the user exist and may log in.
  void passdb_lookup(const std::string& user, std::function<void(common::Result<std::string>)> cb);
  // Virtual users matching a glob mask.
  common::Result<std::vector<std::string>> list_users(const std::string& mask, size_t limit);

  // Blocking: checks a plaintext password. Threadpool-safe.
  PassCheck verify_plain(const std::string& user, const std::string& password, const std::string& service,
                         const std::string& rip);
  // Blocking: the stored SASL secrets of a virtual user for Cyrus' auxprop lookup
  // (SCRAM authPassword values; the plaintext-equivalent secret when enabled).
  // Threadpool-safe. nullopt when the user does not exist or is disabled.
  struct Secrets {
    std::string user;
    std::vector<std::string> scram;
    std::string cram;
  };
  std::optional<Secrets> secrets(const std::string& user);
  // Whether any virtual user has a SCRAM secret (a scan that stops at the first).
  bool any_scram_secrets();
  // The canonical form of a name typed by a client.
  common::Result<std::string> canonical(const std::string& name) const;

  // auth-userdb REQUEST: a successful authentication on an auth-client connection is
  // remembered for kRequestTtlMs under (connection cookie, client pid, request id),
  // and can be taken once.
  static constexpr uint64_t kRequestTtlMs = 120000;
  static constexpr size_t kMaxRemembered = 100000;  // bounds memory if nobody asks
  void remember_success(const std::string& cookie, uint32_t cpid, common::auth_protocol::RequestId id,
                        const std::string& user);
  std::optional<std::string> take_success(const std::string& cookie, uint32_t cpid,
                                          common::auth_protocol::RequestId id);

  // Runs `work` on the threadpool and then `done` on the loop, counted, so that a stop
  // can wait until no thread still uses this core, the worker or a request.
  void queue_work(std::function<void()> work, std::function<void()> done);
  // Posts `fn` to the loop once no queued work is outstanding.
  void when_idle(std::function<void()> fn);

 private:
  struct Key {
    std::string cookie;
    uint32_t cpid;
    uint32_t id;
    bool operator<(const Key& o) const {
      return std::tie(cookie, cpid, id) < std::tie(o.cookie, o.cpid, o.id);
    }
  };
  void expire_remembered();

  common::ev::Loop& loop_;
  AuthSettings settings_;
  std::unique_ptr<UserDb> db_;
  WorkerClient* worker_;
  PenaltyTable penalty_;
  std::map<Key, std::pair<std::string, uint64_t>> remembered_;  // -> user, expiry (ms)
  std::deque<std::pair<uint64_t, Key>> expiry_;                 // oldest first
  size_t work_in_flight_ = 0;
  std::vector<std::function<void()>> idle_waiters_;
};

}  // namespace tern::authd
