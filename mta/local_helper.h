// tern-mta's local helper: runs the "|command" and "/file" destinations of
// aliases(5) as the user Postfix local(8) runs them as, never as mail_owner or root.
//
// Postfix local(8), SECURITY: "delivery to external commands and files is done
// with the privileges of the alias file owner, or default_privs when root owns the
// alias file" (aliases(5) says the same). tern-mta runs as mail_owner and cannot
// change its uid, and must not be able to: it parses every network byte. When
// tern-master starts it as root, its pre_jail hook forks this helper before it
// reads the TLS key and drops privilege; the helper keeps root, holds no fd but its
// socket to tern-mta and the log, and never reads a network byte.
//
// TRUST     tern-mta is trusted only to name a recipient and one of its
//           destinations; a compromised tern-mta must not be able to run a command
//           of its choosing as a user of its choosing. So for each job the helper
//           expands the recipient itself, as root, with the same alias_maps (and
//           virtual_alias_maps, :include: files) read from the files, and goes on
//           only when that expansion has the destination; the owner is the owner
//           of the table (or include file) that expansion found it in, never a uid
//           tern-mta sends. Files other users own are not parsed as root: their
//           compiled tables are looked up by a child that is the owner, and
//           :include: files are opened with the naming table's owner's rights
//           (default_privs for root's tables), as Postfix local(8) does
//           (common/maps.h, privilege.h open_as/run_as). The message itself is
//           untrusted content, as always.
// PRIVILEGE Root in the helper. Each job is a process of its own, forked by the
//           helper (so a slow command holds up no other delivery): it closes every
//           fd but its job socket and the log, checks the destination, then becomes
//           the owner for good (setgroups to its primary group, setresgid,
//           setresuid, verified: common::drop_privileges) and runs run_local()
//           (local_delivery.h) as that user: the command with a clean environment
//           (HOME LOGNAME USER SHELL SENDER RECIPIENT LOCAL EXTENSION DOMAIN ...)
//           killed after command_time_limit, the file opened O_APPEND|O_NOFOLLOW.
//           Root as the owner becomes default_privs (nobody); an owner that is
//           mail_owner (a table tern-mta itself could have written), or a
//           default_privs that is root or mail_owner, is refused: the recipient is
//           deferred and the log says why.
//
// The helper's settings are the config tern-mta was started with (a reload does
// not change alias_maps for tern-mta either).
//
// Wire format, both sides here:
//   helper socket (SOCK_SEQPACKET): "JOB" with one fd, a new SOCK_SEQPACKET socket
//     for this job alone;
//   job socket: tern-mta sends "DELIVER" TAB kind=command|file target= recipient=
//     sender= queue_id= with one fd, the message (a memfd); the job process answers
//     "DONE" TAB status=s|d|b dsn= text=.
// At most kMaxLocalPacket bytes a packet; a malformed request ends the helper.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "mta/local_delivery.h"

namespace tern::mta {

inline constexpr size_t kMaxLocalPacket = 65536;

// The uid a |command or /file of a table owned by `table_owner` runs as: the owner,
// or `default_privs` when root owns the table (Postfix local(8)). Never root and
// never mail_owner: a kDenied error with the reason, for the log line.
common::Result<uid_t> alias_delivery_uid(uid_t table_owner, uid_t default_privs, uid_t mail_owner);

class LocalHelper {
 public:
  // Forks the helper; the caller is root and single-threaded.
  static common::Result<std::unique_ptr<LocalHelper>> start(const common::Config& cfg);
  ~LocalHelper();

  // Blocking, thread-safe (a job socket per call); from the threadpool. Waits at
  // most the job's time limit and a minute more.
  LocalOutcome deliver(const LocalJob& job);

  // The helper's socket and pid, for tests that play a compromised tern-mta.
  int socket_for_tests() const { return sock_.get(); }
  pid_t pid_for_tests() const { return pid_; }

 private:
  LocalHelper(common::UniqueFd sock, pid_t pid) : sock_(std::move(sock)), pid_(pid) {}
  std::mutex mu_;
  common::UniqueFd sock_;
  pid_t pid_;
};

}  // namespace tern::mta
