// The last step of a network-facing process's start: no new privileges, and a
// seccomp filter that allows only the system calls that process uses.
//
// The uid separation (DESIGN.md) already decides what a compromised process may
// touch; the filter decides what it may *do*: a tern-mra login process that an
// attacker controls cannot exec a shell, open a socket to the network, ptrace a
// neighbour or reach the kernel's rarer interfaces (bpf, io_uring, user namespaces,
// keyrings, module loading), whatever files its uid could reach.
//
// Profiles, one per kind of process (a call outside the profile kills the process
// with SIGSYS; the master logs "killed by signal 31" and restarts it):
//   kLogin   tern-mra's login process: I/O on the sockets it has, unix sockets to
//            tern-authd and the post-login process (AF_UNIX only), reading files.
//   kWorker  tern-mra --worker: the login set, plus the Maildir/mbox/index file
//            operations (create, rename, link, unlink, fsync, flock, inotify).
//   kMta     tern-mta: the worker set, plus AF_INET/AF_INET6 sockets, connect and
//            bind (outbound SMTP, DNS), memfds for the local helper's jobs.
// None of them may execve, fork a process (threads only), ptrace, mount, chroot,
// change its uid or gid, load a filter of its own or unshare.
//
// Key `seccomp_filter` (general): yes (default), log (the kernel logs a call outside
// the profile and lets it run: for finding what a new platform needs) or no. The
// measured cost is in DESIGN.md's notes (bench/).
//
// Call after the privilege drop and after everything the process opens at start.
// ASan builds (TERN_SANITIZE; __SANITIZE_ADDRESS__) also allow what ASan's report needs (it forks
// llvm-symbolizer; LeakSanitizer ptraces): fork, execve and ptrace are then allowed.
#pragma once

#include <string>

#include "common/config.h"
#include "common/result.h"

namespace tern::common::sandbox {

enum class Profile { kLogin, kWorker, kMta };

const char* profile_name(Profile p);

// PR_SET_NO_NEW_PRIVS, then the profile's filter (unless seccomp_filter = no).
// Logs "sandbox: <profile> filter, N system calls" at debug level.
Status enter(const Config& cfg, Profile p);

}  // namespace tern::common::sandbox
