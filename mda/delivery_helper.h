// The privileged delivery helper of tern-mda: delivers to system users, whose mail
// must be written by a process running as that user.
//
// tern-mda parses LMTP and runs as mail_uid; it cannot become another user, and must
// not be able to. When tern-master starts it as root, its pre_jail hook forks this
// helper before dropping privilege. The helper keeps root, never touches the network
// and never parses LMTP; it reads requests from tern-mda over a private
// SOCK_SEQPACKET socketpair, one packet per request with the spooled message as a
// passed file descriptor, and for each one:
//   - looks the recipient up in tern-authd's userdb itself (it does not take the
//     uid, home or mail location from tern-mda, so a compromised tern-mda can only
//     deliver a message to a user's real mailbox, which LMTP lets anyone do);
//   - refuses uid 0, gid 0, and ids outside first_valid_uid..last_valid_uid and
//     first_valid_gid..last_valid_gid (common::ValidIds);
//   - forks a child that closes every fd but the message, its reply pipe and the
//     log (never the socket to tern-mda: the child runs as a user), drops to the
//     user's uid and gid for good (setgroups, setresgid, setresuid, verified) and
//     runs the ordinary delivery code as the user, returning the outcome through a
//     pipe. With mail_privileged_group set (Debian: mail, for
//     mbox:~/mail:INBOX=/var/mail/%u), that group is kept only as the child's saved
//     set-group-ID, only when the location writes outside the user's home, and
//     made effective only to create the user's spool file and its dotlock
//     (common/mbox.h); mail_access_groups are kept as supplementary groups.
//   - kills the child after local_time_limit (a lock never released, a home on a
//     hung NFS server) and answers 451 4.3.0 for that recipient.
// Requests are handled one at a time, so the time limit is what keeps one stuck
// delivery from holding up every other system user's. The helper exits when
// tern-mda goes away.
//
// The wire format is defined here, once, for both sides:
//   request  "DELIVER" TAB key=value ... (user sender return_path recipient folder
//            received arrival), values escaped (\t \n \\), plus one fd: the message
//   reply    "DONE" TAB code=... enhanced=... text=... log=... mailbox=... uid=...
// at most kMaxPacket bytes; anything malformed ends the helper (a bug or a
// compromise, never a normal event).
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>

#include "common/config.h"
#include "common/result.h"
#include "common/sockets.h"
#include "common/unique_fd.h"
#include "mda/delivery.h"
#include "mda/lmtp_session.h"

namespace tern::mda {

inline constexpr size_t kMaxHelperPacket = 65536;

inline std::string helper_escape(std::string_view s) { return common::net::packet_escape(s); }
inline std::optional<std::string> helper_unescape(std::string_view s) { return common::net::packet_unescape(s); }

// The reply packet, both ways (exposed for the unit tests and the fuzz target). The
// helper decodes what its per-delivery child (running as the user) wrote, and
// tern-mda what the helper sent on: decode_helper_outcome() turns anything the
// encoder could not have written into a 451 4.3.0 outcome, never into reply text
// of the sender's choosing.
std::string encode_helper_outcome(const Outcome& o);
Outcome decode_helper_outcome(std::string_view packet);

class DeliveryHelper {
 public:
  // Forks the helper (the caller is root). `close_fds` are closed in the helper
  // (the listening sockets). Returns the client side for tern-mda.
  static common::Result<std::unique_ptr<DeliveryHelper>> start(const common::Config& cfg,
                                                                const std::vector<int>& close_fds);
  ~DeliveryHelper();

  // Blocking; thread-safe (one request at a time). Used from the threadpool.
  Outcome deliver(const DeliveryJob& job, const MessageSpool& body);

 private:
  DeliveryHelper(common::UniqueFd sock, pid_t pid) : sock_(std::move(sock)), pid_(pid) {}
  std::mutex mu_;
  common::UniqueFd sock_;
  pid_t pid_;
};

}  // namespace tern::mda
