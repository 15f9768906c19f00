#include "common/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace tern::common::fault {

#ifndef TERN_FAULT_INJECTION
void point(const char*) {}
#else
void point(const char* name) {
  static const char* dir = std::getenv("TERN_FAULT_DIR");
  if (!dir || !*dir) return;
  const std::string armed = std::string(dir) + "/" + name;
  if (::unlink(armed.c_str()) != 0) return;  // not armed, or another process took it
  const std::string hit = armed + "." + std::to_string(::getpid());
  int fd = ::open(hit.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) ::close(fd);
  ::kill(::getpid(), SIGSTOP);
}

#endif

}  // namespace tern::common::fault
