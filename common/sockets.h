// Socket helpers: binding TCP and UNIX listeners with errors a person can act on,
// accepting on the event loop, passing fds, and the LISTEN_FDS convention that lets
// tern-master (or systemd socket activation) hand listeners to a daemon.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/loop.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common::net {

// Binds and listens on address:port ("0.0.0.0", "::", "127.0.0.1"). Errors read
// "bind 127.0.0.1:25: Address already in use".
Result<UniqueFd> bind_inet(const std::string& address, uint16_t port, int backlog = 511);
// The port a bound socket got (for port 0 in tests).
uint16_t local_port(int fd);

// Binds a UNIX stream socket at path (a stale socket file is replaced; any other
// file there is an error), sets its mode, and its owner when uid/gid are not -1.
Result<UniqueFd> bind_unix(const std::string& path, mode_t mode, uid_t uid = static_cast<uid_t>(-1),
                           gid_t gid = static_cast<gid_t>(-1), int backlog = 511);
// A blocking connect, for command-line tools.
Result<UniqueFd> connect_unix(const std::string& path);

// Expands Postfix's inet_interfaces / Dovecot's listen into numeric addresses:
// "all" and "*" are 0.0.0.0 (and "::" when IPv6 is on), "loopback-only" and
// "localhost" are 127.0.0.1 (and ::1), brackets around IPv6 are removed.
Result<std::vector<std::string>> listen_addresses(const std::vector<std::string>& items,
                                                  const std::vector<std::string>& inet_protocols);

// One fd over a UNIX socket with SCM_RIGHTS, with a payload of at least one byte.
Status send_fd(int sock, int fd, std::string_view payload);
// Receives a payload and at most one fd (returned invalid when none was sent).
Result<std::pair<std::string, UniqueFd>> recv_fd(int sock, size_t max_payload);

// The packets between a daemon and its privileged helper (tern-mda's delivery
// helper, tern-mta's local helper): VERB TAB key=value TAB ..., values escaped
// (\t \n \0 \\) so a packet is one record whatever the values hold.
using PacketFields = std::map<std::string, std::string>;
std::string packet_escape(std::string_view s);
// nullopt for anything packet_escape() never writes: a trailing or unknown '\\', or
// a raw LF or NUL.
std::optional<std::string> packet_unescape(std::string_view s);
std::string encode_packet(std::string_view verb, const std::vector<std::pair<std::string, std::string>>& kv);
// nullopt unless it is `verb` followed by key=value fields, each key non-empty and
// given once: only what encode_packet() can write (a peer that sends anything else
// is broken or compromised).
std::optional<PacketFields> parse_packet(std::string_view packet, std::string_view verb);

// Accepts connections on a listening socket from the event loop.
//
// Out of file descriptors (EMFILE, ENFILE) the pending connection stays readable and
// accept() would fail at once again: a loop that only retried would spin. The
// listener keeps one spare descriptor (/dev/null) for that moment: it closes the
// spare, accepts the connection, writes the refusal (set_refusal: "421 ...",
// "* BYE ...", best effort, never blocking), closes it and takes the spare again
// (libev's and nginx's trick). Only when even that fails does it pause for a moment.
class Listener {
 public:
  using OnAccept = std::function<void(UniqueFd fd)>;
  Listener(ev::Loop& loop, UniqueFd fd, std::string name);
  ~Listener();
  void start(OnAccept cb);
  // The line a connection refused for want of descriptors gets before the close,
  // CRLF included; empty (the default) closes without a word (implicit TLS ports).
  void set_refusal(std::string text) { refusal_ = std::move(text); }
  // Connections refused so far for want of descriptors.
  uint64_t refused() const { return refused_; }
  // Stops accepting (connections queue in the kernel backlog) and resumes.
  void pause();
  void resume();
  int fd() const { return fd_.get(); }
  const std::string& name() const { return name_; }

 private:
  void on_readable();
  // Accepts and refuses one connection with the spare descriptor: 1 done, 0 no
  // connection was waiting, -1 not possible either (then the listener backs off).
  int refuse_one(int err);
  UniqueFd fd_;
  std::string name_;
  std::unique_ptr<ev::FdWatch> watch_;
  UniqueFd spare_;  // /dev/null, given up for a moment when out of descriptors
  std::string refusal_;
  uint64_t refused_ = 0;
  uint64_t last_refusal_log_ms_ = 0;
  uint64_t refused_since_log_ = 0;
  ev::Loop& loop_;
  // When even the spare descriptor cannot be had: stop watching for a moment
  // instead of spinning on accept().
  std::unique_ptr<ev::Timer> backoff_;
  OnAccept cb_;
  bool paused_ = false;
  bool backing_off_ = false;
};

// A listening socket received from the parent.
struct InheritedFd {
  std::string name;  // from LISTEN_FDNAMES, e.g. "smtp", "auth-client"
  int fd;
};
// Reads LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES (fds start at 3), marks the fds
// close-on-exec and unsets the variables, as sd_listen_fds(1) does. An empty result
// when the variables are absent or meant for another pid.
std::vector<InheritedFd> take_listen_fds();
// The inherited fd with this name, or -1.
int find_listen_fd(const std::vector<InheritedFd>& fds, const std::string& name);

}  // namespace tern::common::net
