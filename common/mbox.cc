#include "common/mbox.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace tern::common::mbox {
namespace {

constexpr size_t kWriteBuffer = 64 << 10;
constexpr std::string_view kFrom = "From ";

Error io_error(const std::string& what, int err) {
  Error e = errno_error(what, err);
  if (err == ENOSPC || err == EDQUOT) e.kind = ErrorKind::kTemp;
  return e;
}

Status write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("write " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

constexpr gid_t kNoGid = static_cast<gid_t>(-1);

// Runs a file-system call in the spool directory as we are; when it fails with
// EACCES and a privileged group is configured, once more with that group as the
// effective gid, switched back at once (Dovecot's restrict_access_use_priv_gid()).
// errno is that of the last attempt.
template <class F>
int privileged_retry(gid_t privileged_gid, F op) {
  int r = op();
  if (r >= 0 || errno != EACCES || privileged_gid == kNoGid) return r;
  const gid_t mine = ::getegid();
  if (::setegid(privileged_gid) < 0) {
    errno = EACCES;  // the saved gid is not the privileged group: as without it
    return -1;
  }
  r = op();
  const int err = errno;
  // Carrying on with the group would give it to everything that follows: a broken
  // invariant, never a recoverable error.
  if (::setegid(mine) < 0 || ::getegid() != mine) ::abort();
  errno = err;
  return r;
}

}  // namespace

std::string from_line(std::string_view sender, time_t when) {
  struct tm tm;
  ::gmtime_r(&when, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm);
  std::string s = sender.empty() ? "MAILER-DAEMON" : std::string(sender);
  // The separator line is one line: no spaces or control bytes in the sender part.
  for (char& c : s) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) c = '_';
  }
  return "From " + s + " " + date + "\n";
}

void FromQuoter::flush_held(std::string& out) {
  out.append(gts_, '>');
  out.append(kFrom.substr(0, matched_));
  gts_ = 0;
  matched_ = 0;
}

void FromQuoter::feed(std::string_view in, std::string& out) {
  for (char c : in) {
    last_ = c;
    if (!at_start_) {
      out += c;
      if (c == '\n') at_start_ = true;
      continue;
    }
    // At a line start: counting '>'s (only a count is kept, so a line of a million
    // '>' costs nothing), then matching "From ".
    if (c == '>' && matched_ == 0) {
      ++gts_;
      continue;
    }
    if (c == kFrom[matched_]) {
      if (++matched_ == kFrom.size()) {
        out += '>';
        flush_held(out);
        at_start_ = false;
      }
      continue;
    }
    flush_held(out);
    out += c;
    at_start_ = c == '\n';
  }
}

void FromQuoter::finish(std::string& out) {
  flush_held(out);
  at_start_ = true;
}

Result<Appender> Appender::begin(const std::string& path, std::string_view sender, time_t when,
                                 const LockOptions& locks) {
  Appender a;
  a.path_ = path;
  a.privileged_gid_ = locks.privileged_gid;
  const gid_t priv = locks.privileged_gid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(locks.timeout_seconds);
  auto wait_a_bit = [&]() -> bool {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return true;
  };

  if (locks.dotlock) {
    a.lock_path_ = path + ".lock";
    while (true) {
      UniqueFd lf(privileged_retry(priv, [&] {
        return ::open(a.lock_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      }));
      if (lf) {
        std::string pid = std::to_string(::getpid()) + "\n";
        (void)::write(lf.get(), pid.data(), pid.size());
        a.have_dotlock_ = true;
        break;
      }
      if (errno == EACCES || errno == EPERM || errno == EROFS) break;  // fcntl only (see header)
      if (errno != EEXIST) return io_error("create " + a.lock_path_, errno);
      struct stat st;
      if (::lstat(a.lock_path_.c_str(), &st) == 0 && ::time(nullptr) - st.st_mtime > locks.stale_seconds) {
        privileged_retry(priv, [&] { return ::unlink(a.lock_path_.c_str()); });  // left over from a crash
        continue;
      }
      if (!wait_a_bit()) return make_error(ErrorKind::kInUse, "mbox " + path + " is dotlocked by another process");
    }
  }

  // An existing mbox is opened as we are; a missing one is created exclusively (the
  // spool directory may need the privileged group for that), and one that appears
  // in between is opened on the next round.
  for (int round = 0; !a.fd_; ++round) {
    a.fd_.reset(::open(path.c_str(), O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC));
    if (a.fd_) break;
    if (errno != ENOENT || round == 3) return io_error("open " + path, errno);
    a.fd_.reset(privileged_retry(priv, [&] {
      return ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    }));
    if (!a.fd_ && errno != EEXIST) return io_error("create " + path, errno);
  }
  struct stat st;
  if (::fstat(a.fd_.get(), &st) < 0) return io_error("fstat " + path, errno);
  // Postfix local(8)'s checks: a regular file with one link (a hard link could make
  // us append to someone else's file).
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
    return make_error(ErrorKind::kDenied, "mbox " + path + " is not a regular file with one link");
  }
  if (locks.fcntl) {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    while (::fcntl(a.fd_.get(), F_OFD_SETLK, &fl) < 0) {
      if (errno != EAGAIN && errno != EACCES && errno != EINTR) return io_error("lock " + path, errno);
      if (!wait_a_bit()) return make_error(ErrorKind::kInUse, "mbox " + path + " is locked by another process");
    }
  }
  if (::fstat(a.fd_.get(), &st) < 0) return io_error("fstat " + path, errno);
  a.old_size_ = static_cast<uint64_t>(st.st_size);
  std::string head;
  if (a.old_size_ > 0) {
    // The previous message must end in a newline, or our From_ line would be glued
    // to its last line.
    char last = 0;
    if (::pread(a.fd_.get(), &last, 1, static_cast<off_t>(a.old_size_ - 1)) == 1 && last != '\n') head += "\n\n";
  }
  head += from_line(sender, when);
  a.buf_ = std::move(head);
  return a;
}

