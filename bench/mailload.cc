// mailload - IMAP and POP3 load generator for bench/run
//
// One thread, one epoll loop, many non-blocking connections, so that the client is
// not what limits a measurement: it parses only what it must (tagged completions,
// IMAP literals are skipped by length, POP3 multi-line replies end at CRLF.CRLF) and
// reports its own CPU time next to the wall-clock time, so bench/run can show how
// busy the client was (a client near 100% of a core would be measuring itself).
//
//   mailload MODE --port P [--host 127.0.0.1] --user FMT --users K --pass PW
//            [--conns C] [--count N] [--repeat R] [--mailbox NAME] [--needle W]
//            [--expect N] [--messages M]
//
// FMT is a user name where "%d" is replaced by the connection's number modulo K
// (login0@example.test ... ); without %d every connection logs in as FMT.
//
// Modes:
//   login           N IMAP sessions over C parallel connections: connect, greeting,
//                   LOGIN, LOGOUT. Rate: logins per second (connection set-up included).
//   fetch-headers   C clients, each R times: SELECT box, FETCH 1:* (UID FLAGS
//                   RFC822.SIZE BODY.PEEK[HEADER]). Rate: mailbox fetches per second.
//   fetch-bodies    as above with FETCH 1:* (UID BODY.PEEK[]).
//   search          C clients, SELECT box once, then R times SEARCH TEXT <needle>;
//                   --expect N checks the number of hits. Rate: searches per second.
//   pop3            R POP3 sessions, one after the other: connect, USER, PASS, UIDL,
//                   RETR 1..M, QUIT (no DELE: the maildrop stays as it is). Timed from
//                   the first connect. Rate: sessions per second.
//   idle            C IMAP connections: LOGIN, SELECT INBOX, IDLE (waits for the
//                   continuation). Then prints "ready C" and holds them until stdin
//                   is closed; then closes them all.
// PEEK everywhere: reading must not change flags, so every repetition (and both
// servers) see the same mailbox.
//
// Every timed IMAP phase except login starts when all C connections are logged in.
//
// Output: one line of key=value pairs on stdout (ops, seconds, rate, bytes,
// client_cpu_seconds, client_cpu_share, fetched, errors); exit status 0 only when
// every command got its OK. On the first failure it prints error=<reason> and exits 1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

enum class Mode { kLogin, kFetchHeaders, kFetchBodies, kSearch, kPop3, kIdle };

struct Options {
  Mode mode = Mode::kLogin;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string user_fmt;
  int users = 1;
  std::string pass;
  int conns = 1;
  long count = 1;
  int repeat = 1;
  std::string mailbox = "INBOX";
  std::string needle = "needle";
  long expect = -1;
  int messages = 0;
  int connect_batch = 64;  // connections being set up at once (idle mode)
};

