#include "common/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "common/text.h"

namespace tern::common::net {

Result<UniqueFd> bind_inet(const std::string& address, uint16_t port, int backlog) {
  bool v6 = address.find(':') != std::string::npos;
  std::string where = (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
  sockaddr_storage ss{};
  socklen_t len;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (::inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) {
      return make_error(ErrorKind::kConfig, "bind " + where + ": not a numeric IPv6 address");
    }
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (::inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) {
      return make_error(ErrorKind::kConfig, "bind " + where + ": not a numeric IPv4 address");
    }
    len = sizeof *a;
  }
  UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return errno_error("socket for " + where, errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (v6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0) {
    const int err = errno;  // building the message may change errno
    Error e = errno_error("bind " + where, err);
    if (err == EADDRINUSE) e.kind = ErrorKind::kInUse;
    return e;
  }
  if (::listen(fd.get(), backlog) < 0) return errno_error("listen " + where, errno);
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

Result<UniqueFd> bind_unix(const std::string& path, mode_t mode, uid_t uid, gid_t gid, int backlog) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    return make_error(ErrorKind::kConfig, "bind " + path + ": path longer than " +
                                              std::to_string(sizeof sa.sun_path - 1) + " bytes");
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return make_error(ErrorKind::kExists, "bind " + path + ": a file that is not a socket is in the way");
    }
    // A socket left behind by an earlier run; if something still listens there,
    // connect succeeds and we refuse rather than steal it.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      return make_error(ErrorKind::kInUse, "bind " + path + ": another process is listening there");
    }
    ::unlink(path.c_str());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return errno_error("socket for " + path, errno);
  // The socket is created with `mode` (under the complementary umask) and handed to
  // its owner with lchown: nothing here follows a name that could have become a
  // symbolic link since the bind. The directory is the caller's to check
  // (bind_listeners: a trusted one when root).
  mode_t old = ::umask(static_cast<mode_t>(~mode & 0777));
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  int err = errno;
  ::umask(old);
  if (rc < 0) return errno_error("bind " + path, err);
  if ((uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) && ::lchown(path.c_str(), uid, gid) < 0) {
    return errno_error("chown " + path, errno);
  }
  if (::listen(fd.get(), backlog) < 0) return errno_error("listen " + path, errno);
  return fd;
}

Result<UniqueFd> connect_unix(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) return make_error(ErrorKind::kConfig, "connect " + path + ": path too long");
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) return errno_error("connect " + path, errno);
  return fd;
}

Result<std::vector<std::string>> listen_addresses(const std::vector<std::string>& items,
                                                  const std::vector<std::string>& inet_protocols) {
  bool v4 = false, v6 = false;
  for (const std::string& p : inet_protocols) {
    if (iequals(p, "all")) v4 = v6 = true;
    else if (iequals(p, "ipv4")) v4 = true;
    else if (iequals(p, "ipv6")) v6 = true;
    else return make_error(ErrorKind::kConfig, "inet_protocols: unknown protocol '" + log_escape(p, 32) + "'");
  }
  if (inet_protocols.empty()) v4 = true;
  std::vector<std::string> out;
  auto add = [&](const std::string& a) {
    for (const auto& x : out) {
      if (x == a) return;
    }
    out.push_back(a);
  };
  for (std::string item : items) {
    if (item.size() >= 2 && item.front() == '[' && item.back() == ']') item = item.substr(1, item.size() - 2);
    if (iequals(item, "all") || item == "*") {
      if (v4) add("0.0.0.0");
      if (v6) add("::");
    } else if (item == "::") {
      if (v6) add("::");
    } else if (iequals(item, "loopback-only") || iequals(item, "localhost")) {
      if (v4) add("127.0.0.1");
      if (v6) add("::1");
    } else {
      in6_addr a6;
      in_addr a4;
      if (::inet_pton(AF_INET, item.c_str(), &a4) == 1) {
        add(item);
      } else if (::inet_pton(AF_INET6, item.c_str(), &a6) == 1) {
        add(item);
      } else {
        return make_error(ErrorKind::kConfig, "'" + log_escape(item, 64) +
                                                  "' is not an IP address, all, * or loopback-only");
      }
    }
  }
  return out;
}

Status send_fd(int sock, int fd, std::string_view payload) {
  if (payload.empty()) payload = std::string_view("\0", 1);
  msghdr msg{};
  iovec iov{const_cast<char*>(payload.data()), payload.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error("sendmsg", errno);
  if (static_cast<size_t>(n) != payload.size()) return make_error(ErrorKind::kTemp, "sendmsg: short write");
  return {};
}

Result<std::pair<std::string, UniqueFd>> recv_fd(int sock, size_t max_payload) {
  std::string buf(max_payload, '\0');
  msghdr msg{};
  iovec iov{buf.data(), buf.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 4)] = {};
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error("recvmsg", errno);
  if (n == 0) return make_error(ErrorKind::kProtocol, "recvmsg: peer closed");
  buf.resize(static_cast<size_t>(n));
  UniqueFd got;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (!got) got.reset(fd); else ::close(fd);  // more fds than promised: close extras
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return make_error(ErrorKind::kProtocol, "recvmsg: control data truncated");
  return std::make_pair(std::move(buf), std::move(got));
}

namespace {
constexpr uint64_t kAcceptBackoffMs = 100;  // how long a listener rests when out of fds
}  // namespace

