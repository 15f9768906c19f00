#include "common/connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace tern::common::net {
namespace {

void set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

std::string sockaddr_ip(const sockaddr_storage& ss, uint16_t* port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    // Show IPv4-mapped addresses as plain IPv4, as Postfix does.
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      ::inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], buf, sizeof buf);
    } else {
      ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    }
    *port = ntohs(a->sin6_port);
  }
  return buf;
}

}  // namespace

const char* close_reason_name(CloseReason r) {
  switch (r) {
    case CloseReason::kLocal: return "closed";
    case CloseReason::kPeerClosed: return "disconnected";
    case CloseReason::kError: return "error";
    case CloseReason::kIdleTimeout: return "timeout";
    case CloseReason::kAbsoluteTimeout: return "session time limit";
  }
  return "closed";
}

PeerInfo peer_info(int fd) {
  PeerInfo p;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_UNIX) {
      p.is_unix = true;
    } else {
      p.local_address = sockaddr_ip(ss, &p.local_port);
    }
  }
  if (p.is_unix) {
    ucred cred{};
    socklen_t clen = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
      p.has_creds = true;
      p.pid = cred.pid;
      p.uid = cred.uid;
      p.gid = cred.gid;
    }
  } else {
    len = sizeof ss;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) p.address = sockaddr_ip(ss, &p.port);
  }
  return p;
}

std::shared_ptr<Connection> Connection::adopt(ev::Loop& loop, UniqueFd fd, Options options) {
  return std::shared_ptr<Connection>(new Connection(loop, std::move(fd), options));
}

Connection::Connection(ev::Loop& loop, UniqueFd fd, Options options)
    : loop_(loop), fd_(fd.release()), opt_(options) {
  set_nonblocking(fd_);
  peer_ = peer_info(fd_);
  if (!peer_.is_unix) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  poll_ = new uv_poll_t;
  if (int rc = uv_poll_init_socket(loop_.get(), poll_, fd_); rc != 0) {
    log::panic("uv_poll_init_socket(%d): %s", fd_, uv_strerror(rc));
  }
  poll_->data = this;
  idle_timer_ = std::make_unique<ev::Timer>(loop_);
  abs_timer_ = std::make_unique<ev::Timer>(loop_);
  aux_timer_ = std::make_unique<ev::Timer>(loop_);
}

Connection::~Connection() {
  if (poll_) {
    // Destroyed without finish(): close quietly.
    poll_->data = reinterpret_cast<void*>(static_cast<intptr_t>(fd_));
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) {
      ::close(static_cast<int>(reinterpret_cast<intptr_t>(h->data)));
      delete reinterpret_cast<uv_poll_t*>(h);
    });
    poll_ = nullptr;
  }
}

void Connection::start(Callbacks callbacks) {
  cb_ = std::move(callbacks);
  started_ = true;
  idle_timer_->start(opt_.idle_timeout_ms ? opt_.idle_timeout_ms : UINT64_MAX / 2, [this] { on_idle(); });
  if (!opt_.idle_timeout_ms) idle_timer_->stop();
  arm_absolute();
  update_poll();
}

void Connection::update_poll() {
  if (!poll_) return;
  int want = 0;
  if (state_ == State::kOpen && started_ && !user_paused_ && !bp_paused_) want |= UV_READABLE;
  if (out_off_ < out_.size()) want |= UV_WRITABLE;
  if (want == poll_events_) return;
  poll_events_ = want;
  if (want == 0) {
    uv_poll_stop(poll_);
    return;
  }
  uv_poll_start(poll_, want, [](uv_poll_t* p, int status, int events) {
    auto* self = static_cast<Connection*>(p->data);
    if (self) self->on_poll(status, events);
  });
}

void Connection::on_poll(int status, int events) {
  auto self = shared_from_this();  // callbacks may drop the last reference
  if (status < 0) {
    // EPOLLERR/HUP: let read/write find the exact error.
    events = UV_READABLE | UV_WRITABLE;
  }
  if ((events & UV_WRITABLE) && state_ != State::kClosed) do_write();
  if ((events & UV_READABLE) && state_ == State::kOpen) do_read();
  if (state_ != State::kClosed) update_poll();
}

