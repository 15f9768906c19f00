// Deliveries that aliases(5) name instead of a mailbox: "|command" (the message on
// the command's standard input, as Postfix local(8) pipes it) and "/file" (appended
// in mbox format under an exclusive lock, cut back on failure).
//
// Runs on the threadpool (fork, exec, wait and fsync block). Line endings become
// LF for the command and the file, as Postfix's local delivery writes them.
//
// PRIVILEGE: Postfix runs these as the owner of the alias table, or as default_privs
// when root owns it. tern-mta has given up root before it reads mail, so it runs
// them as its own user (mail_owner); an alias table owned by another non-root user
// is refused (the command would otherwise run with rights its owner never had).
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
  std::string queue_id;
  std::string body;        // the message (CRLF)
  unsigned time_limit_s = 1000;  // command_time_limit (Postfix)
};

struct LocalOutcome {
  char status = 'd';       // 's' sent, 'd' deferred, 'b' bounced
  std::string dsn;         // "2.0.0"
  std::string text;        // "delivered to command: ...", "Command died with status 1: ..."
};

// Blocking; call from the threadpool.
LocalOutcome deliver_local(const LocalJob& job);

// Postfix's treatment of a command's exit status (sys_exits.c): sysexits that mean
// "try again" defer, the rest bounce.
LocalOutcome command_exit_outcome(int status, const std::string& output);

}  // namespace tern::mta