[[noreturn]] void fail(const std::string& why) {
  std::printf("error=%s\n", why.c_str());
  std::fflush(stdout);
  std::exit(1);
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

std::string user_name(const Options& o, int n) {
  std::string u = o.user_fmt;
  size_t p = u.find("%d");
  if (p != std::string::npos) u.replace(p, 2, std::to_string(n % o.users));
  return u;
}

// A quoted IMAP string (the names and passwords used here have no CR/LF).
std::string quoted(std::string_view s) {
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

// What a connection is waiting for.
enum class Wait {
  kGreeting,    // the server's first line
  kTagged,      // IMAP: the tagged completion of the last command
  kContinue,    // IMAP: a "+" continuation (IDLE)
  kPop3Line,    // POP3: a single-line +OK
  kPop3Multi,   // POP3: +OK and a multi-line body ending in CRLF.CRLF
  kBarrier,     // logged in, waiting for the others before the timed phase
  kHeld,        // idle mode: in IDLE, held open
  kDone,
};

struct Conn {
  int fd = -1;
  int id = 0;
  Wait wait = Wait::kGreeting;
  std::string in;
  size_t scan = 0;          // where parsing continues in `in`
  size_t literal = 0;       // IMAP literal bytes still to skip
  bool continued = false;   // the current IMAP line continues after a literal
  bool pop3_body = false;   // POP3 multi-line: the +OK line was seen
  bool body_start = false;  // POP3 multi-line: c.scan is still at the first body byte
  std::string out;
  std::string tag;
  int step = 0;             // position in the connection's script
  int reps = 0;             // repetitions done
  int retr = 0;             // POP3: next message to RETR
  long fetched = 0;         // FETCH responses / RETRs seen
  long hits = -1;           // SEARCH hits of the last search
  bool ok = true;           // last completion was OK
  std::string last;         // last completion line (for errors)
  bool want_out = false;
};

class Loop {
 public:
  explicit Loop(Options o) : o_(std::move(o)) {
    ep_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) fail("epoll_create1: " + std::string(std::strerror(errno)));
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(o_.port));
    if (::inet_pton(AF_INET, o_.host.c_str(), &addr_.sin_addr) != 1) fail("bad host " + o_.host);
  }

  int run();

 private:
  bool imap() const { return o_.mode != Mode::kPop3; }
  void open_conn(int id);
  void close_conn(Conn& c);
  void send(Conn& c, const std::string& line);
  void imap_cmd(Conn& c, const std::string& cmd);
  void on_readable(Conn& c);
  void on_writable(Conn& c);
  void parse(Conn& c);
  bool parse_imap(Conn& c);
  bool parse_pop3(Conn& c);
  void completed(Conn& c);
  void next(Conn& c);
  void logged_in();
  void start_timed();
  void finish_op(Conn& c);
  void update_events(Conn& c);

  Options o_;
  int ep_ = -1;
  sockaddr_in addr_{};
  std::vector<std::unique_ptr<Conn>> conns_;
  long started_ = 0;      // login mode: sessions started
  long done_ops_ = 0;
  long total_ops_ = 0;
  int logged_in_ = 0;
  int live_ = 0;
  int connecting_ = 0;
  int next_id_ = 0;
  bool timed_ = false;
  double t0_ = 0, cpu0_ = 0;
  uint64_t bytes_ = 0;
  long fetched_ = 0;
  int tag_n_ = 0;
};

void Loop::open_conn(int id) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("socket: " + std::string(std::strerror(errno)));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) < 0 && errno != EINPROGRESS) {
    fail("connect: " + std::string(std::strerror(errno)));
  }
  // A new session always gets a new id (and Conn): the one that just finished may
  // still be on the call stack.
  if (static_cast<size_t>(id) >= conns_.size()) conns_.resize(id + 1);
  if (conns_[id]) fail("connection id reused");
  conns_[id] = std::make_unique<Conn>();
  Conn& c = *conns_[id];
  c.fd = fd;
  c.id = id;
  c.wait = Wait::kGreeting;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u32 = static_cast<uint32_t>(id);
  if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) < 0) fail("epoll_ctl: " + std::string(std::strerror(errno)));
  ++live_;
  ++connecting_;
}

void Loop::close_conn(Conn& c) {
  if (c.fd >= 0) {
    ::epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    --live_;
  }
  c.wait = Wait::kDone;
}

void Loop::update_events(Conn& c) {
  bool want = !c.out.empty();
  if (want == c.want_out) return;
  c.want_out = want;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u);
  ev.data.u32 = static_cast<uint32_t>(c.id);
  ::epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Loop::send(Conn& c, const std::string& line) {
  c.out += line;
  on_writable(c);
}

void Loop::on_writable(Conn& c) {
  while (!c.out.empty()) {
    ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      fail("send to connection " + std::to_string(c.id) + ": " + std::strerror(errno));
    }
    c.out.erase(0, static_cast<size_t>(n));
  }
  update_events(c);
}

