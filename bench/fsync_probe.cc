// fsync_probe: what does durable storage of one queued message cost on this disk?
// Compares (a) a file per message: create, write, fsync, fsync the directory, and
// (b) appending to a shared segment file + fdatasync, and (c) (b) with N writers'
// records sharing one fdatasync (group commit). Prints microseconds per message.
// Used to choose the queue's body storage (DESIGN.md §3); not part of the tests.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

static double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/var/tmp/tern-fsync-probe";
  int n = argc > 2 ? std::atoi(argv[2]) : 300;
  size_t size = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 1024;
  ::mkdir(dir.c_str(), 0755);
  std::string body(size, 'x');
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);

  double t0 = now_us();
  for (int i = 0; i < n; ++i) {
    std::string p = dir + "/f" + std::to_string(i);
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (::write(fd, body.data(), body.size()) < 0) return 1;
    ::fsync(fd);
    ::close(fd);
    ::fsync(dfd);
  }
  double per_file = (now_us() - t0) / n;

  std::string seg = dir + "/segment";
  int sfd = ::open(seg.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  t0 = now_us();
  for (int i = 0; i < n; ++i) {
    if (::write(sfd, body.data(), body.size()) < 0) return 1;
    ::fdatasync(sfd);
  }
  double per_append = (now_us() - t0) / n;

  const int group = 16;
  t0 = now_us();
  for (int i = 0; i < n; i += group) {
    for (int k = 0; k < group; ++k) {
      if (::write(sfd, body.data(), body.size()) < 0) return 1;
    }
    ::fdatasync(sfd);
  }
  double per_group = (now_us() - t0) / n;

  std::printf("size=%zu n=%d  file+fsync+dirfsync: %.0f us/msg   append+fdatasync: %.0f us/msg   "
              "append, one fdatasync per %d: %.0f us/msg\n",
              size, n, per_file, per_append, group, per_group);
  for (int i = 0; i < n; ++i) ::unlink((dir + "/f" + std::to_string(i)).c_str());
  ::unlink(seg.c_str());
  return 0;
}
