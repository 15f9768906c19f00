// Connection: one stream socket (TCP or UNIX), plaintext or TLS, on the event loop.
//
// The connection reads whatever arrives and hands the plaintext to on_data; splitting
// it into lines or commands is the protocol parser's job (line_reader.h), which never
// sees the socket. Output is buffered: write() never blocks and never fails; when more
// than `high_water` bytes wait to be sent, reading stops until the peer has taken
// them down to `low_water`, so a client that pipelines without reading cannot make us
// buffer without bound (on_drain tells a producer when to go on).
//
// TLS is a StreamFilter (tls.h) put in front of the socket. start_tls() may be called
// on a live connection (STARTTLS): everything written before it goes out as
// plaintext, everything after it through the filter. Bytes the peer sent before the
// handshake were already handed to on_data: the protocol layer must throw them away
// (CVE-2011-0411, STARTTLS command injection) — see LineReader::clear().
//
// Timeouts: the idle timeout restarts whenever bytes move in either direction; the
// absolute one bounds the whole connection. on_timeout may write a goodbye and
// close(); a close() that cannot flush within `close_flush_ms` is cut off.
//
// Lifetime: always held by shared_ptr. Callbacks run on the loop thread; the
// connection keeps itself alive while it calls them, so a callback may drop the last
// reference. on_close runs exactly once, after which the fd is closed.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/loop.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common::net {

// Who is on the other end.
struct PeerInfo {
  bool is_unix = false;
  std::string address;        // numeric IP ("192.0.2.7", "2001:db8::1"); empty for UNIX
  uint16_t port = 0;
  std::string local_address;  // our side
  uint16_t local_port = 0;
  bool has_creds = false;     // UNIX sockets: SO_PEERCRED
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};

// Fills PeerInfo from a connected socket.
PeerInfo peer_info(int fd);

// A transformation of the byte stream; TLS is the one implementation (tls.h).
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  // Begins the handshake; a client puts its first flight into net_out.
  virtual Status start(std::string& net_out) = 0;
  // Bytes from the socket: plaintext for the protocol goes to plain_out, bytes to
  // send (handshake, alerts) to net_out. An error ends the connection.
  virtual Status feed(std::string_view net_in, std::string& plain_out, std::string& net_out) = 0;
  // Plaintext to send, once handshake_done(); the protected bytes go to net_out.
  virtual Status encrypt(std::string_view plain, std::string& net_out) = 0;
  virtual bool handshake_done() const = 0;
  // The orderly end (close_notify) into net_out.
  virtual void shutdown(std::string& net_out) = 0;
  // "TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)", as Postfix logs it.
  virtual std::string description() const = 0;
  // The peer ended the TLS session (close_notify received).
  virtual bool peer_closed() const = 0;
};

// Why a connection ended.
enum class CloseReason {
  kLocal,            // we called close() or abort()
  kPeerClosed,       // the peer closed (EOF or TLS close_notify)
  kError,            // a socket or TLS error; see the detail text
  kIdleTimeout,      // nothing moved for idle_timeout_ms
  kAbsoluteTimeout,  // the connection lived longer than absolute_timeout_ms
};
const char* close_reason_name(CloseReason r);