void Loop::imap_cmd(Conn& c, const std::string& cmd) {
  c.tag = "t" + std::to_string(++tag_n_);
  c.wait = Wait::kTagged;
  send(c, c.tag + " " + cmd + "\r\n");
}

void Loop::on_readable(Conn& c) {
  char buf[256 * 1024];
  for (;;) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n > 0) {
      bytes_ += static_cast<uint64_t>(n);
      c.in.append(buf, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof buf) break;
      continue;
    }
    if (n == 0) {
      if (c.wait == Wait::kDone) return;
      fail("connection " + std::to_string(c.id) + " closed by the server while waiting (last: " + c.last + ")");
    }
    if (errno == EAGAIN || errno == EINTR) break;
    fail("recv: " + std::string(std::strerror(errno)));
  }
  parse(c);
}

void Loop::parse(Conn& c) {
  for (;;) {
    if (c.wait == Wait::kDone || c.fd < 0) return;
    bool progressed = imap() ? parse_imap(c) : parse_pop3(c);
    // Drop what has been consumed (keeps the buffer small during big FETCHes).
    if (c.scan > 0 && (c.scan == c.in.size() || c.scan > 1 << 20)) {
      c.in.erase(0, c.scan);
      c.scan = 0;
    }
    if (!progressed) return;
  }
}

// One IMAP line (or literal) at a time; returns false when more input is needed.
bool Loop::parse_imap(Conn& c) {
  if (c.literal > 0) {
    size_t avail = c.in.size() - c.scan;
    size_t take = avail < c.literal ? avail : c.literal;
    c.scan += take;
    c.literal -= take;
    return c.literal == 0;
  }
  size_t eol = c.in.find("\r\n", c.scan);
  if (eol == std::string::npos) return false;
  std::string_view line(c.in.data() + c.scan, eol - c.scan);
  c.scan = eol + 2;
  const bool start = !c.continued;
  // A literal announcement at the end of the line: {N} or {N+}.
  c.continued = false;
  if (!line.empty() && line.back() == '}') {
    size_t open = line.rfind('{');
    if (open != std::string_view::npos) {
      size_t n = 0;
      bool digits = false;
      for (size_t i = open + 1; i < line.size() - 1; ++i) {
        if (line[i] >= '0' && line[i] <= '9') {
          n = n * 10 + static_cast<size_t>(line[i] - '0');
          digits = true;
        } else if (line[i] != '+') {
          digits = false;
          break;
        }
      }
      if (digits) {
        c.literal = n;
        c.continued = true;
      }
    }
  }
  if (!start) return true;  // the rest of a line that carried a literal
  switch (c.wait) {
    case Wait::kGreeting:
      if (line.substr(0, 4) != "* OK") fail("greeting: " + std::string(line));
      --connecting_;
      next(c);
      return true;
    case Wait::kContinue:
      if (!line.empty() && line[0] == '+') {
        c.wait = Wait::kHeld;
        logged_in();
        return true;
      }
      [[fallthrough]];
    case Wait::kTagged:
      if (line.size() > 2 && line[0] == '*' && line[1] == ' ') {
        if (line.find(" FETCH ") != std::string_view::npos) ++c.fetched;
        if (line.substr(0, 8) == "* SEARCH") {
          long hits = 0;
          for (size_t i = 8; i < line.size(); ++i) {
            if (line[i] == ' ') ++hits;
          }
          c.hits = hits;
        }
        return true;
      }
      if (line.size() > c.tag.size() && line.substr(0, c.tag.size()) == c.tag && line[c.tag.size()] == ' ') {
        c.last = std::string(line);
        c.ok = line.substr(c.tag.size() + 1, 2) == "OK";
        completed(c);
      }
      return true;
    default:
      return true;  // untagged data while held or waiting for the others: ignored
  }
}

