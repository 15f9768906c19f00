#include "common/maildir.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/mime.h"
#include "common/text.h"

namespace tern::common::maildir {
namespace {

constexpr size_t kWriteBuffer = 64 << 10;

bool is_flag_letter(char c) {
  return c == 'D' || c == 'F' || c == 'P' || c == 'R' || c == 'S' || c == 'T' || (c >= 'a' && c <= 'z');
}

std::string hostname() {
  char h[HOST_NAME_MAX + 1] = {0};
  if (::gethostname(h, sizeof h - 1) != 0 || !h[0]) return "localhost";
  return h;
}

Status mkdir_if_missing(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0) return {};
  if (errno != EEXIST) return errno_error("mkdir " + path, errno);
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return errno_error("stat " + path, errno);
  if (!S_ISDIR(st.st_mode)) return make_error(ErrorKind::kExists, path + " exists and is not a directory");
  return {};
}

Status fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error("open " + dir, errno);
  if (::fsync(fd.get()) < 0) return errno_error("fsync " + dir, errno);
  return {};
}

Error io_error(const std::string& what, int err) {
  Error e = errno_error(what, err);
  // A full disk or quota is temporary for the sender (RFC 3463 X.3.1 / X.2.2).
  if (err == ENOSPC || err == EDQUOT) e.kind = ErrorKind::kTemp;
  return e;
}

}  // namespace

FileName parse_name(std::string_view name) {
  FileName f;
  size_t colon = name.find(':');
  std::string_view base = name.substr(0, colon);
  f.base = std::string(base);
  if (colon != std::string_view::npos) {
    std::string_view info = name.substr(colon + 1);
    if (info.size() >= 2 && info[0] == '2' && info[1] == ',') {
      f.has_info = true;
      f.flags = normalize_flags(info.substr(2));
    }
  }
  // ,S=123 and ,W=456 fields after the first '.'-separated part (Maildir++/Dovecot).
  for (const std::string& field : split(base, ',')) {
    if (field.size() > 2 && field[1] == '=') {
      std::optional<uint64_t> v = parse_u64(std::string_view(field).substr(2));
      if (field[0] == 'S') f.size = v;
      if (field[0] == 'W') f.vsize = v;
    }
  }
  return f;
}