enum class TimeoutKind { kIdle, kAbsolute };

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  struct Options {
    size_t high_water = 1 << 20;      // stop reading above this much unsent output
    size_t low_water = 256 << 10;     // resume reading below this
    uint64_t idle_timeout_ms = 0;     // 0: none
    uint64_t absolute_timeout_ms = 0; // 0: none
    uint64_t close_flush_ms = 10000;  // how long close() waits for output to drain
    size_t read_chunk = 64 << 10;     // bytes per read() call
  };
  // Each may be left empty; the initializers let callers name only the ones they
  // need ({.on_data = ..., .on_close = ...}) under -Wextra.
  struct Callbacks {
    std::function<void(std::string_view data)> on_data = nullptr;
    std::function<void(CloseReason reason, const std::string& detail)> on_close = nullptr;
    std::function<void()> on_drain = nullptr;      // unsent output fell below low_water
    std::function<void()> on_tls_ready = nullptr;  // the TLS handshake completed
    std::function<void(TimeoutKind)> on_timeout = nullptr;  // default: end with kIdleTimeout/kAbsoluteTimeout
  };

  // Takes a connected, non-blocking-or-not socket.
  static std::shared_ptr<Connection> adopt(ev::Loop& loop, UniqueFd fd, Options options);
  static std::shared_ptr<Connection> adopt(ev::Loop& loop, UniqueFd fd) { return adopt(loop, std::move(fd), Options{}); }
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts reading and timers.
  void start(Callbacks callbacks);

  void write(std::string_view data);
  // Flushes output (and TLS close_notify), then closes. on_close(kLocal).
  void close();
  // Closes now, dropping unsent output. on_close(kLocal) unless already closed.
  void abort();
  bool closed() const { return state_ == State::kClosed; }
  bool closing() const { return state_ != State::kOpen; }

  // Flow control requested by the protocol layer (independent of back-pressure).
  void pause_reading();
  void resume_reading();
  // True while the connection reads: open, started, and paused neither by
  // pause_reading() nor by back-pressure.
  bool reading() const { return state_ == State::kOpen && started_ && !user_paused_ && !bp_paused_; }
  size_t pending_output() const { return out_.size() - out_off_ + pending_plain_.size(); }

  void set_idle_timeout(uint64_t ms);
  void set_absolute_timeout(uint64_t ms);

  // Puts a filter (TLS) in front of the socket from now on.
  void start_tls(std::unique_ptr<StreamFilter> filter);
  bool tls_active() const { return filter_ != nullptr; }
  bool tls_ready() const { return filter_ && filter_->handshake_done(); }
  const StreamFilter* filter() const { return filter_.get(); }

  const PeerInfo& peer() const { return peer_; }
  int fd() const { return fd_; }
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }

  // Async client connects. cb runs on the loop thread with the connection or an error
  // ("connect 192.0.2.7:25: Connection refused", "... timed out").
  using ConnectCallback = std::function<void(Result<std::shared_ptr<Connection>>)>;
  static void connect_tcp(ev::Loop& loop, const std::string& address, uint16_t port,
                          const std::string& source_address, uint64_t timeout_ms, Options options,
                          ConnectCallback cb);
  static void connect_unix(ev::Loop& loop, const std::string& path, Options options, ConnectCallback cb);

 private:
  enum class State { kOpen, kClosing, kClosed };
  Connection(ev::Loop& loop, UniqueFd fd, Options options);
  void update_poll();
  void on_poll(int status, int events);
  void do_read();
  void do_write();
  void queue_net(std::string_view bytes);
  void flush_pending_plain();
  void finish(CloseReason reason, const std::string& detail);
  void touch();
  void on_idle();
  void arm_absolute();
  void maybe_finish_close();

  ev::Loop& loop_;
  int fd_;
  uv_poll_t* poll_ = nullptr;
  int poll_events_ = 0;
  Options opt_;
  Callbacks cb_;
  State state_ = State::kOpen;
  bool started_ = false;
  bool user_paused_ = false;
  bool bp_paused_ = false;     // paused by back-pressure
  bool handshake_reported_ = false;
  std::string out_;            // bytes for the socket (already encrypted under TLS)
  size_t out_off_ = 0;
  std::string pending_plain_;  // written under TLS before the handshake completed
  std::unique_ptr<StreamFilter> filter_;
  std::unique_ptr<ev::Timer> idle_timer_;
  std::unique_ptr<ev::Timer> abs_timer_;
  std::unique_ptr<ev::Timer> aux_timer_;  // close flush deadline, deferred finish
  PeerInfo peer_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  std::string read_buf_;
};

}  // namespace tern::common::net
