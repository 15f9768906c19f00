// The control protocol between ternctl and tern-master, over $base_dir/master.
//
// One request line, answered by zero or more lines and a last line that is either
// "." (success) or "error: <text>". Only root and the user the master runs as may
// connect (SO_PEERCRED). Both sides include this header; nothing else speaks it.
//
//   status   one line per daemon: "<name> pid=<pid> uptime=<s> restarts=<n>
//            state=<running|waiting|stopping|stopped> last_exit=<text>"
//   reload   re-read the configuration and restart the daemons on it (as SIGHUP)
//   stop     stop every daemon and the master (as SIGTERM)
#pragma once

namespace tern::master {

inline constexpr int kControlVersion = 1;
inline constexpr const char* kControlSocketName = "master";
inline constexpr const char* kPidFileName = "master.pid";
// Requests are short words; anything longer is not a request.
inline constexpr unsigned kMaxControlLine = 256;

}  // namespace tern::master