Appender::Appender(Appender&& o) noexcept
    : path_(std::move(o.path_)), lock_path_(std::move(o.lock_path_)), privileged_gid_(o.privileged_gid_),
      fd_(std::move(o.fd_)),
      have_dotlock_(std::exchange(o.have_dotlock_, false)), old_size_(o.old_size_), quoter_(o.quoter_),
      buf_(std::move(o.buf_)), done_(std::exchange(o.done_, true)) {}

Appender::~Appender() { rollback(); }

void Appender::unlock() {
  fd_.reset();  // closing the description releases the OFD lock
  if (have_dotlock_) privileged_retry(privileged_gid_, [&] { return ::unlink(lock_path_.c_str()); });
  have_dotlock_ = false;
}

void Appender::rollback() {
  if (done_) return;
  done_ = true;
  if (fd_) {
    if (::ftruncate(fd_.get(), static_cast<off_t>(old_size_)) == 0) ::fsync(fd_.get());
  }
  unlock();
}

Status Appender::flush(bool force) {
  if (!force && buf_.size() < kWriteBuffer) return {};
  Status s = write_all(fd_.get(), buf_, path_);
  buf_.clear();
  return s;
}

Status Appender::write(std::string_view data) {
  if (done_) return make_error(ErrorKind::kTemp, "write after the append ended");
  quoter_.feed(data, buf_);
  Status s = flush(false);
  if (!s) rollback();
  return s;
}

Status Appender::commit(maildir::Fsync fsync) {
  if (done_) return make_error(ErrorKind::kTemp, "commit after the append ended");
  quoter_.finish(buf_);
  if (!quoter_.ends_with_newline()) buf_ += '\n';
  buf_ += '\n';  // the empty line that ends a message
  Status s = flush(true);
  if (s && fsync == maildir::Fsync::kYes && ::fsync(fd_.get()) < 0) s = io_error("fsync " + path_, errno);
  if (!s) {
    rollback();
    return s;
  }
  done_ = true;
  unlock();
  return {};
}

Result<std::vector<Message>> read_all(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return io_error("open " + path, errno);
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("read " + path, errno);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return split(data);
}

std::vector<Message> split(std::string_view data) {
  std::vector<Message> out;
  size_t pos = 0;
  bool prev_blank = true;
  Message* cur = nullptr;
  // Drops the blank separator line that ended a message (the whole content of an
  // empty one), the same for the last message as for the others.
  auto drop_separator = [](Message* m) {
    if (!m || m->content.empty() || m->content.back() != '\n') return;
    if (m->content.size() >= 2 && m->content[m->content.size() - 2] == '\n') m->content.pop_back();
    else if (m->content == "\n") m->content.clear();
  };
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    size_t end = nl == std::string::npos ? data.size() : nl + 1;
    std::string_view line(data.data() + pos, end - pos);
    if (prev_blank && line.substr(0, 5) == kFrom) {
      drop_separator(cur);
      out.emplace_back();
      cur = &out.back();
      std::string_view rest = line.substr(5);
      if (!rest.empty() && rest.back() == '\n') rest.remove_suffix(1);
      cur->from_line = std::string(rest);
    } else if (cur) {
      size_t gts = line.find_first_not_of('>');
      if (gts != std::string_view::npos && gts > 0 && line.substr(gts, 5) == kFrom) line.remove_prefix(1);
      cur->content.append(line);
    }
    prev_blank = line == "\n";
    pos = end;
  }
  drop_separator(cur);
  return out;
}

}  // namespace tern::common::mbox
