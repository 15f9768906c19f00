// The auth worker: a separate process for the system-user path (PAM service `tern`
// and passwd lookups), which needs more privilege than tern-authd (pam_unix reads
// /etc/shadow) and may block for seconds (pam_unix's failure delay, NSS over LDAP).
//
// tern-authd forks it before dropping privilege; it keeps auth_worker_user (root by
// default, as Dovecot's auth-worker service) and parses no network bytes: only
// fixed-form requests from tern-authd over a private socketpair. For each request
// tern-authd makes a fresh socketpair, passes one end to the worker (SCM_RIGHTS), and
// writes the request on its own end; the worker forks a child per request, so one
// slow PAM conversation never holds up another and a crashing PAM module takes only
// that child with it. At most auth_worker_max_count children run at once; beyond
// that a request fails as temporary.
//
// Request lines (TAB-separated, tab-escaped):
//   PAM <user> <password> <service> <rip>     -> OK <user> <uid> <gid> <home> | FAIL <why> |
//                                                NOTFOUND | TEMP <why>
//   PASSWD <user>                             -> OK ... | NOTFOUND | TEMP <why>
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/privilege.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::authd {

struct WorkerSettings {
  std::string pam_service = "tern";
  common::ValidIds ids;  // first/last_valid_uid, first/last_valid_gid
  unsigned max_children = 30;
  std::string run_as;  // user to become; "" or "root" keeps root
  std::vector<int> close_fds;  // tern-authd's listening sockets: closed in the worker
  bool core_dumps = false;     // process_core_dumps
};

struct WorkerReply {
  enum class Status {
    kOk,        // authenticated (PAM) or found (PASSWD)
    kFail,      // wrong password, or refused by PAM account management
    kNotFound,  // no such system user, or uid/gid outside first/last_valid_uid/gid
    kTemp,      // the worker is unavailable or overloaded
  } status = Status::kTemp;
  std::string user;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string detail;
};

// The tern-authd side. Thread-safe: each call has its own socketpair.
class WorkerClient {
 public:
  // Forks the worker; call as root, before dropping privilege.
  static common::Result<std::unique_ptr<WorkerClient>> start(const WorkerSettings& settings);
  ~WorkerClient();

  // Blocking; run on the threadpool.
  WorkerReply pam(const std::string& user, const std::string& password, const std::string& service,
                  const std::string& rip);
  WorkerReply passwd(const std::string& user);
  pid_t pid() const { return pid_; }

 private:
  WorkerReply call(const std::string& request);
  common::UniqueFd control_;
  std::mutex send_mu_;
  pid_t pid_ = -1;
};

// The worker's main loop (in the forked child). Never returns.
[[noreturn]] void worker_main(int control_fd, const WorkerSettings& settings);

}  // namespace tern::authd