std::string normalize_flags(std::string_view flags) {
  std::string out;
  for (char c : flags) {
    if (is_flag_letter(c) && out.find(c) == std::string::npos) out += c;
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string make_name(std::string_view base, std::string_view flags) {
  return std::string(base) + ":2," + normalize_flags(flags);
}

bool valid_entry_name(std::string_view name) {
  if (name.empty() || name[0] == '.') return false;
  for (char c : name) {
    if (c == '/' || c == '\0') return false;
  }
  return true;
}

std::string sanitize_host(std::string_view host) {
  std::string out;
  for (char c : host) {
    if (c == '/') {
      out += "\\057";
    } else if (c == ':') {
      out += "\\072";
    } else if (c == ',') {
      out += "\\054";  // ',' separates the S=/W= fields
    } else {
      out += c;
    }
  }
  return out;
}

std::string unique_base(uint64_t size, uint64_t vsize) {
  static std::atomic<uint64_t> counter{0};
  static const std::string host = sanitize_host(hostname());
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  uint64_t q = ++counter;
  char buf[128];
  std::snprintf(buf, sizeof buf, "%lld.M%06ldP%dQ%llu.", static_cast<long long>(tv.tv_sec),
                static_cast<long>(tv.tv_usec), static_cast<int>(::getpid()), static_cast<unsigned long long>(q));
  return buf + host + ",S=" + std::to_string(size) + ",W=" + std::to_string(vsize);
}

std::string keyed_base(uint64_t seconds, std::string_view token) {
  static const std::string host = sanitize_host(hostname());
  return std::to_string(seconds) + ".K" + std::string(token) + "." + host;
}

Result<std::string> folder_path(const std::string& root, std::string_view folder) {
  if (folder.empty() || iequals(folder, "INBOX")) return root;
  // Limits: a folder name is a path component; 200 bytes leaves room under NAME_MAX.
  if (folder.size() > 200) return make_error(ErrorKind::kDenied, "folder name too long");
  std::string dir = ".";
  for (std::string_view part : split(folder, '/')) {
    if (part.empty() || part == "." || part == ".." || part[0] == '.') {
      return make_error(ErrorKind::kDenied, "invalid folder name '" + log_escape(folder, 64) + "'");
    }
    for (unsigned char c : part) {
      if (c < 0x20 || c == 0x7f || c == '.' || c == '\\') {
        return make_error(ErrorKind::kDenied, "invalid folder name '" + log_escape(folder, 64) + "'");
      }
    }
    if (dir.size() > 1) dir += '.';
    dir += part;
  }
  return root + "/" + dir;
}

std::optional<std::string> folder_name(std::string_view dirname) {
  if (dirname.size() < 2 || dirname[0] != '.' || dirname == "..") return std::nullopt;
  std::string out(dirname.substr(1));
  for (char& c : out) {
    if (c == '.') c = '/';
  }
  return out;
}

Status create(const std::string& path, bool is_folder) {
  if (Status s = mkdir_if_missing(path, 0700); !s) return s;
  for (const char* sub : {"/tmp", "/new", "/cur"}) {
    if (Status s = mkdir_if_missing(path + sub, 0700); !s) return s;
  }
  if (is_folder) {
    std::string marker = path + "/maildirfolder";
    UniqueFd fd(::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return errno_error("create " + marker, errno);
  }
  return {};
}

Status create_root(const std::string& root) {
  // The subscriptions file is written last: while it is missing the root is new
  // (or being made by a concurrent delivery to the same user), and every caller
  // makes the folders, idempotently, so none returns before they exist. Once it
  // exists, a folder the user deleted is not brought back.
  struct stat st;
  const std::string sub_path = root + "/subscriptions";
  if (::stat((root + "/cur").c_str(), &st) == 0 && ::stat(sub_path.c_str(), &st) == 0) return {};
  if (Status s = create(root, false); !s) return s;
  std::string subs;
  for (const char* f : kSpecialFolders) {
    Result<std::string> p = folder_path(root, f);
    if (!p) return p.take_error();
    if (Status s = create(*p, true); !s) return s;
    subs += f;
    subs += '\n';
  }
  // Dovecot's and Courier's subscription list, so IMAP clients show the folders.
  UniqueFd fd(::open(sub_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd) {
    if (::write(fd.get(), subs.data(), subs.size()) != static_cast<ssize_t>(subs.size())) {
      return errno_error("write " + sub_path, errno);
    }
  } else if (errno != EEXIST) {
    return errno_error("create " + sub_path, errno);
  }
  return {};
}

Result<std::vector<std::string>> list_folders(const std::string& root) {
  std::vector<std::string> out;
  DIR* d = ::opendir(root.c_str());
  if (!d) return errno_error("opendir " + root, errno);
  while (struct dirent* e = ::readdir(d)) {
    std::optional<std::string> name = folder_name(e->d_name);
    if (!name) continue;
    struct stat st;
    if (::stat((root + "/" + e->d_name + "/cur").c_str(), &st) == 0 && S_ISDIR(st.st_mode)) out.push_back(*name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Status check_within(const std::string& home, const std::string& path) {
  char rhome[PATH_MAX];
  if (!::realpath(home.c_str(), rhome)) return errno_error("realpath " + home, errno);
  std::string probe = path;
  char rp[PATH_MAX];
  while (!::realpath(probe.c_str(), rp)) {
    if (errno != ENOENT) return errno_error("realpath " + probe, errno);
    size_t slash = probe.rfind('/');
    if (slash == std::string::npos || slash == 0) return errno_error("realpath " + path, ENOENT);
    probe.resize(slash);
  }
  std::string h = rhome, r = rp;
  if (r == h || (r.size() > h.size() && r.compare(0, h.size(), h) == 0 && (h == "/" || r[h.size()] == '/'))) return {};
  return make_error(ErrorKind::kDenied, "mail path " + path + " resolves to " + r + ", outside the home directory " + h);
}

Status DirSyncer::sync(const std::string& dir) {
  std::unique_lock<std::mutex> lk(mu_);
  State& st = dirs_[dir];
  const uint64_t mine = ++st.requested;
  while (st.synced < mine) {
    if (!st.running) {
      st.running = true;
      const uint64_t target = st.requested;
      lk.unlock();
      Status s = fsync_dir(dir);
      lk.lock();
      st.running = false;
      st.synced = target;
      st.last_errno = s ? 0 : EIO;
      ++fsyncs_;
      cv_.notify_all();
      if (!s) return s;
    } else {
      cv_.wait(lk);
    }
  }
  if (st.last_errno) return make_error(ErrorKind::kTemp, "fsync " + dir + " failed");
  return {};
}

uint64_t DirSyncer::fsyncs() const {
  std::lock_guard<std::mutex> lk(mu_);
  return fsyncs_;
}

DirSyncer& DirSyncer::global() {
  static DirSyncer s;
  return s;
}

Result<Delivery> Delivery::begin(const std::string& maildir) {
  Delivery d;
  d.maildir_ = maildir;
  for (int attempt = 0; attempt < 10; ++attempt) {
    d.tmp_path_ = maildir + "/tmp/" + unique_base(0, 0);
    int fd = ::open(d.tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
      d.fd_.reset(fd);
      d.buf_.reserve(kWriteBuffer);
      return d;
    }
    if (errno != EEXIST) return io_error("create " + d.tmp_path_, errno);
  }
  return make_error(ErrorKind::kTemp, "cannot create a unique file in " + maildir + "/tmp");
}

Delivery::Delivery(Delivery&& o) noexcept
    : maildir_(std::move(o.maildir_)), tmp_path_(std::move(o.tmp_path_)), fd_(std::move(o.fd_)),
      buf_(std::move(o.buf_)), size_(o.size_), bare_lfs_(o.bare_lfs_), last_cr_(o.last_cr_), done_(std::exchange(o.done_, true)) {}

Delivery& Delivery::operator=(Delivery&& o) noexcept {
  if (this != &o) {
    abort();
    maildir_ = std::move(o.maildir_);
    tmp_path_ = std::move(o.tmp_path_);
    fd_ = std::move(o.fd_);
    buf_ = std::move(o.buf_);
    size_ = o.size_;
    bare_lfs_ = o.bare_lfs_;
    last_cr_ = o.last_cr_;
    done_ = std::exchange(o.done_, true);
  }
  return *this;
}

Delivery::~Delivery() { abort(); }

void Delivery::abort() {
  if (done_) return;
  done_ = true;
  fd_.reset();
  if (!tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

Status Delivery::flush() {
  size_t off = 0;
  while (off < buf_.size()) {
    ssize_t n = ::write(fd_.get(), buf_.data() + off, buf_.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("write " + tmp_path_, errno);
    }
    off += static_cast<size_t>(n);
  }
  buf_.clear();
  return {};
}

Status Delivery::write(std::string_view data) {
  if (done_) return make_error(ErrorKind::kTemp, "write after the delivery ended");
  size_ += data.size();
  bare_lfs_ += mime::count_bare_lf(data, last_cr_);
  if (!data.empty()) last_cr_ = data.back() == '\r';
  if (buf_.size() + data.size() > kWriteBuffer) {
    if (Status s = flush(); !s) return s;
    if (data.size() >= kWriteBuffer) {
      buf_.assign(data);
      return flush();
    }
  }
  buf_.append(data);
  return {};
}

Result<std::string> Delivery::commit(Fsync fsync, DirSyncer* syncer, std::optional<std::string_view> flags,
                                     Into into) {
  if (done_) return make_error(ErrorKind::kTemp, "commit after the delivery ended");
  if (Status s = flush(); !s) return s.take_error();
  if (fsync == Fsync::kYes && ::fsync(fd_.get()) < 0) return io_error("fsync " + tmp_path_, errno);
  if (::close(fd_.release()) < 0) return io_error("close " + tmp_path_, errno);
  const bool in_cur = flags && into == Into::kByFlags;
  if (!in_cur && flags && flags->empty()) flags.reset();  // new/: a plain name without info
  const char* sub = in_cur ? "/cur/" : "/new/";
  for (int attempt = 0; attempt < 10; ++attempt) {
    std::string base = unique_base(size_, vsize());
    std::string name = flags ? make_name(base, *flags) : base;
    std::string final_path = maildir_ + sub + name;
    if (::renameat2(AT_FDCWD, tmp_path_.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) == 0) {
      done_ = true;
      if (fsync == Fsync::kYes) {
        std::string dir = maildir_ + (in_cur ? "/cur" : "/new");
        Status s = syncer ? syncer->sync(dir) : fsync_dir(dir);
        if (!s) {
          // The name may not be durable: take the message back rather than
          // acknowledge something a crash could lose.
          ::unlink(final_path.c_str());
          return s.take_error();
        }
      }
      return name;
    }
    if (errno == EINVAL || errno == ENOSYS) {
      // A filesystem without RENAME_NOREPLACE: the spec's link() + unlink().
      if (::link(tmp_path_.c_str(), final_path.c_str()) == 0) {
        ::unlink(tmp_path_.c_str());
        done_ = true;
        if (fsync == Fsync::kYes) {
          std::string dir = maildir_ + (in_cur ? "/cur" : "/new");
          Status s = syncer ? syncer->sync(dir) : fsync_dir(dir);
          if (!s) {
            ::unlink(final_path.c_str());
            return s.take_error();
          }
        }
        return name;
      }
    }
    if (errno != EEXIST) return io_error("rename " + tmp_path_ + " to " + final_path, errno);
  }
  return make_error(ErrorKind::kTemp, "cannot find a unique name in " + maildir_ + sub);
}

Result<Delivery::Committed> Delivery::commit_once(const std::string& name, Fsync fsync, DirSyncer* syncer) {
  if (done_) return make_error(ErrorKind::kTemp, "commit after the delivery ended");
  if (!valid_entry_name(name)) return make_error(ErrorKind::kTemp, "invalid maildir name " + name);
  if (Status s = flush(); !s) return s.take_error();
  if (fsync == Fsync::kYes && ::fsync(fd_.get()) < 0) return io_error("fsync " + tmp_path_, errno);
  if (::close(fd_.release()) < 0) return io_error("close " + tmp_path_, errno);
  const std::string dir = maildir_ + "/new";
  const std::string final_path = dir + "/" + name;
  Committed c{name, false};
  if (::renameat2(AT_FDCWD, tmp_path_.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) == 0) {
    done_ = true;
  } else if (errno == EEXIST) {
    c.existed = true;
    abort();  // unlinks our tmp file: the copy in new/ is the message
  } else if (errno == EINVAL || errno == ENOSYS) {
    // A filesystem without RENAME_NOREPLACE: the spec's link() + unlink().
    if (::link(tmp_path_.c_str(), final_path.c_str()) == 0) {
      ::unlink(tmp_path_.c_str());
      done_ = true;
    } else if (errno == EEXIST) {
      c.existed = true;
      abort();
    } else {
      return io_error("link " + tmp_path_ + " to " + final_path, errno);
    }
  } else {
    return io_error("rename " + tmp_path_ + " to " + final_path, errno);
  }
  if (fsync == Fsync::kYes) {
    Status s = syncer ? syncer->sync(dir) : fsync_dir(dir);
    if (!s) {
      // The name may not be durable. A copy we renamed goes (a crash could lose it,
      // so it must not be acknowledged); one an earlier attempt left stays, and the
      // retry of this failure finds it again.
      if (!c.existed) ::unlink(final_path.c_str());
      return s.take_error();
    }
  }
  return c;
}

Result<std::vector<Entry>> list(const std::string& maildir) {
  std::vector<Entry> out;
  for (bool in_new : {true, false}) {
    std::string dir = maildir + (in_new ? "/new" : "/cur");
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
      if (errno == ENOENT) continue;
      return errno_error("opendir " + dir, errno);
    }
    while (struct dirent* e = ::readdir(d)) {
      if (!valid_entry_name(e->d_name)) continue;
      Entry en;
      en.in_new = in_new;
      en.name = e->d_name;
      en.parsed = parse_name(en.name);
      out.push_back(std::move(en));
    }
    ::closedir(d);
  }
  return out;
}

Result<unsigned> clean_tmp(const std::string& maildir, int64_t max_age_seconds) {
  std::string dir = maildir + "/tmp";
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return 0u;
    return errno_error("opendir " + dir, errno);
  }
  const time_t now = ::time(nullptr);
  unsigned removed = 0;
  while (struct dirent* e = ::readdir(d)) {
    if (!valid_entry_name(e->d_name)) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) continue;
    if (now - st.st_mtime > max_age_seconds && ::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

Result<std::string> set_flags(const std::string& maildir, const Entry& entry, std::string_view flags) {
  std::string name = make_name(entry.parsed.base, flags);
  if (!entry.in_new && name == entry.name) return name;
  std::string from = entry.path(maildir), to = maildir + "/cur/" + name;
  if (::rename(from.c_str(), to.c_str()) < 0) {
    if (errno == ENOENT) return make_error(ErrorKind::kNotFound, "rename " + from + ": gone");
    return io_error("rename " + from + " to " + to, errno);
  }
  return name;
}

}  // namespace tern::common::maildir
