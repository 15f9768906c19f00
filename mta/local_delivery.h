// Deliveries that aliases(5) name instead of a mailbox: "|command" (the message on
// the command's standard input, as Postfix local(8) pipes it) and "/file" (appended
// in mbox format under an exclusive lock, cut back on failure).
//
// Runs on the threadpool (fork, exec, wait and fsync block). Line endings become
// LF for the command and the file, as Postfix's local delivery writes them.
//
// PRIVILEGE: Postfix local(8) runs these as the owner of the alias table the entry
// came from, or as default_privs when root owns it (local(8) SECURITY, aliases(5)).
// tern-mta cannot change its uid, so when it was started as root the work goes to
// its local helper (local_helper.h), which re-checks the entry and runs
// run_local() in a process of that user. Started unprivileged (the development
// default), tern-mta runs deliver_local() itself, as its own user; an alias table
// owned by another non-root user is refused then (the command would otherwise run
// with rights its owner never had).
#pragma once

#include <sys/types.h>

#include <string>

#include "common/unique_fd.h"

namespace tern::mta {

struct LocalJob {
  enum class Kind { kCommand, kFile } kind = Kind::kCommand;
  std::string target;      // command line or absolute file path
  uid_t owner = static_cast<uid_t>(-1);
  std::string sender;      // "" for <>
  std::string recipient;   // the original recipient (environment RECIPIENT)
  std::string delimiters = "+";  // recipient_delimiter, for EXTENSION
  // The user the delivery runs as (LOGNAME, USER, HOME, SHELL in the command's
  // environment, as Postfix local(8) sets them); the working directory is HOME
  // when it can be entered, else /.
  std::string user, home, shell;
  std::string queue_id;
  std::string body;        // the message (CRLF)
  unsigned time_limit_s = 1000;  // command_time_limit (Postfix)
};

struct LocalOutcome {
  char status = 'd';       // 's' sent, 'd' deferred, 'b' bounced
  std::string dsn;         // "2.0.0"
  std::string text;        // "delivered to command: ...", "Command died with status 1: ..."
};
LocalOutcome local_outcome(char status, const char* dsn, std::string text);

// Blocking; call from the threadpool. Refuses an owner that is neither root nor
// this process's uid (see PRIVILEGE), then run_local().
LocalOutcome deliver_local(const LocalJob& job);
// The delivery itself, as the current user: no owner check (the local helper has
// already become the owner).
LocalOutcome run_local(const LocalJob& job);

// Postfix's treatment of a command's exit status (sys_exits.c): sysexits that mean
// "try again" defer, the rest bounce.
LocalOutcome command_exit_outcome(int status, const std::string& output);

}  // namespace tern::mta