void Connection::do_read() {
  if (read_buf_.size() != opt_.read_chunk) read_buf_.resize(opt_.read_chunk);
  // A few reads per wakeup, then let other connections run.
  for (int round = 0; round < 4; ++round) {
    if (state_ != State::kOpen || user_paused_ || bp_paused_) return;
    ssize_t n = ::read(fd_, read_buf_.data(), read_buf_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      finish(CloseReason::kError, std::string("read: ") + std::strerror(errno));
      return;
    }
    if (n == 0) {
      finish(CloseReason::kPeerClosed, "");
      return;
    }
    bytes_in_ += static_cast<uint64_t>(n);
    touch();
    std::string_view data(read_buf_.data(), static_cast<size_t>(n));
    if (filter_) {
      std::string plain, net;
      Status s = filter_->feed(data, plain, net);
      if (!net.empty()) queue_net(net);
      if (!s) {
        do_write();  // send the alert if we can
        finish(CloseReason::kError, s.error().message);
        return;
      }
      if (filter_->handshake_done() && !handshake_reported_) {
        handshake_reported_ = true;
        flush_pending_plain();
        if (cb_.on_tls_ready) cb_.on_tls_ready();
        if (state_ != State::kOpen) return;
      }
      if (!plain.empty() && cb_.on_data) cb_.on_data(plain);
      if (state_ == State::kOpen && filter_ && filter_->peer_closed()) {
        finish(CloseReason::kPeerClosed, "");
        return;
      }
    } else if (cb_.on_data) {
      cb_.on_data(data);
    }
  }
}

void Connection::do_write() {
  size_t before = pending_output();
  while (out_off_ < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      finish(CloseReason::kError, std::string("write: ") + std::strerror(errno));
      return;
    }
    out_off_ += static_cast<size_t>(n);
    bytes_out_ += static_cast<uint64_t>(n);
    touch();
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1u << 20) && out_off_ * 2 > out_.size()) {
    out_.erase(0, out_off_);
    out_off_ = 0;
  }
  size_t after = pending_output();
  if (bp_paused_ && after <= opt_.low_water) bp_paused_ = false;
  if (state_ == State::kClosing) {
    maybe_finish_close();
    return;
  }
  if (before > opt_.low_water && after <= opt_.low_water && cb_.on_drain && state_ == State::kOpen) cb_.on_drain();
}

void Connection::queue_net(std::string_view bytes) {
  if (bytes.empty() || state_ == State::kClosed) return;
  bool was_empty = out_off_ == out_.size();
  out_.append(bytes.data(), bytes.size());
  if (pending_output() > opt_.high_water) bp_paused_ = true;
  // Optimistic write when nothing was queued: most replies go out without a poll.
  if (was_empty) {
    while (out_off_ < out_.size()) {
      ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        break;  // EAGAIN, or an error that the writable poll will report
      }
      out_off_ += static_cast<size_t>(n);
      bytes_out_ += static_cast<uint64_t>(n);
      touch();
    }
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
    }
    if (bp_paused_ && pending_output() <= opt_.low_water) bp_paused_ = false;
  }
  update_poll();
}

void Connection::write(std::string_view data) {
  if (state_ != State::kOpen || data.empty()) return;
  if (filter_) {
    if (!filter_->handshake_done()) {
      pending_plain_.append(data.data(), data.size());
      if (pending_output() > opt_.high_water) {
        bp_paused_ = true;
        update_poll();
      }
      return;
    }
    std::string net;
    if (Status s = filter_->encrypt(data, net); !s) {
      log::warning("TLS write failed: %s", s.error().message.c_str());
      abort();
      return;
    }
    queue_net(net);
    return;
  }
  queue_net(data);
}

void Connection::flush_pending_plain() {
  if (pending_plain_.empty() || !filter_) return;
  std::string plain;
  plain.swap(pending_plain_);
  std::string net;
  if (Status s = filter_->encrypt(plain, net); !s) {
    abort();
    return;
  }
  queue_net(net);
}

