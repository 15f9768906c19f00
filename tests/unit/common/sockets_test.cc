// sockets.h: binding UNIX and TCP listeners with actionable errors, the address
// list of inet_interfaces / listen, fd passing, and LISTEN_FDS.
#include "common/sockets.h"

#include <catch2/catch.hpp>

#include "common/log.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace tern::common;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/tern-sock-XXXXXX";  // short: sun_path is 108 bytes
    REQUIRE(::mkdtemp(tmpl));
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A socket file with nobody listening: what a crashed daemon leaves behind.
void make_stale_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  ::close(fd);  // the file stays
}

}  // namespace

TEST_CASE("bind_unix creates a listening socket with the asked mode", "[sockets]") {
  TempDir d;
  const std::string path = d.path + "/lmtp";
  Result<UniqueFd> fd = net::bind_unix(path, 0660);
  REQUIRE(fd);
  struct stat st;
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0660);
  Result<UniqueFd> c = net::connect_unix(path);
  CHECK(c);
}

TEST_CASE("bind_unix replaces a stale socket", "[sockets]") {
  TempDir d;
  const std::string path = d.path + "/auth-client";
  make_stale_socket(path);
  Result<UniqueFd> fd = net::bind_unix(path, 0666);
  REQUIRE(fd);
  CHECK(net::connect_unix(path));
}

TEST_CASE("bind_unix refuses a socket someone listens on", "[sockets]") {
  TempDir d;
  const std::string path = d.path + "/auth-client";
  Result<UniqueFd> first = net::bind_unix(path, 0666);
  REQUIRE(first);
  Result<UniqueFd> second = net::bind_unix(path, 0666);
  REQUIRE_FALSE(second);
  CHECK(second.error().kind == ErrorKind::kInUse);
  CHECK(second.error().message == "bind " + path + ": another process is listening there");
  // The first listener was not disturbed.
  CHECK(net::connect_unix(path));
}

TEST_CASE("bind_unix refuses to replace a regular file", "[sockets]") {
  TempDir d;
  const std::string path = d.path + "/important";
  { std::ofstream(path) << "data"; }
  Result<UniqueFd> fd = net::bind_unix(path, 0666);
  REQUIRE_FALSE(fd);
  CHECK(fd.error().kind == ErrorKind::kExists);
  CHECK(fd.error().message == "bind " + path + ": a file that is not a socket is in the way");
  std::ifstream in(path);
  std::string s;
  in >> s;
  CHECK(s == "data");
}

TEST_CASE("bind_unix refuses a path longer than sun_path", "[sockets]") {
  std::string path = "/tmp/" + std::string(200, 'x');
  Result<UniqueFd> fd = net::bind_unix(path, 0666);
  REQUIRE_FALSE(fd);
  CHECK(fd.error().kind == ErrorKind::kConfig);
  CHECK(fd.error().message == "bind " + path + ": path longer than 107 bytes");
}

TEST_CASE("bind_inet: port 0, and a port in use is kInUse naming address and port", "[sockets]") {
  Result<UniqueFd> a = net::bind_inet("127.0.0.1", 0);
  REQUIRE(a);
  uint16_t port = net::local_port(a->get());
  REQUIRE(port != 0);
  Result<UniqueFd> b = net::bind_inet("127.0.0.1", port);
  REQUIRE_FALSE(b);
  CHECK(b.error().kind == ErrorKind::kInUse);
  CHECK(b.error().message == "bind 127.0.0.1:" + std::to_string(port) + ": Address already in use");
}

TEST_CASE("bind_inet refuses names and malformed addresses", "[sockets]") {
  struct Case {
    const char* addr;
    const char* msg;
  };
  const Case cases[] = {
      {"localhost", "bind localhost:25: not a numeric IPv4 address"},
      {"127.0.0.256", "bind 127.0.0.256:25: not a numeric IPv4 address"},
      {"::g", "bind [::g]:25: not a numeric IPv6 address"},
      {"", "bind :25: not a numeric IPv4 address"},
  };
  for (const Case& c : cases) {
    Result<UniqueFd> fd = net::bind_inet(c.addr, 25);
    REQUIRE_FALSE(fd);
    CHECK(fd.error().kind == ErrorKind::kConfig);
    CHECK(fd.error().message == c.msg);
  }
}