bool Loop::parse_pop3(Conn& c) {
  if (c.wait == Wait::kPop3Multi && c.pop3_body) {
    // The body ends with CRLF "." CRLF (an empty body is just "." CRLF).
    size_t end = std::string::npos;
    if (c.body_start && c.in.compare(c.scan, 3, ".\r\n") == 0) {
      end = c.scan - 2;
    } else if (c.in.size() - c.scan >= 3 || !c.body_start) {
      end = c.in.find("\r\n.\r\n", c.scan);
    }
    if (end == std::string::npos) {
      // Not complete: the next search starts 4 bytes before the end, because the
      // terminator may straddle two reads.
      if (c.in.size() - c.scan >= 3) c.body_start = false;
      if (c.in.size() >= 4 && c.in.size() - 4 > c.scan) c.scan = c.in.size() - 4;
      return false;
    }
    c.scan = end + 5;
    c.pop3_body = false;
    completed(c);
    return true;
  }
  size_t eol = c.in.find("\r\n", c.scan);
  if (eol == std::string::npos) return false;
  std::string_view line(c.in.data() + c.scan, eol - c.scan);
  c.scan = eol + 2;
  c.last = std::string(line);
  c.ok = line.substr(0, 3) == "+OK";
  switch (c.wait) {
    case Wait::kGreeting:
      if (!c.ok) fail("greeting: " + c.last);
      --connecting_;
      next(c);
      return true;
    case Wait::kPop3Line:
      completed(c);
      return true;
    case Wait::kPop3Multi:
      if (!c.ok) {
        completed(c);
        return true;
      }
      c.pop3_body = true;
      c.body_start = true;
      return true;
    default:
      return true;
  }
}

void Loop::completed(Conn& c) {
  if (!c.ok) fail("connection " + std::to_string(c.id) + ": " + c.last);
  next(c);
}

// Each connection runs a small script; `step` says where it is.
void Loop::next(Conn& c) {
  const std::string user = user_name(o_, c.id);
  if (o_.mode == Mode::kPop3) {
    // One whole session per operation, connection set-up and login included.
    switch (c.step) {
      case 0:
        c.step = 1;
        c.wait = Wait::kPop3Line;
        send(c, "USER " + user + "\r\n");
        return;
      case 1:
        c.step = 2;
        c.wait = Wait::kPop3Line;
        send(c, "PASS " + o_.pass + "\r\n");
        return;
      case 2:
        c.step = 3;
        c.wait = Wait::kPop3Multi;
        send(c, "UIDL\r\n");
        return;
      case 3:
        c.wait = Wait::kPop3Multi;
        if (c.retr < o_.messages) {
          ++c.fetched;
          send(c, "RETR " + std::to_string(++c.retr) + "\r\n");
          return;
        }
        c.step = 4;
        c.wait = Wait::kPop3Line;
        send(c, "QUIT\r\n");
        return;
      default: {
        // QUIT answered: the session is done; the next one on a new connection.
        fetched_ += c.fetched;
        const int reps = c.reps + 1;
        close_conn(c);
        ++done_ops_;
        if (reps < o_.repeat) {
          const int id = next_id_++;
          open_conn(id);
          conns_[id]->reps = reps;
        }
        return;
      }
    }
  }

  const int s = c.step++;
  // IMAP
  if (s == 0) {
    imap_cmd(c, "LOGIN " + quoted(user) + " " + quoted(o_.pass));
    return;
  }
  switch (o_.mode) {
    case Mode::kLogin:
      if (s == 1) {
        imap_cmd(c, "LOGOUT");
      } else {
        ++done_ops_;
        close_conn(c);
        if (started_ < o_.count) {
          ++started_;
          open_conn(next_id_++);
        }
      }
      return;
    case Mode::kIdle:
      if (s == 1) {
        imap_cmd(c, "SELECT INBOX");
      } else if (s == 2) {
        c.tag = "t" + std::to_string(++tag_n_);
        c.wait = Wait::kContinue;
        send(c, c.tag + " IDLE\r\n");
      }
      return;
    case Mode::kSearch:
      if (s == 1) {
        imap_cmd(c, "SELECT " + quoted(o_.mailbox));
      } else if (s == 2) {
        c.wait = Wait::kBarrier;
        logged_in();
      } else {
        if (s > 3) {
          if (o_.expect >= 0 && c.hits != o_.expect) {
            fail("SEARCH TEXT " + o_.needle + " found " + std::to_string(c.hits) + ", expected " +
                 std::to_string(o_.expect));
          }
          finish_op(c);
          if (c.wait == Wait::kDone) return;
        }
        c.hits = -1;
        imap_cmd(c, "SEARCH TEXT " + quoted(o_.needle));
      }
      return;
    case Mode::kFetchHeaders:
    case Mode::kFetchBodies: {
      if (s == 1) {
        c.wait = Wait::kBarrier;
        logged_in();
        return;
      }
      // s = 2: SELECT, 3: FETCH, 4: op done -> SELECT ...
      int phase = (s - 2) % 2;
      if (phase == 0) {
        if (s > 2) {
          if (o_.expect >= 0 && c.fetched != o_.expect) {
            fail("FETCH returned " + std::to_string(c.fetched) + " messages, expected " + std::to_string(o_.expect));
          }
          fetched_ += c.fetched;
          finish_op(c);
          if (c.wait == Wait::kDone) return;
        }
        c.fetched = 0;
        imap_cmd(c, "SELECT " + quoted(o_.mailbox));
      } else {
        imap_cmd(c, o_.mode == Mode::kFetchHeaders ? "FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])"
                                                   : "FETCH 1:* (UID BODY.PEEK[])");
      }
      return;
    }
    default:
      return;
  }
}