Listener::Listener(ev::Loop& loop, UniqueFd fd, std::string name)
    : fd_(std::move(fd)), name_(std::move(name)), loop_(loop) {
  spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  int fl = ::fcntl(fd_.get(), F_GETFL);
  ::fcntl(fd_.get(), F_SETFL, fl | O_NONBLOCK);
  watch_ = std::make_unique<ev::FdWatch>(loop, fd_.get());
  backoff_ = std::make_unique<ev::Timer>(loop);
}

Listener::~Listener() {
  backoff_.reset();
  watch_.reset();
}

void Listener::start(OnAccept cb) {
  cb_ = std::move(cb);
  paused_ = false;
  if (!backing_off_) watch_->start(UV_READABLE, [this](int, int) { on_readable(); });
}

void Listener::on_readable() {
  // Accept a bounded batch per wakeup so one busy port cannot starve the others.
  for (int i = 0; i < 64 && !paused_ && !backing_off_; ++i) {
    int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      // The connection died before we took it, or (Linux accept(2)) a network error
      // already pending on it: only that connection is lost.
      if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN || err == ENOPROTOOPT ||
          err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH) {
        continue;
      }
      if (err == EMFILE || err == ENFILE) {
        const int r = refuse_one(err);
        if (r > 0) continue;
        if (r == 0) return;  // nothing left to refuse
      }
      log::warning("accept on %s: %s -- pausing %llu ms", name_.c_str(), std::strerror(err),
                   static_cast<unsigned long long>(kAcceptBackoffMs));
      backing_off_ = true;
      watch_->stop();
      backoff_->start(kAcceptBackoffMs, [this] {
        backing_off_ = false;
        if (!paused_ && cb_) start(cb_);
      });
      return;
    }
    cb_(UniqueFd(c));
  }
}

int Listener::refuse_one(int err) {
  if (!spare_) spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!spare_) return -1;
  spare_.reset();
  int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  const int accept_err = errno;
  if (c >= 0) {
    // The socket's send buffer is empty, so a line this short goes in whole or not
    // at all; the client has sent nothing we would leave unread (no RST).
    if (!refusal_.empty()) (void)!::send(c, refusal_.data(), refusal_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::close(c);
    ++refused_;
    ++refused_since_log_;
  }
  spare_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  // One line a second at most: a flood must not become a flood of log lines.
  const uint64_t now = loop_.now_ms();
  if (refused_since_log_ > 0 && (last_refusal_log_ms_ == 0 || now - last_refusal_log_ms_ >= 1000)) {
    log::warning("accept on %s: %s -- refused %llu connection(s)", name_.c_str(), std::strerror(err),
                 static_cast<unsigned long long>(refused_since_log_));
    last_refusal_log_ms_ = now;
    refused_since_log_ = 0;
  }
  if (c < 0) return accept_err == EAGAIN || accept_err == EWOULDBLOCK ? 0 : -1;
  return spare_ ? 1 : -1;
}

void Listener::pause() {
  paused_ = true;
  watch_->stop();
}

void Listener::resume() {
  if (!paused_ || !cb_) return;
  start(cb_);
}

std::vector<InheritedFd> take_listen_fds() {
  std::vector<InheritedFd> out;
  const char* pid_s = std::getenv("LISTEN_PID");
  const char* fds_s = std::getenv("LISTEN_FDS");
  const char* names_s = std::getenv("LISTEN_FDNAMES");
  if (!fds_s) return out;
  std::string names = names_s ? names_s : "";
  bool ours = !pid_s || parse_u64(pid_s).value_or(0) == static_cast<uint64_t>(::getpid());
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!ours) return out;
  std::optional<uint64_t> n = parse_u64(fds_s);
  if (!n || *n > 1024) return out;
  std::vector<std::string> parts = split(names, ':');
  for (uint64_t i = 0; i < *n; ++i) {
    int fd = 3 + static_cast<int>(i);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    std::string name = i < parts.size() && !parts[i].empty() ? parts[i] : "unknown";
    out.push_back({name, fd});
  }
  return out;
}

int find_listen_fd(const std::vector<InheritedFd>& fds, const std::string& name) {
  for (const auto& f : fds) {
    if (f.name == name) return f.fd;
  }
  return -1;
}

std::string packet_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\t') out += "\\t";
    else if (c == '\n') out += "\\n";
    else if (c == '\0') out += "\\0";
    else out += c;
  }
  return out;
}

std::optional<std::string> packet_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\0') return std::nullopt;  // packet_escape() never leaves these raw
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) return std::nullopt;
    switch (s[i]) {
      case '\\': out += '\\'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case '0': out += '\0'; break;
      default: return std::nullopt;  // not what packet_escape() writes: a broken peer
    }
  }
  return out;
}

std::string encode_packet(std::string_view verb, const std::vector<std::pair<std::string, std::string>>& kv) {
  std::string out(verb);
  for (const auto& [k, v] : kv) out += "\t" + k + "=" + packet_escape(v);
  return out;
}

std::optional<PacketFields> parse_packet(std::string_view packet, std::string_view verb) {
  std::vector<std::string> parts = split(packet, '\t');
  if (parts.empty() || parts[0] != verb) return std::nullopt;
  PacketFields f;
  for (size_t i = 1; i < parts.size(); ++i) {
    size_t eq = parts[i].find('=');
    if (eq == std::string::npos || eq == 0) return std::nullopt;
    std::optional<std::string> v = packet_unescape(std::string_view(parts[i]).substr(eq + 1));
    if (!v) return std::nullopt;
    // A second value for a key is no packet encode_packet() writes; taking either
    // one would let the two ends of a helper protocol read different requests.
    if (!f.emplace(parts[i].substr(0, eq), std::move(*v)).second) return std::nullopt;
  }
  return f;
}

}  // namespace tern::common::net
