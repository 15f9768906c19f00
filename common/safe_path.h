// Path operations of a root process in a tree that less privileged users may write.
//
// tern-master (and a daemon started alone, before its privilege drop) creates the
// runtime, queue and state directories and hands them to their users. Some of them
// sit inside directories those users own (maildrop_directory inside the queue, which
// mail_owner owns), so a name-based lstat()/chown()/chmod() sequence can be raced:
// the owner swaps the entry for a symbolic link between the calls and root changes
// the mode of /etc/passwd. Here every step goes through a file descriptor: the path
// is walked from "/" one component at a time with openat(O_NOFOLLOW | O_DIRECTORY),
// missing components are made with mkdirat(), and the final directory is changed
// with fstat()/fchown()/fchmod() on the descriptor that was checked, so what is
// changed is the directory that was looked at, never what a name points to later.
//
// As root, a walk also refuses a path an unprivileged user could redirect:
//   - a parent directory writable by group or others (unless sticky, as /tmp) or
//     owned by anyone but root, except the target's own owner (the queue directory
//     may be mail_owner's; then only mail_owner's own trees lie below it);
//   - a symbolic link, unless root owns it and it lies in a trusted directory (Debian's
//     /var/run -> /run): such a link cannot be changed by anyone else, and its
//     target is walked with the same checks;
//   - under a parent owned by the target's owner, an existing directory owned by
//     anyone but that owner or root (root would hand over a third user's files).
// This is what Postfix's postfix-script "check" and Dovecot's restrict-access insist
// on, done at the system-call level. Unprivileged (the development default), the
// walk still goes through descriptors but checks no owners: there is no privilege
// to lose.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common {

// Who a directory is meant for: its owner and group, or (for a parent) who else
// besides root may own the parents on the way.
struct DirOwner {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Creates `path` (and missing parents, 0755, owned by the caller) and gives the
// last component `owner` and exactly `mode`, all through descriptors as described
// above. Errors name the path, the component and why. Returns the directory's fd.
Result<UniqueFd> make_directory_safely(const std::string& path, const DirOwner& owner, mode_t mode);

// Opens the directory `path` for *at() calls, with the same walk and checks; it must
// exist. `owner` is who may own the parents besides root (uid 0: nobody else).
Result<UniqueFd> open_directory_safely(const std::string& path, const DirOwner& owner);

// Whether a root process may create files in `dir_fd` (a directory it walked to):
// nobody else can write there. A socket or pid file is only placed in such a one.
Status check_trusted_directory(int dir_fd, const std::string& path);

}  // namespace tern::common
