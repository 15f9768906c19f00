// Fault points for the crash tests: named places in a daemon's commit path (between
// a Maildir rename and the index commit, between an LMTP reply and the queue's
// record of it) where a test can stop the process dead, so it can kill it there,
// together with its peer, at exactly that moment.
//
// Compiled in only with the CMake option TERN_FAULT_INJECTION (scripts/setup turns it
// on for the build the tests run; a package or `cmake --install` build leaves it
// out, and then point() returns at once). Even when compiled in, a point
// does nothing unless the environment names a directory in TERN_FAULT_DIR (the
// master passes it on to the daemons). A point fires when a file of its name exists
// there: the first process to reach it removes the file (so each armed point fires
// once, across restarts), writes "<name>.<pid>" beside it, and stops itself with
// SIGSTOP. The test waits for that file, then kills what it wants with SIGKILL.
// With TERN_FAULT_ACTION=exec in the environment, a process reaching an armed
// point instead tries to execve /bin/true, as an attacker's code would (the
// seccomp tests: the filter must kill it with SIGSYS); the file stays until the
// test removes it.
//
// Not for production use, not an API: names are whatever the crash tests arm.
#pragma once

namespace tern::common::fault {

void point(const char* name);

}  // namespace tern::common::fault
