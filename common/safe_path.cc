#include "common/safe_path.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>
#include <vector>

namespace tern::common {
namespace {

// A symlink chain longer than this is a loop or a trick (Linux stops at 40).
constexpr int kMaxLinks = 16;

std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    if (j > i) out.emplace_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// Why root must not create or open entries in a directory with this stat, or ""
// when it may. `owner` may own it besides root.
std::string untrusted_reason(const struct stat& st, const DirOwner& owner) {
  if (st.st_uid != 0 && !(owner.uid != 0 && st.st_uid == owner.uid)) {
    return "is owned by uid " + std::to_string(st.st_uid);
  }
  // A sticky directory (/tmp) lets others add names but not replace ours.
  const bool sticky = (st.st_mode & S_ISVTX) != 0;
  if ((st.st_mode & S_IWOTH) && !sticky) return "is writable by others";
  if ((st.st_mode & S_IWGRP) && !sticky && st.st_gid != 0 && !(owner.uid != 0 && st.st_gid == owner.gid)) {
    return "is writable by group " + std::to_string(st.st_gid);
  }
  return "";
}

Error refuse(const std::string& path, const std::string& what, const std::string& why) {
  return make_error(ErrorKind::kPerm, "refusing " + path + ": " + what + " " + why +
                                          " (a less privileged user could redirect it; fix its owner or mode)");
}

struct Walked {
  UniqueFd fd;
  bool created = false;              // the last component was made by this walk
  bool parent_owned_by_owner = false;  // the last component's parent is owner's, not root's
};

Result<Walked> walk(const std::string& path, const DirOwner& owner, bool create) {
  const bool root = ::geteuid() == 0;
  if (path.empty()) return make_error(ErrorKind::kConfig, "empty directory path");
  if (root && path[0] != '/') {
    return make_error(ErrorKind::kConfig, path + ": a directory path must be absolute");
  }
  UniqueFd cur(::open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return errno_error("open " + std::string(path[0] == '/' ? "/" : "."), errno);
  std::string where = path[0] == '/' ? "/" : "";
  std::deque<std::string> pending;
  for (std::string& c : split_path(path)) pending.push_back(std::move(c));
  Walked out;
  int links = 0;
  while (!pending.empty()) {
    std::string name = std::move(pending.front());
    pending.pop_front();
    if (name == ".") continue;
    const bool last = pending.empty();
    struct stat pst;
    if (::fstat(cur.get(), &pst) < 0) return errno_error("stat " + where, errno);
    if (root) {
      std::string why = untrusted_reason(pst, owner);
      if (!why.empty()) return refuse(path, "its parent " + (where.empty() ? std::string(".") : where), why);
    }
    int fd = ::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    bool made = false;
    if (fd < 0 && errno == ENOENT && create && name != "..") {
      // Made closed (0700 for the target, whose mode comes next through its fd).
      if (::mkdirat(cur.get(), name.c_str(), last ? 0700 : 0755) == 0) {
        made = true;
      } else if (errno != EEXIST) {
        return errno_error("mkdir " + where + name, errno);
      }
      fd = ::openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      const int err = errno;
      struct stat lst;
      if ((err == ELOOP || err == ENOTDIR) && ::fstatat(cur.get(), name.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!S_ISLNK(lst.st_mode)) {
          return make_error(ErrorKind::kExists, where + name + " exists and is not a directory");
        }
        // Only a link nobody but root can change is followed; its parent was
        // checked above.
        if (root && lst.st_uid != 0) {
          return refuse(path, where + name, "is a symbolic link owned by uid " + std::to_string(lst.st_uid));
        }
        if (++links > kMaxLinks) return make_error(ErrorKind::kConfig, path + ": too many symbolic links");
        std::string target(static_cast<size_t>(lst.st_size > 0 ? lst.st_size : 4096) + 1, '\0');
        ssize_t n = ::readlinkat(cur.get(), name.c_str(), target.data(), target.size());
        if (n < 0) return errno_error("readlink " + where + name, errno);
        if (static_cast<size_t>(n) >= target.size()) return make_error(ErrorKind::kTemp, where + name + " changed while read");
        target.resize(static_cast<size_t>(n));
        std::vector<std::string> parts = split_path(target);
        for (auto it = parts.rbegin(); it != parts.rend(); ++it) pending.push_front(*it);
        if (!target.empty() && target[0] == '/') {
          cur.reset(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
          if (!cur) return errno_error("open /", errno);
          where = "/";
        }
        if (parts.empty() && last) {
          return make_error(ErrorKind::kConfig, where + name + ": symbolic link to nothing");
        }
        continue;
      }
      return errno_error("open " + where + name, err);
    }
    if (last) {
      out.created = made;
      out.parent_owned_by_owner = pst.st_uid != 0;
    }
    cur.reset(fd);
    where += name;
    where += '/';
  }
  out.fd = std::move(cur);
  return out;
}

}  // namespace

Result<UniqueFd> make_directory_safely(const std::string& path, const DirOwner& owner, mode_t mode) {
  const bool root = ::geteuid() == 0;
  Result<Walked> w = walk(path, owner, true);
  if (!w) return w.take_error();
  struct stat st;
  if (::fstat(w->fd.get(), &st) < 0) return errno_error("stat " + path, errno);
  if (root) {
    // In a directory its owner controls, an existing entry may have been put there
    // by that owner: hand over only what is already theirs, or root's.
    if (w->parent_owned_by_owner && !w->created && st.st_uid != 0 && st.st_uid != owner.uid) {
      return refuse(path, path, "is owned by uid " + std::to_string(st.st_uid) + ", not by uid " +
                                    std::to_string(owner.uid) + " or root");
    }
    if ((st.st_uid != owner.uid || st.st_gid != owner.gid) && ::fchown(w->fd.get(), owner.uid, owner.gid) < 0) {
      return errno_error("chown " + path, errno);
    }
  }
  // After the chown, which may clear set-id bits.
  if ((st.st_mode & 07777) != mode || (root && (st.st_uid != owner.uid || st.st_gid != owner.gid))) {
    if (::fchmod(w->fd.get(), mode) < 0) return errno_error("chmod " + path, errno);
  }
  return std::move(w->fd);
}

Result<UniqueFd> open_directory_safely(const std::string& path, const DirOwner& owner) {
  Result<Walked> w = walk(path, owner, false);
  if (!w) return w.take_error();
  return std::move(w->fd);
}

Status check_trusted_directory(int dir_fd, const std::string& path) {
  if (::geteuid() != 0) return {};
  struct stat st;
  if (::fstat(dir_fd, &st) < 0) return errno_error("stat " + path, errno);
  std::string why = untrusted_reason(st, DirOwner{});
  if (!why.empty()) return refuse(path, path, why);
  return {};
}

}  // namespace tern::common