void Connection::start_tls(std::unique_ptr<StreamFilter> filter) {
  if (state_ != State::kOpen) return;
  filter_ = std::move(filter);
  handshake_reported_ = false;
  std::string net;
  if (Status s = filter_->start(net); !s) {
    finish(CloseReason::kError, s.error().message);
    return;
  }
  queue_net(net);
}

void Connection::pause_reading() {
  user_paused_ = true;
  update_poll();
}

void Connection::resume_reading() {
  user_paused_ = false;
  update_poll();
}

void Connection::touch() {
  if (opt_.idle_timeout_ms == 0 || state_ != State::kOpen || !started_) return;
  idle_timer_->restart(opt_.idle_timeout_ms);
}

void Connection::on_idle() {
  auto self = shared_from_this();
  if (state_ != State::kOpen) return;
  if (cb_.on_timeout) {
    cb_.on_timeout(TimeoutKind::kIdle);
  } else {
    finish(CloseReason::kIdleTimeout, "");
  }
}

void Connection::arm_absolute() {
  if (opt_.absolute_timeout_ms == 0) return;
  abs_timer_->start(opt_.absolute_timeout_ms, [this] {
    auto self = shared_from_this();
    if (state_ != State::kOpen) return;
    if (cb_.on_timeout) {
      cb_.on_timeout(TimeoutKind::kAbsolute);
    } else {
      finish(CloseReason::kAbsoluteTimeout, "");
    }
  });
}

void Connection::set_idle_timeout(uint64_t ms) {
  opt_.idle_timeout_ms = ms;
  if (ms == 0) {
    idle_timer_->stop();
  } else {
    touch();
  }
}

void Connection::set_absolute_timeout(uint64_t ms) {
  opt_.absolute_timeout_ms = ms;
  abs_timer_->stop();
  if (started_) arm_absolute();
}

void Connection::close() {
  if (state_ != State::kOpen) return;
  if (filter_ && filter_->handshake_done()) {
    std::string net;
    filter_->shutdown(net);
    queue_net(net);
  }
  state_ = State::kClosing;
  pending_plain_.clear();
  abs_timer_->stop();
  idle_timer_->stop();
  // Bound the flush: a peer that never reads must not keep us.
  aux_timer_->start(opt_.close_flush_ms, [this] {
    auto self = shared_from_this();
    finish(CloseReason::kLocal, "output not taken before close");
  });
  update_poll();
  maybe_finish_close();
}

void Connection::maybe_finish_close() {
  if (state_ != State::kClosing || out_off_ < out_.size()) return;
  // Finish on the next loop turn so that on_close never runs inside close().
  aux_timer_->start(0, [this] {
    auto self = shared_from_this();
    finish(CloseReason::kLocal, "");
  });
}

void Connection::abort() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosing;
  out_.clear();
  out_off_ = 0;
  pending_plain_.clear();
  abs_timer_->stop();
  idle_timer_->stop();
  update_poll();
  aux_timer_->start(0, [this] {
    auto self = shared_from_this();
    finish(CloseReason::kLocal, "");
  });
}

void Connection::finish(CloseReason reason, const std::string& detail) {
  if (state_ == State::kClosed) return;
  auto self = shared_from_this();
  state_ = State::kClosed;
  idle_timer_->stop();
  abs_timer_->stop();
  aux_timer_->stop();
  if (poll_) {
    poll_->data = reinterpret_cast<void*>(static_cast<intptr_t>(fd_));
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) {
      ::close(static_cast<int>(reinterpret_cast<intptr_t>(h->data)));
      delete reinterpret_cast<uv_poll_t*>(h);
    });
    poll_ = nullptr;
  }
  out_.clear();
  out_off_ = 0;
  // Drop the callbacks (they often hold the session that holds us) before calling.
  Callbacks cbs = std::move(cb_);
  cb_ = Callbacks{};
  if (cbs.on_close) cbs.on_close(reason, detail);
}