TEST_CASE("bind_inet on IPv6 loopback", "[sockets]") {
  Result<UniqueFd> a = net::bind_inet("::1", 0);
  if (!a) {
    WARN("no IPv6 on this host: " << a.error().message);
    return;
  }
  uint16_t port = net::local_port(a->get());
  Result<UniqueFd> b = net::bind_inet("::1", port);
  REQUIRE_FALSE(b);
  CHECK(b.error().message == "bind [::1]:" + std::to_string(port) + ": Address already in use");
}

TEST_CASE("listen_addresses expands inet_interfaces and listen values", "[sockets]") {
  using V = std::vector<std::string>;
  struct Case {
    V items;
    V protocols;
    V want;
  };
  const Case cases[] = {
      {{"all"}, {"all"}, {"0.0.0.0", "::"}},
      {{"all"}, {"ipv4"}, {"0.0.0.0"}},
      {{"ALL"}, {"ipv6"}, {"::"}},
      {{"*"}, {"all"}, {"0.0.0.0", "::"}},
      {{"*", "::"}, {"all"}, {"0.0.0.0", "::"}},  // duplicates collapse
      {{"loopback-only"}, {"all"}, {"127.0.0.1", "::1"}},
      {{"localhost"}, {"ipv4"}, {"127.0.0.1"}},
      {{"127.0.0.1", "192.0.2.1"}, {"ipv4"}, {"127.0.0.1", "192.0.2.1"}},
      {{"[::1]"}, {"all"}, {"::1"}},
      {{"::1"}, {"all"}, {"::1"}},
      {{"[2001:db8::1]", "127.0.0.1", "127.0.0.1"}, {"all"}, {"2001:db8::1", "127.0.0.1"}},
      {{"all"}, {}, {"0.0.0.0"}},  // no protocols listed: IPv4
      {{}, {"all"}, {}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.items, c.protocols);
    Result<V> r = net::listen_addresses(c.items, c.protocols);
    REQUIRE(r);
    CHECK(*r == c.want);
  }
}

TEST_CASE("listen_addresses rejects what it cannot bind", "[sockets]") {
  struct Case {
    std::vector<std::string> items, protocols;
    std::string msg;
  };
  const Case cases[] = {
      {{"mail.example.org"}, {"all"}, "'mail.example.org' is not an IP address, all, * or loopback-only"},
      {{"127.0.0.1/8"}, {"all"}, "'127.0.0.1/8' is not an IP address, all, * or loopback-only"},
      {{"[127.0.0.1"}, {"all"}, "'[127.0.0.1' is not an IP address, all, * or loopback-only"},
      {{"[]"}, {"all"}, "'' is not an IP address, all, * or loopback-only"},
      {{"all"}, {"ipv5"}, "inet_protocols: unknown protocol 'ipv5'"},
      {{"bad\x01"}, {"all"}, "'bad\\001' is not an IP address, all, * or loopback-only"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.msg);
    Result<std::vector<std::string>> r = net::listen_addresses(c.items, c.protocols);
    REQUIRE_FALSE(r);
    CHECK(r.error().kind == ErrorKind::kConfig);
    CHECK(r.error().message == c.msg);
  }
}

TEST_CASE("send_fd and recv_fd pass an open file and a payload", "[sockets]") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd a(sv[0]), b(sv[1]);
  int p[2];
  REQUIRE(::pipe(p) == 0);
  UniqueFd pr(p[0]), pw(p[1]);

  REQUIRE(net::send_fd(a.get(), pw.get(), "session 42"));
  pw.reset();  // our copy is gone; the received one keeps the pipe open
  Result<std::pair<std::string, UniqueFd>> got = net::recv_fd(b.get(), 64);
  REQUIRE(got);
  CHECK(got->first == "session 42");
  REQUIRE(got->second.valid());
  CHECK((::fcntl(got->second.get(), F_GETFD) & FD_CLOEXEC) != 0);
  REQUIRE(::write(got->second.get(), "hi", 2) == 2);
  got->second.reset();
  char buf[8] = {};
  CHECK(::read(pr.get(), buf, sizeof buf) == 2);
  CHECK(std::string(buf) == "hi");
  CHECK(::read(pr.get(), buf, sizeof buf) == 0);  // every write end is closed

  SECTION("a payload without an fd") {
    REQUIRE(net::send_fd(a.get(), -1, "no fd"));
    Result<std::pair<std::string, UniqueFd>> r = net::recv_fd(b.get(), 64);
    REQUIRE(r);
    CHECK(r->first == "no fd");
    CHECK_FALSE(r->second.valid());
  }
  SECTION("an empty payload still carries the fd") {
    REQUIRE(net::send_fd(a.get(), pr.get(), ""));
    Result<std::pair<std::string, UniqueFd>> r = net::recv_fd(b.get(), 64);
    REQUIRE(r);
    CHECK(r->first == std::string(1, '\0'));
    CHECK(r->second.valid());
  }
  SECTION("the peer closed") {
    a.reset();
    Result<std::pair<std::string, UniqueFd>> r = net::recv_fd(b.get(), 64);
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "recvmsg: peer closed");
  }
}