void Loop::finish_op(Conn& c) {
  ++done_ops_;
  if (++c.reps >= o_.repeat) {
    c.wait = Wait::kDone;
    c.tag = "t" + std::to_string(++tag_n_);
    // LOGOUT without waiting for the reply: the timed phase ends here.
    c.out += c.tag + " LOGOUT\r\n";
    on_writable(c);
    close_conn(c);
  }
}

void Loop::logged_in() {
  ++logged_in_;
  if (logged_in_ == o_.conns) start_timed();
}

void Loop::start_timed() {
  timed_ = true;
  if (o_.mode == Mode::kIdle) return;  // idle: timed from the first connect
  t0_ = now();
  cpu0_ = cpu_seconds();
  bytes_ = 0;
  for (auto& p : conns_) {
    if (p && p->wait == Wait::kBarrier) next(*p);
  }
}

int Loop::run() {
  const int initial = o_.conns;
  if (o_.mode == Mode::kLogin) {
    t0_ = now();
    cpu0_ = cpu_seconds();
    timed_ = true;
    total_ops_ = o_.count;
    for (int i = 0; i < initial && started_ < o_.count; ++i) {
      ++started_;
      open_conn(next_id_++);
    }
  } else if (o_.mode == Mode::kIdle) {
    t0_ = now();
  } else if (o_.mode == Mode::kPop3) {
    t0_ = now();
    cpu0_ = cpu_seconds();
    timed_ = true;
    total_ops_ = o_.repeat;
    open_conn(next_id_++);
  } else {
    total_ops_ = static_cast<long>(o_.conns) * o_.repeat;
    for (int i = 0; i < initial; ++i) open_conn(next_id_++);
  }
  std::vector<epoll_event> evs(1024);
  bool announced = false;
  for (;;) {
    if (o_.mode == Mode::kIdle) {
      // Connections are set up connect_batch at a time (a thousand SYNs at once
      // would overflow the listen queue of either server).
      while (next_id_ < o_.conns && next_id_ - logged_in_ < o_.connect_batch) {
        open_conn(next_id_++);
      }
      if (logged_in_ == o_.conns && !announced) {
        announced = true;
        double dt = now() - t0_;
        std::printf("ready %d seconds=%.3f\n", o_.conns, dt);
        std::fflush(stdout);
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u32 = UINT32_MAX;
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, 0, &ev);
      }
    } else if (live_ == 0) {
      break;
    }
    int n = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 60000);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait: " + std::string(std::strerror(errno)));
    }
    if (n == 0) fail("no progress for 60 seconds (" + std::to_string(done_ops_) + " operations done)");
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u32 == UINT32_MAX) {
        // stdin: the harness has measured; let go of the connections.
        char b[256];
        if (::read(0, b, sizeof b) <= 0) {
          for (auto& p : conns_) {
            if (p) close_conn(*p);
          }
          std::printf("ops=%d seconds=0 rate=0 bytes=0 client_cpu_seconds=%.3f client_cpu_share=0 fetched=0\n",
                      o_.conns, cpu_seconds());
          return 0;
        }
        continue;
      }
      Conn& c = *conns_[evs[i].data.u32];
      if (c.fd < 0) continue;
      if (evs[i].events & EPOLLOUT) on_writable(c);
      if (c.fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        if ((evs[i].events & EPOLLERR) && c.wait == Wait::kGreeting) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
          fail("connect to port " + std::to_string(o_.port) + ": " + std::strerror(err));
        }
        on_readable(c);
      }
    }
  }
  double dt = now() - t0_;
  double cpu = cpu_seconds() - cpu0_;
  std::printf("ops=%ld seconds=%.4f rate=%.2f bytes=%llu client_cpu_seconds=%.3f client_cpu_share=%.3f fetched=%ld\n",
              done_ops_, dt, dt > 0 ? done_ops_ / dt : 0.0, static_cast<unsigned long long>(bytes_), cpu,
              dt > 0 ? cpu / dt : 0.0, fetched_);
  return done_ops_ == total_ops_ ? 0 : 1;
}

