#include "common/fault.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace tern::common::fault {

#ifndef TERN_FAULT_INJECTION
void point(const char*) {}
#else
void point(const char* name) {
  static const char* dir = std::getenv("TERN_FAULT_DIR");
  if (!dir || !*dir) return;
  const std::string armed = std::string(dir) + "/" + name;
  if (const char* act = std::getenv("TERN_FAULT_ACTION"); act && std::strcmp(act, "exec") == 0) {
    // What an attacker running code here would try first (the sandbox tests). Only
    // access(): a sandboxed login process may not unlink or create files; the
    // test disarms the point itself.
    if (::access(armed.c_str(), F_OK) != 0) return;
    char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
    ::execve("/bin/true", argv, environ);
    ::_exit(111);  // exec refused with an error, not by the filter
  }
  if (::unlink(armed.c_str()) != 0) return;  // not armed, or another process took it
  const std::string hit = armed + "." + std::to_string(::getpid());
  int fd = ::open(hit.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) ::close(fd);
  ::kill(::getpid(), SIGSTOP);
}

#endif

}  // namespace tern::common::fault
