// Users, groups and dropping privilege.
//
// drop_privileges() is the one place a Tern process gives up root: setgroups to the
// user's primary group only, setgid, setuid, and then it checks that the change took
// and that root cannot be regained (Dovecot restrict-access, OpenSMTPD). A process
// that finds itself still root afterwards exits.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"

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

}  // namespace tern::common