Mode parse_mode(const std::string& m) {
  if (m == "login") return Mode::kLogin;
  if (m == "fetch-headers") return Mode::kFetchHeaders;
  if (m == "fetch-bodies") return Mode::kFetchBodies;
  if (m == "search") return Mode::kSearch;
  if (m == "pop3") return Mode::kPop3;
  if (m == "idle") return Mode::kIdle;
  fail("unknown mode " + m);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mailload login|fetch-headers|fetch-bodies|search|pop3|idle --port P ...\n");
    return 64;
  }
  Options o;
  o.mode = parse_mode(argv[1]);
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) fail("missing value for " + a);
    std::string v = argv[++i];
    if (a == "--host") o.host = v;
    else if (a == "--port") o.port = std::atoi(v.c_str());
    else if (a == "--user") o.user_fmt = v;
    else if (a == "--users") o.users = std::max(1, std::atoi(v.c_str()));
    else if (a == "--pass") o.pass = v;
    else if (a == "--conns") o.conns = std::max(1, std::atoi(v.c_str()));
    else if (a == "--count") o.count = std::atol(v.c_str());
    else if (a == "--repeat") o.repeat = std::max(1, std::atoi(v.c_str()));
    else if (a == "--mailbox") o.mailbox = v;
    else if (a == "--needle") o.needle = v;
    else if (a == "--expect") o.expect = std::atol(v.c_str());
    else if (a == "--messages") o.messages = std::atoi(v.c_str());
    else if (a == "--connect-batch") o.connect_batch = std::max(1, std::atoi(v.c_str()));
    else fail("unknown option " + a);
  }
  if (o.port <= 0 || o.user_fmt.empty()) fail("--port and --user are required");
  // Many connections: as many descriptors as the hard limit allows.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (o.mode == Mode::kPop3) o.conns = 1;  // one session per maildrop at a time (RFC 1939 8)
  Loop loop(o);
  return loop.run();
}
