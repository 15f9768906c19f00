// bench/sandbox_cost: what the seccomp filters (common/sandbox.h) cost per system
// call. For each profile, a forked child enters it and times a loop of cheap calls
// that a mail daemon makes all the time (a 1-byte write and read on a pipe: two
// calls; getppid: one), against the same loop in a child without a filter.
//
//   build/bench/sandbox-cost [iterations]     (default 2,000,000)
//
// Prints nanoseconds per call with and without each profile, and the difference.
// The filter is a BPF program the kernel runs on every call; calls listed late in
// the allow-list or with argument checks (socket, clone, ioctl) cost more than
// the ones measured here, but they are rare.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/config.h"
#include "common/sandbox.h"

using namespace tern::common;

namespace {

// Runs the loop in a child (under `p`, or unfiltered) and returns ns per call.
double measure(const sandbox::Profile* p, long n, bool pipe_io) {
  int fds[2];
  if (::pipe(fds) != 0) std::exit(1);
  int out[2];
  if (::pipe(out) != 0) std::exit(1);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(out[0]);
    if (p) {
      Result<Config> cfg = Config::parse("", "bench.conf");
      if (!cfg || !sandbox::enter(*cfg, *p)) ::_exit(2);
    }
    char c = 'x';
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) {
      if (pipe_io) {
        if (::write(fds[1], &c, 1) != 1 || ::read(fds[0], &c, 1) != 1) ::_exit(3);
      } else {
        (void)::getppid();
      }
    }
    auto t1 = std::chrono::steady_clock::now();
    double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(pipe_io ? 2 * n : n);
    if (::write(out[1], &ns, sizeof ns) != sizeof ns) ::_exit(4);
    ::_exit(0);
  }
  ::close(out[1]);
  double ns = 0;
  if (::read(out[0], &ns, sizeof ns) != sizeof ns) ns = -1;
  int st = 0;
  ::waitpid(pid, &st, 0);
  ::close(out[0]);
  ::close(fds[0]);
  ::close(fds[1]);
  return ns;
}

}  // namespace

int main(int argc, char** argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 2000000;
  std::printf("%-8s %-14s %10s %10s %10s\n", "profile", "loop", "none ns", "filter ns", "cost ns");
  for (sandbox::Profile p : {sandbox::Profile::kLogin, sandbox::Profile::kWorker, sandbox::Profile::kMta}) {
    for (bool pipe_io : {true, false}) {
      // Best of three: the machine is shared.
      double base = 1e18, with = 1e18;
      for (int r = 0; r < 3; ++r) {
        base = std::min(base, measure(nullptr, n, pipe_io));
        with = std::min(with, measure(&p, n, pipe_io));
      }
      std::printf("%-8s %-14s %10.1f %10.1f %10.1f\n", sandbox::profile_name(p), pipe_io ? "pipe write+read" : "getppid",
                  base, with, with - base);
    }
  }
  return 0;
}