namespace {

struct ConnectOp {
  std::unique_ptr<ev::FdWatch> watch;
  std::unique_ptr<ev::Timer> timer;
  UniqueFd fd;
  std::string what;
  Connection::Options options;
  Connection::ConnectCallback cb;
  bool done = false;
};

void complete(ev::Loop& loop, const std::shared_ptr<ConnectOp>& op, int err) {
  if (op->done) return;
  op->done = true;
  op->watch.reset();
  op->timer.reset();
  auto cb = std::move(op->cb);
  if (err == 0) {
    cb(Connection::adopt(loop, std::move(op->fd), op->options));
  } else if (err == ETIMEDOUT) {
    cb(make_error(ErrorKind::kTemp, "connect " + op->what + ": timed out"));
  } else {
    cb(errno_error("connect " + op->what, err));
  }
}

void start_connect(ev::Loop& loop, std::shared_ptr<ConnectOp> op, const sockaddr* sa, socklen_t len,
                   uint64_t timeout_ms) {
  int rc;
  do {
    rc = ::connect(op->fd.get(), sa, len);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) {
    // Finish on the next turn so the callback never runs inside the caller.
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(0, [&loop, op] { complete(loop, op, 0); });
    return;
  }
  if (errno != EINPROGRESS && errno != EAGAIN) {
    int err = errno;
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(0, [&loop, op, err] { complete(loop, op, err); });
    return;
  }
  op->watch = std::make_unique<ev::FdWatch>(loop, op->fd.get());
  op->watch->start(UV_WRITABLE, [&loop, op](int, int) {
    int err = 0;
    socklen_t elen = sizeof err;
    if (::getsockopt(op->fd.get(), SOL_SOCKET, SO_ERROR, &err, &elen) < 0) err = errno;
    complete(loop, op, err);
  });
  if (timeout_ms) {
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(timeout_ms, [&loop, op] { complete(loop, op, ETIMEDOUT); });
  }
}

}  // namespace

void Connection::connect_tcp(ev::Loop& loop, const std::string& address, uint16_t port,
                             const std::string& source_address, uint64_t timeout_ms, Options options,
                             ConnectCallback cb) {
  auto op = std::make_shared<ConnectOp>();
  op->options = options;
  op->cb = std::move(cb);
  sockaddr_storage ss{};
  socklen_t len = 0;
  bool v6 = address.find(':') != std::string::npos;
  op->what = v6 ? "[" + address + "]:" + std::to_string(port) : address + ":" + std::to_string(port);
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (::inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) len = 0; else len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (::inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) len = 0; else len = sizeof *a;
  }
  if (len == 0) {
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(0, [&loop, op] { complete(loop, op, EINVAL); });
    return;
  }
  op->fd.reset(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!op->fd) {
    int err = errno;
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(0, [&loop, op, err] { complete(loop, op, err); });
    return;
  }
  if (!source_address.empty()) {
    sockaddr_storage src{};
    socklen_t slen = 0;
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&src);
      a->sin6_family = AF_INET6;
      if (::inet_pton(AF_INET6, source_address.c_str(), &a->sin6_addr) == 1) slen = sizeof *a;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&src);
      a->sin_family = AF_INET;
      if (::inet_pton(AF_INET, source_address.c_str(), &a->sin_addr) == 1) slen = sizeof *a;
    }
    if (slen == 0 || ::bind(op->fd.get(), reinterpret_cast<sockaddr*>(&src), slen) < 0) {
      int err = slen == 0 ? EINVAL : errno;
      op->what += " from " + source_address;
      op->timer = std::make_unique<ev::Timer>(loop);
      op->timer->start(0, [&loop, op, err] { complete(loop, op, err); });
      return;
    }
  }
  start_connect(loop, op, reinterpret_cast<sockaddr*>(&ss), len, timeout_ms);
}

void Connection::connect_unix(ev::Loop& loop, const std::string& path, Options options, ConnectCallback cb) {
  auto op = std::make_shared<ConnectOp>();
  op->options = options;
  op->cb = std::move(cb);
  op->what = path;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    op->timer = std::make_unique<ev::Timer>(loop);
    op->timer->start(0, [&loop, op] { complete(loop, op, ENAMETOOLONG); });
    return;
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  op->fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  start_connect(loop, op, reinterpret_cast<sockaddr*>(&sa), sizeof sa, 5000);
}

}  // namespace tern::common::net