TEST_CASE("take_listen_fds reads LISTEN_FDS/LISTEN_FDNAMES for this pid only", "[sockets]") {
  // Put two listeners at fds 3 and 4 as systemd would; keep whatever was there.
  int save3 = ::fcntl(3, F_DUPFD_CLOEXEC, 100), save4 = ::fcntl(4, F_DUPFD_CLOEXEC, 100);
  {
    Result<UniqueFd> l1 = net::bind_inet("127.0.0.1", 0);
    Result<UniqueFd> l2 = net::bind_inet("127.0.0.1", 0);
    REQUIRE(l1);
    REQUIRE(l2);
    int a = ::fcntl(l1->get(), F_DUPFD_CLOEXEC, 50), b = ::fcntl(l2->get(), F_DUPFD_CLOEXEC, 50);
    l1->reset();
    l2->reset();
    REQUIRE(::dup2(a, 3) == 3);
    REQUIRE(::dup2(b, 4) == 4);
    ::close(a);
    ::close(b);
  }

  SECTION("for us") {
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "2", 1);
    ::setenv("LISTEN_FDNAMES", "smtp:submission", 1);
    std::vector<net::InheritedFd> fds = net::take_listen_fds();
    REQUIRE(fds.size() == 2);
    CHECK(fds[0].name == "smtp");
    CHECK(fds[0].fd == 3);
    CHECK(fds[1].name == "submission");
    CHECK(fds[1].fd == 4);
    CHECK(net::find_listen_fd(fds, "submission") == 4);
    CHECK(net::find_listen_fd(fds, "imap") == -1);
    CHECK((::fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(std::getenv("LISTEN_FDS") == nullptr);  // not passed on to our children
    CHECK(std::getenv("LISTEN_PID") == nullptr);
    CHECK(std::getenv("LISTEN_FDNAMES") == nullptr);
  }
  SECTION("names missing") {
    ::setenv("LISTEN_FDS", "2", 1);
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDNAMES");
    std::vector<net::InheritedFd> fds = net::take_listen_fds();
    REQUIRE(fds.size() == 2);
    CHECK(fds[0].name == "unknown");
  }
  SECTION("meant for another process") {
    ::setenv("LISTEN_PID", "1", 1);
    ::setenv("LISTEN_FDS", "2", 1);
    CHECK(net::take_listen_fds().empty());
    CHECK(std::getenv("LISTEN_FDS") == nullptr);
  }
  SECTION("absent or junk") {
    ::unsetenv("LISTEN_FDS");
    CHECK(net::take_listen_fds().empty());
    ::setenv("LISTEN_FDS", "x", 1);
    CHECK(net::take_listen_fds().empty());
  }
  if (save3 >= 0) ::dup2(save3, 3), ::close(save3); else ::close(3);
  if (save4 >= 0) ::dup2(save4, 4), ::close(save4); else ::close(4);
}

TEST_CASE("Listener out of file descriptors refuses with its spare, backs off without one, then recovers",
          "[sockets]") {
  ev::Loop loop;
  Result<UniqueFd> lfd = net::bind_inet("127.0.0.1", 0);
  REQUIRE(lfd);
  const uint16_t port = net::local_port(lfd->get());
  net::Listener listener(loop, std::move(lfd).value(), "smtp");
  listener.set_refusal("421 4.7.0 test Error: too many connections\r\n");
  std::vector<UniqueFd> accepted;
  listener.start([&](UniqueFd c) { accepted.push_back(std::move(c)); });

  // Clients wait in the kernel backlog; their sockets exist before the limit drops.
  auto connect_one = [&] {
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(c.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    timeval tv{5, 0};
    ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return c;
  };
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(connect_one());

  // Warnings go to a file, so they can be counted.
  char tmpl[] = "/tmp/tern-accept-log-XXXXXX";
  int lf = ::mkstemp(tmpl);
  REQUIRE(lf >= 0);
  ::close(lf);
  log::Options saved = log::options(), o;
  o.sink = log::Sink::kFile;
  o.file = tmpl;
  log::init(o);
  auto log_lines = [&] {
    std::ifstream in(tmpl);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  };

  // No descriptor left for accept(): the lowest free number becomes the limit. The
  // spare descriptor makes room for one at a time: each client gets the refusal and
  // the close, and one line is logged for them, not one per turn of the loop.
  rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
  int lowest = ::fcntl(0, F_DUPFD, 0);
  REQUIRE(lowest >= 0);
  ::close(lowest);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(lowest);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  for (int i = 0; i < 50; ++i) uv_run(loop.get(), UV_RUN_NOWAIT);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECK(accepted.empty());
  CHECK(listener.refused() == 3);
  for (UniqueFd& c : clients) {
    char buf[128];
    ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
    REQUIRE(n > 0);
    CHECK(std::string(buf, static_cast<size_t>(n)) == "421 4.7.0 test Error: too many connections\r\n");
    CHECK(::recv(c.get(), buf, sizeof buf, 0) == 0);  // and the close
  }
  std::vector<std::string> lines = log_lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("warning: accept on smtp: Too many open files -- refused 1 connection(s)") != std::string::npos);

  // Not even the spare helps (a limit of 0): one attempt and one warning, not 50,
  // and the client waits in the backlog.
  clients.clear();
  clients.push_back(connect_one());
  tight.rlim_cur = 0;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  for (int i = 0; i < 50; ++i) uv_run(loop.get(), UV_RUN_NOWAIT);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
  log::init(saved);
  CHECK(accepted.empty());
  lines = log_lines();
  ::unlink(tmpl);
  REQUIRE(lines.size() == 2);
  CHECK(lines[1].find("warning: accept on smtp: Too many open files -- pausing 100 ms") != std::string::npos);

  // With descriptors again, the listener resumes on its own and takes the client.
  ev::Timer deadline(loop);
  bool expired = false;
  deadline.start(20000, [&] { expired = true; });
  while (accepted.size() < 1 && !expired) uv_run(loop.get(), UV_RUN_ONCE);
  CHECK(accepted.size() == 1);
}

TEST_CASE("helper packets: parse_packet takes only what encode_packet writes", "[sockets][packet]") {
  const std::vector<std::pair<std::string, std::string>> kv = {
      {"user", "sys"}, {"received", "Received: from x\n\tby y\n"}, {"odd", std::string("a\\b\0c", 5)}, {"empty", ""}};
  std::string p = net::encode_packet("DELIVER", kv);
  std::optional<net::PacketFields> f = net::parse_packet(p, "DELIVER");
  REQUIRE(f);
  CHECK(f->size() == kv.size());
  for (const auto& [k, v] : kv) CHECK(f->at(k) == v);
  CHECK_FALSE(net::parse_packet(p, "DONE"));
  // Found by tests/fuzz/delivery_helper_packet: a repeated key (the last one won),
  // an empty key, and a raw LF or NUL were accepted, though no encoder writes them.
  CHECK_FALSE(net::parse_packet("DONE\tcode=250\tcode=550", "DONE"));
  CHECK_FALSE(net::parse_packet("DONE\t=250", "DONE"));
  CHECK_FALSE(net::parse_packet("DONE\ttext=a\nb", "DONE"));
  CHECK_FALSE(net::parse_packet(std::string("DONE\ttext=a\0b", 13), "DONE"));
  CHECK_FALSE(net::parse_packet("DONE\ttext=a\\", "DONE"));
  CHECK_FALSE(net::parse_packet("DONE\ttext=a\\x", "DONE"));
  CHECK_FALSE(net::parse_packet("DONE\tnovalue", "DONE"));
  CHECK(net::parse_packet("DONE", "DONE"));
  CHECK(net::parse_packet("DONE\tk=", "DONE"));
}
