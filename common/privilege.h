// Users, groups and dropping privilege.
//
// drop_privileges() is the one place a Tern process gives up root: setgroups to the
// user's primary group only, setgid, setuid, and then it checks that the change took
// and that root cannot be regained (Dovecot restrict-access, OpenSMTPD). A process
// that finds itself still root afterwards exits.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common {

struct UserIds {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::string shell;
};

// By name or numeric uid ("1001").
Result<UserIds> lookup_user(const std::string& name_or_uid);
Result<UserIds> lookup_uid(uid_t uid);
Result<gid_t> lookup_group(const std::string& name_or_gid);
// The user this process runs as.
UserIds current_user();

// Becomes `user` (and `gid`, normally user.gid) for good, then verifies.
Status drop_privileges(const UserIds& user, gid_t gid);

// Root reading a file that a user controls reads it as that user (Postfix opens
// :include: files and reads user-owned tables with the owner's rights, never as
// root). Both fork a child that becomes `uid` (its passwd entry's gid, no other
// groups; refused for uid 0 or an unknown uid) and run only there; a process that
// is not root, or is already `uid`, does the work itself.
//
// open_as: the child opens `path` with `flags` and hands the descriptor back, so
// the caller reads (and fstats) exactly what the user could open.
Result<UniqueFd> open_as(const std::string& path, int flags, uid_t uid);
// run_as: `fn` runs in the child, whose answer (at most max_reply bytes) comes back
// over a pipe; a child that dies or answers too much is a kTemp error. Descriptors
// the caller holds are inherited (fn may use one the caller opened as root).
Result<std::string> run_as(uid_t uid, const std::function<Result<std::string>()>& fn, size_t max_reply);

// Makes the real and saved group IDs the effective one, so a group kept as saved
// gid (mail_privileged_group) can no longer be taken back; then verifies.
Status drop_saved_gid();

// Closes every fd of this process except `keep` and 0-2: a child that becomes
// another user must not hold what its privileged parent holds (a socket to a
// daemon, anything inherited before the jail).
void close_fds_except(std::vector<int> keep);

class Config;

// For a process that holds credentials or many users' mail (tern-authd, its auth
// worker, tern-mra's session workers): PR_SET_DUMPABLE 0 (no core, no ptrace or
// /proc/PID/mem by a process of the same uid, such as a compromised sibling worker)
// and RLIMIT_CORE 0, soft and hard, as Dovecot does unless started with -D. With
// `allow` only PR_SET_DUMPABLE 1 is set, for debugging a crash (the
// core then holds passwords or mail). Call after the last uid change and after exec:
// both reset the flag. `allow` is process_core_dumps.
Status restrict_core_dumps(bool allow);

// The ids a process may switch to for a mail user: first_valid_uid..last_valid_uid
// and first_valid_gid..last_valid_gid (Dovecot's names and meaning; a last of 0 is no
// limit). uid 0 and gid 0 are refused whatever the ranges say: a userdb answer
// (a typo in ternctl user --gid, a passwd entry in group root) must never give a mail
// process root's files.
struct ValidIds {
  uint64_t first_uid = 500, last_uid = 0;
  uint64_t first_gid = 1, last_gid = 0;
  static ValidIds from_config(const Config& cfg);
  // "" when both are allowed, else why not ("gid 0 is root's group", "uid 10 is
  // outside first_valid_uid..last_valid_uid (500..)"), for a log line.
  std::string refuse(uint64_t uid, uint64_t gid) const;
};

}  // namespace tern::common
