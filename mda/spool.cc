#include "mda/spool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tern::mda {

using common::Status;

void MessageSpool::append(std::string_view in) {
  received_ += in.size();
  if (too_big() || !error_) return;
  std::string lf;
  lf.reserve(in.size());
  for (char c : in) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') {
        lf += '\n';
        continue;
      }
      lf += '\r';  // a bare CR is kept as it is
    }
    if (c == '\r') {
      pending_cr_ = true;
    } else {
      lf += c;
    }
  }
  store(lf);
}

void MessageSpool::store(std::string_view lf) {
  stored_ += lf.size();
  if (!fd_ && mem_.size() + lf.size() <= memory_limit_) {
    mem_.append(lf);
    return;
  }
  if (!fd_) {
    int fd = ::open(temp_dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      error_ = common::errno_error("create a temporary file in " + temp_dir_, errno);
      return;
    }
    fd_.reset(fd);
    out_ = std::move(mem_);
    mem_.clear();
  }
  out_.append(lf);
  if (out_.size() >= (256u << 10)) {
    const char* p = out_.data();
    size_t left = out_.size();
    while (left) {
      ssize_t n = ::write(fd_.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = common::errno_error("write to the temporary file in " + temp_dir_, errno);
        out_.clear();
        return;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    out_.clear();
  }
}

Status MessageSpool::finish() {
  if (pending_cr_) {
    pending_cr_ = false;
    if (!too_big() && error_) store("\r");
  }
  if (fd_ && !out_.empty() && error_) {
    std::string rest = std::move(out_);
    out_.clear();
    const char* p = rest.data();
    size_t left = rest.size();
    while (left) {
      ssize_t n = ::write(fd_.get(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = common::errno_error("write to the temporary file in " + temp_dir_, errno);
        break;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  return error_;
}

Status MessageSpool::read(const std::function<Status(std::string_view)>& fn) const {
  if (!fd_) return mem_.empty() ? Status() : fn(mem_);
  std::string buf(256u << 10, '\0');
  off_t off = 0;
  while (static_cast<uint64_t>(off) < stored_) {
    ssize_t n = ::pread(fd_.get(), buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("read the temporary file", errno);
    }
    if (n == 0) break;
    if (Status s = fn(std::string_view(buf.data(), static_cast<size_t>(n))); !s) return s;
    off += n;
  }
  return {};
}

common::Result<common::UniqueFd> MessageSpool::share_fd() const {
  if (fd_) {
    int d = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
    if (d < 0) return common::errno_error("dup", errno);
    return common::UniqueFd(d);
  }
  common::UniqueFd m(::memfd_create("tern-mda-message", MFD_CLOEXEC));
  if (!m) return common::errno_error("memfd_create", errno);
  size_t off = 0;
  while (off < mem_.size()) {
    ssize_t n = ::write(m.get(), mem_.data() + off, mem_.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("write memfd", errno);
    }
    off += static_cast<size_t>(n);
  }
  return m;
}

MessageSpool MessageSpool::from_fd(common::UniqueFd fd, uint64_t size) {
  MessageSpool s("", 0);
  s.fd_ = std::move(fd);
  s.stored_ = size;
  s.received_ = size;
  return s;
}

std::string MessageSpool::head(size_t n) const {
  if (!fd_) return mem_.substr(0, n);
  std::string buf(n, '\0');
  ssize_t got = ::pread(fd_.get(), buf.data(), n, 0);
  buf.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return buf;
}

}  // namespace tern::mda
