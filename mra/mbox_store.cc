#include "mra/mbox_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <set>
#include <thread>

#include "common/mime.h"
#include "common/text.h"

namespace tern::mra {

using common::ErrorKind;
using common::UniqueFd;
using common::make_error;
using common::maildir::Fsync;

// The shared view of one mailbox file (all sessions of the worker).
struct MboxState {
  std::string name, path;
  bool known = false;  // read at least once
  ino_t ino = 0;
  off_t size = -1;
  int64_t mtime_ns = -1;
  uint32_t uid_validity = 0, uid_next = 1;
  uint64_t modseq = 0;
  std::vector<MboxMessage> msgs;
  std::map<uint32_t, uint64_t> modseqs;  // uid -> MODSEQ
  std::set<std::string> keywords;
};

namespace {

constexpr std::string_view kFrom = "From ";

bool iequal_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size() + 1) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != std::tolower(static_cast<unsigned char>(name[i]))) return false;
  }
  return line[name.size()] == ':';
}

// An IMAP keyword (RFC 3501 9: flag-keyword = atom). X-Keywords is a header of the
// message as it arrived, so anyone who sends mail can write it: a "keyword" with a
// CR or another byte no atom has would go into FETCH FLAGS as it is, and would not
// even survive our own rewrite (a trailing CR is trimmed on the next read).
bool is_keyword(std::string_view k) {
  if (k.empty()) return false;
  for (char c : k) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
    switch (c) {
      case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
        return false;
      default:
        break;
    }
  }
  return true;
}

// One of the headers we manage (and hide from clients)?
std::optional<std::string_view> managed(std::string_view line) {
  for (std::string_view n : {"Status", "X-Status", "X-UID", "X-IMAPbase", "X-Keywords", "Content-Length"}) {
    if (iequal_prefix(line, n)) return n;
  }
  return std::nullopt;
}

std::string_view value_of(std::string_view line) {
  size_t c = line.find(':');
  std::string_view v = line.substr(c + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r' || v.back() == ' ')) v.remove_suffix(1);
  return v;
}

std::optional<uint32_t> parse_u32(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v >= (1ull << 31)) return std::nullopt;
  return static_cast<uint32_t>(v);
}

int64_t parse_from_date(std::string_view from_line) {
  // "From sender Thu Nov 27 20:54:21 2026": the date is the last 24 characters.
  while (!from_line.empty() && (from_line.back() == '\n' || from_line.back() == '\r')) from_line.remove_suffix(1);
  if (from_line.size() < 5 + 24) return 0;
  std::string d(from_line.substr(from_line.size() - 24));
  struct tm tm;
  std::memset(&tm, 0, sizeof tm);
  const char* end = ::strptime(d.c_str(), "%a %b %d %H:%M:%S %Y", &tm);
  if (!end || *end) return 0;
  return static_cast<int64_t>(::timegm(&tm));
}

Status write_all_at(int fd, std::string_view data, uint64_t off, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("write " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  return {};
}

Result<std::string> read_fd(int fd, const std::string& path) {
  std::string data;
  char buf[65536];
  uint64_t off = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("read " + path, errno);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  return data;
}

Result<std::string> read_path(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return common::errno_error("open " + path, errno);
  return read_fd(fd.get(), path);
}

Status sync_fd(int fd, const std::string& path, Fsync f) {
  if (f == Fsync::kYes && ::fsync(fd) < 0) return common::errno_error("fsync " + path, errno);
  return {};
}

Status write_new_file(const std::string& path, std::string_view data, Fsync f) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return common::errno_error("create " + path, errno);
  if (Status s = write_all_at(fd.get(), data, 0, path); !s) return s;
  return sync_fd(fd.get(), path, f);
}

// The locks of common/mbox.h, held for one read-modify-write.
class Lock {
 public:
  static Result<Lock> take(const std::string& path, const common::mbox::LockOptions& o, bool create) {
    Lock l;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_seconds);
    auto wait_a_bit = [&]() -> bool {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return true;
    };
    if (o.dotlock) {
      const std::string lp = path + ".lock";
      while (true) {
        UniqueFd lf(::open(lp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (lf) {
          std::string pid = std::to_string(::getpid()) + "\n";
          (void)!::write(lf.get(), pid.data(), pid.size());
          l.dotlock_ = lp;
          break;
        }
        if (errno == EACCES || errno == EPERM || errno == EROFS) break;  // fcntl only, as tern-mda
        if (errno != EEXIST) return common::errno_error("create " + lp, errno);
        struct stat st;
        if (::lstat(lp.c_str(), &st) == 0 && ::time(nullptr) - st.st_mtime > o.stale_seconds) {
          ::unlink(lp.c_str());
          continue;
        }
        if (!wait_a_bit()) return make_error(ErrorKind::kTemp, "mbox " + path + " is dotlocked by another process");
      }
    }
    l.fd_.reset(::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600));
    if (!l.fd_) {
      if (errno == ENOENT) return make_error(ErrorKind::kNotFound, "mailbox " + path + " does not exist");
      return common::errno_error("open " + path, errno);
    }
    struct stat st;
    if (::fstat(l.fd_.get(), &st) < 0) return common::errno_error("fstat " + path, errno);
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
      return make_error(ErrorKind::kDenied, "mbox " + path + " is not a regular file with one link");
    }
    if (o.fcntl) {
      struct flock fl;
      std::memset(&fl, 0, sizeof fl);
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      while (::fcntl(l.fd_.get(), F_OFD_SETLK, &fl) < 0) {
        if (errno != EAGAIN && errno != EACCES && errno != EINTR) return common::errno_error("lock " + path, errno);
        if (!wait_a_bit()) return make_error(ErrorKind::kTemp, "mbox " + path + " is locked by another process");
      }
    }
    return l;
  }
  Lock() = default;
  Lock(Lock&& o) noexcept : fd_(std::move(o.fd_)), dotlock_(std::exchange(o.dotlock_, "")) {}
  ~Lock() {
    fd_.reset();
    if (!dotlock_.empty()) ::unlink(dotlock_.c_str());
  }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string dotlock_;
};

std::string flag_letters_status(const MboxMessage& m) {
  std::string s;
  if (std::find(m.flags.begin(), m.flags.end(), "\\Seen") != m.flags.end()) s += 'R';
  if (m.old) s += 'O';
  return s;
}

std::string flag_letters_xstatus(const MboxMessage& m) {
  std::string s;
  auto has = [&](const char* f) { return std::find(m.flags.begin(), m.flags.end(), f) != m.flags.end(); };
  if (has("\\Answered")) s += 'A';
  if (has("\\Flagged")) s += 'F';
  if (has("\\Draft")) s += 'T';
  if (has("\\Deleted")) s += 'D';
  return s;
}

bool is_system_flag(const std::string& f) { return !f.empty() && f[0] == '\\'; }

// Canonical spelling of a flag ("\\seen" -> "\\Seen").
std::string canon_flag(const std::string& f) {
  for (const char* s : {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}) {
    if (common::iequals(f, s)) return s;
  }
  return f;
}

SpecialUse special_use_of(const std::string& name) {
  if (name == "Drafts") return SpecialUse::kDrafts;
  if (name == "Junk") return SpecialUse::kJunk;
  if (name == "Sent") return SpecialUse::kSent;
  if (name == "Trash") return SpecialUse::kTrash;
  if (name == "Archive") return SpecialUse::kArchive;
  return SpecialUse::kNone;
}

}  // namespace

// --- the file format ------------------------------------------------------------------

namespace mboxfmt {

std::vector<MboxMessage> parse(const std::string& data) {
  std::vector<MboxMessage> out;
  // Message starts: "From " at the start of the file or after an empty line.
  std::vector<uint64_t> starts;
  size_t pos = 0;
  bool prev_blank = true;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    size_t end = nl == std::string::npos ? data.size() : nl + 1;
    std::string_view line(data.data() + pos, end - pos);
    if (prev_blank && line.substr(0, 5) == kFrom) starts.push_back(pos);
    prev_blank = line == "\n";
    pos = end;
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    MboxMessage m;
    m.offset = starts[i];
    m.end = i + 1 < starts.size() ? starts[i + 1] : data.size();
    size_t nl = data.find('\n', m.offset);
    m.header_off = nl == std::string::npos || nl + 1 > m.end ? m.end : nl + 1;
    m.date = parse_from_date(std::string_view(data).substr(m.offset, m.header_off - m.offset));
    // The header: lines up to the first empty one.
    size_t p = m.header_off;
    m.body_off = m.end;
    std::string status, xstatus;
    while (p < m.end) {
      size_t e = data.find('\n', p);
      e = e == std::string::npos || e + 1 > m.end ? m.end : e + 1;
      std::string_view line(data.data() + p, e - p);
      if (line == "\n" || line == "\r\n") {
        m.body_off = e;
        break;
      }
      if (auto n = managed(line)) {
        std::string_view v = value_of(line);
        if (*n == "Status") status = v;
        else if (*n == "X-Status") xstatus = v;
        else if (*n == "X-UID") m.uid = parse_u32(v).value_or(0);
        else if (*n == "X-IMAPbase") {
          std::vector<std::string> parts = common::split(v, ' ');
          std::vector<std::string> nz;
          for (auto& x : parts) {
            if (!x.empty()) nz.push_back(x);
          }
          if (nz.size() >= 2) {
            auto a = parse_u32(nz[0]), b = parse_u32(nz[1]);
            if (a && b) {
              m.has_base = true;
              m.base_validity = *a;
              m.base_next = *b;
            }
          }
        } else if (*n == "X-Keywords") {
          for (const std::string& k : common::split(v, ' ')) {
            if (is_keyword(k) && std::find(m.flags.begin(), m.flags.end(), k) == m.flags.end()) {
              m.flags.push_back(k);
            }
          }
        }
      }
      p = e;
    }
    std::vector<std::string> sys;
    if (status.find('R') != std::string::npos) sys.push_back("\\Seen");
    m.old = status.find('O') != std::string::npos;
    if (xstatus.find('A') != std::string::npos) sys.push_back("\\Answered");
    if (xstatus.find('F') != std::string::npos) sys.push_back("\\Flagged");
    if (xstatus.find('T') != std::string::npos) sys.push_back("\\Draft");
    if (xstatus.find('D') != std::string::npos) sys.push_back("\\Deleted");
    m.flags.insert(m.flags.begin(), sys.begin(), sys.end());
    std::string view = client_view(data, m);
    uint64_t size = view.size();
    for (size_t k = 0; k < view.size(); ++k) {
      if (view[k] == '\n' && (k == 0 || view[k - 1] != '\r')) ++size;
    }
    m.size = size;
    out.push_back(std::move(m));
  }
  return out;
}

// The body without the blank line that separates it from the next message.
static std::string_view raw_body(const std::string& data, const MboxMessage& m) {
  std::string_view b(data.data() + m.body_off, m.end - m.body_off);
  if (b.size() >= 2 && b.substr(b.size() - 2) == "\n\n") b.remove_suffix(1);
  else if (b == "\n") b = {};
  return b;
}

std::string client_view(const std::string& data, const MboxMessage& m) {
  std::string out;
  size_t p = m.header_off;
  const uint64_t hend = m.body_off == m.end && (m.end == m.header_off || data[m.end - 1] != '\n') ? m.end : m.body_off;
  bool skipping = false;
  while (p < hend) {
    size_t e = data.find('\n', p);
    e = e == std::string::npos || e + 1 > hend ? hend : e + 1;
    std::string_view line(data.data() + p, e - p);
    // A header cut off after a lone CR ends there: given the newline a rewrite
    // adds, it would be the "\r\n" that ends a header.
    if (line == "\n" || line == "\r\n" || (line == "\r" && e == hend)) break;
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      if (!skipping) out.append(line);
    } else {
      skipping = managed(line).has_value();
      if (!skipping) out.append(line);
    }
    // As render() writes it: a header cut off without its newline gets one, so the
    // message a client sees is the same before and after its first rewrite (IMAP
    // messages are immutable, RFC 3501 2.3).
    if (!skipping && !out.empty() && out.back() != '\n') out += '\n';
    p = e;
  }
  out += '\n';
  std::string_view b = m.body_off < m.end ? raw_body(data, m) : std::string_view();
  size_t q = 0;
  while (q < b.size()) {
    size_t e = b.find('\n', q);
    e = e == std::string_view::npos ? b.size() : e + 1;
    std::string_view line = b.substr(q, e - q);
    size_t gts = line.find_first_not_of('>');
    if (gts != std::string_view::npos && gts > 0 && line.substr(gts, 5) == kFrom) line.remove_prefix(1);
    out.append(line);
    q = e;
  }
  if (!b.empty() && b.back() != '\n') out += '\n';  // render() ends the body so, too
  return out;
}

std::string render(const std::string& data, const MboxMessage& m, uint32_t base_validity, uint32_t base_next) {
  std::string out(data, m.offset, m.header_off - m.offset);
  if (out.empty() || out.back() != '\n') out += '\n';
  // The header without our lines, in its order.
  size_t p = m.header_off;
  const uint64_t hend = m.body_off;
  bool skipping = false;
  while (p < hend) {
    size_t e = data.find('\n', p);
    e = e == std::string::npos || e + 1 > hend ? hend : e + 1;
    std::string_view line(data.data() + p, e - p);
    // A header cut off after a lone CR ends there: given the newline a rewrite
    // adds, it would be the "\r\n" that ends a header.
    if (line == "\n" || line == "\r\n" || (line == "\r" && e == hend)) break;
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      if (!skipping) out.append(line);
    } else {
      skipping = managed(line).has_value() && !iequal_prefix(line, "Content-Length");
      if (!skipping) out.append(line);
    }
    if (out.back() != '\n') out += '\n';
    p = e;
  }
  if (base_next) {
    char b[64];
    std::snprintf(b, sizeof b, "X-IMAPbase: %u %010u\n", base_validity, base_next);
    out += b;
  }
  out += "X-UID: " + std::to_string(m.uid) + "\n";
  std::string st = flag_letters_status(m), xs = flag_letters_xstatus(m), kw;
  for (const std::string& f : m.flags) {
    if (!is_system_flag(f)) kw += (kw.empty() ? "" : " ") + f;
  }
  if (!st.empty()) out += "Status: " + st + "\n";
  if (!xs.empty()) out += "X-Status: " + xs + "\n";
  if (!kw.empty()) out += "X-Keywords: " + kw + "\n";
  out += '\n';
  std::string_view b = m.body_off < m.end ? raw_body(data, m) : std::string_view();
  // The body now follows the "\n" written above, where the file may have had a
  // "\r\n" (a header ends at either, a message starts only after "\n"): a first
  // body line "From " would start a message of its own. Quoted, it reads the same
  // (client_view() takes one '>' off).
  if (b.substr(0, 5) == kFrom) out += '>';
  out.append(b);
  if (!b.empty() && b.back() != '\n') out += '\n';
  out += '\n';
  return out;
}

std::string new_message(std::string_view content, int64_t date) {
  // LF line ends: the mbox is a Unix file.
  // (a stray CR before a CRLF is kept: BODY[] gives `content` back).
  std::string lf = common::mime::to_lf(content);
  std::string out = common::mbox::from_line("MAILER-DAEMON", static_cast<time_t>(date));
  common::mbox::FromQuoter q;
  q.feed(lf, out);
  q.finish(out);
  if (out.back() != '\n') out += '\n';
  out += '\n';
  return out;
}

}  // namespace mboxfmt

// --- the journaled rewrite ------------------------------------------------------------

namespace {
constexpr std::string_view kMagic = "TERNMBOXJ1 ";
// "TERNMBOXJ1 P <from> <old_len> <new_len>\n" then the old bytes [from, old_len).
constexpr size_t kPhaseAt = 11;

Status set_phase(const std::string& journal, Fsync f) {
  UniqueFd j(::open(journal.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!j) return common::errno_error("open " + journal, errno);
  if (Status s = write_all_at(j.get(), "1", kPhaseAt, journal); !s) return s;
  return sync_fd(j.get(), journal, f);
}

Status sync_dir_of(const std::string& path, Fsync f) {
  if (f == Fsync::kNo) return {};
  std::string dir = path.substr(0, path.rfind('/'));
  UniqueFd d(::open(dir.empty() ? "/" : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d) ::fsync(d.get());
  return {};
}
}  // namespace

Status mbox_rewrite(int fd, const std::string& path, const std::string& journal, const std::string& old_data,
                    const std::string& new_data, uint64_t from, Fsync fsync, int crash_after_step) {
  const uint64_t old_len = old_data.size(), new_len = new_data.size();
  if (from > old_len || from > new_len) return make_error(ErrorKind::kTemp, "mbox rewrite past the end");
  if (old_len == new_len && old_data.compare(from, std::string::npos, new_data, from, std::string::npos) == 0) return {};
  auto crash = [&](int step) { return crash_after_step == step; };
  // 1. The journal: everything needed to put the old bytes back.
  std::string j = std::string(kMagic) + "0 " + std::to_string(from) + " " + std::to_string(old_len) + " " +
                  std::to_string(new_len) + "\n";
  j.append(old_data, from, std::string::npos);
  if (Status s = write_new_file(journal, j, fsync); !s) return s;
  if (Status s = sync_dir_of(journal, fsync); !s) return s;
  if (crash(1)) return make_error(ErrorKind::kTemp, "simulated crash");
  // 2. Growing: the new length first, then the phase (the file's length is known).
  if (new_len > old_len) {
    if (::ftruncate(fd, static_cast<off_t>(new_len)) < 0) return common::errno_error("ftruncate " + path, errno);
    if (Status s = sync_fd(fd, path, fsync); !s) return s;
    if (crash(2)) return make_error(ErrorKind::kTemp, "simulated crash");
    if (Status s = set_phase(journal, fsync); !s) return s;
  }
  // 3. The new bytes.
  if (Status s = write_all_at(fd, std::string_view(new_data).substr(from), from, path); !s) return s;
  if (crash(3)) return make_error(ErrorKind::kTemp, "simulated crash");
  if (Status s = sync_fd(fd, path, fsync); !s) return s;
  // 4. Not growing: the phase says the new bytes are complete, then the tail goes.
  if (new_len <= old_len) {
    if (Status s = set_phase(journal, fsync); !s) return s;
    if (crash(4)) return make_error(ErrorKind::kTemp, "simulated crash");
    if (new_len < old_len && ::ftruncate(fd, static_cast<off_t>(new_len)) < 0) {
      return common::errno_error("ftruncate " + path, errno);
    }
    if (Status s = sync_fd(fd, path, fsync); !s) return s;
  }
  if (crash(5)) return make_error(ErrorKind::kTemp, "simulated crash");
  ::unlink(journal.c_str());
  return {};
}

Status mbox_recover(int fd, const std::string& path, const std::string& journal, Fsync fsync) {
  struct stat st;
  if (::lstat(journal.c_str(), &st) < 0) return {};  // nothing to recover
  // A crash while recovering: that recovery's own journal first.
  if (Status s = mbox_recover(fd, path, journal + ".r", fsync); !s) return s;
  Result<std::string> j = read_path(journal);
  if (!j) return j.take_error();
  size_t nl = j->find('\n');
  if (j->compare(0, kMagic.size(), kMagic) != 0 || nl == std::string::npos) {
    return make_error(ErrorKind::kTemp, "mbox journal " + journal + " is damaged; repair " + path + " by hand");
  }
  std::vector<std::string> f = common::split(std::string_view(*j).substr(kMagic.size(), nl - kMagic.size()), ' ');
  if (f.size() != 4) return make_error(ErrorKind::kTemp, "mbox journal " + journal + " is damaged");
  const bool phase1 = f[0] == "1";
  const uint64_t from = common::parse_u64(f[1]).value_or(0), old_len = common::parse_u64(f[2]).value_or(0),
                 new_len = common::parse_u64(f[3]).value_or(0);
  std::string_view old_tail = std::string_view(*j).substr(nl + 1);
  if (old_tail.size() != old_len - from) {
    // The journal was not complete: the mbox was not touched yet.
    ::unlink(journal.c_str());
    return {};
  }
  Result<std::string> cur = read_fd(fd, path);
  if (!cur) return cur.take_error();
  // Where the file ended at the crash: what comes after it was appended since.
  uint64_t crash_end = old_len;
  if (new_len <= old_len && phase1) {
    // The new bytes are complete; the old tail after them may still be there (the
    // crash came before the ftruncate), followed by what was appended since.
    std::string_view stale = old_tail.substr(new_len - from);
    const bool truncated = !(cur->size() >= old_len && std::string_view(*cur).substr(new_len, old_len - new_len) == stale);
    std::string done = cur->substr(0, new_len);
    done.append(*cur, truncated ? new_len : old_len, std::string::npos);
    if (Status s = mbox_rewrite(fd, path, journal + ".r", *cur, done, new_len, fsync); !s) return s;
    ::unlink(journal.c_str());
    return {};
  }
  if (new_len > old_len) {
    if (phase1) {
      crash_end = new_len;
    } else if (cur->size() >= new_len &&
               cur->find_first_not_of('\0', old_len) >= new_len) {  // extended, nothing written yet
      crash_end = new_len;
    }
  }
  if (cur->size() < crash_end || cur->size() < from) {
    return make_error(ErrorKind::kTemp, "mbox " + path + " is shorter than its journal " + journal + " says");
  }
  std::string restored = cur->substr(0, from);
  restored.append(old_tail);
  restored.append(*cur, crash_end, std::string::npos);
  if (Status s = mbox_rewrite(fd, path, journal + ".r", *cur, restored, from, fsync); !s) return s;
  ::unlink(journal.c_str());
  return {};
}

// --- the store ------------------------------------------------------------------------

Result<std::unique_ptr<MboxStore>> MboxStore::open(MboxSettings settings) {
  if (settings.root.empty() || settings.root[0] != '/' || settings.inbox.empty() || settings.inbox[0] != '/') {
    return make_error(ErrorKind::kConfig, "mbox store needs absolute root and INBOX paths");
  }
  while (settings.root.size() > 1 && settings.root.back() == '/') settings.root.pop_back();
  for (const std::string& d : {settings.root, settings.root + "/.tern-mbox"}) {
    if (::mkdir(d.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + d, errno);
  }
  struct stat st;
  if (::lstat(settings.root.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
    return make_error(ErrorKind::kDenied, "mail root " + settings.root + " is not a directory");
  }
  return std::unique_ptr<MboxStore>(new MboxStore(std::move(settings)));
}

MboxStore::~MboxStore() = default;

Result<std::string> MboxStore::path_of(const std::string& name) const {
  if (common::iequals(name, "INBOX")) return settings_.inbox;
  if (name.empty()) return make_error(ErrorKind::kNotFound, "empty mailbox name");
  for (const std::string& c : common::split(name, '/')) {
    if (c.empty() || c[0] == '.' || c.size() > 255 || (c.size() >= 5 && c.substr(c.size() - 5) == ".lock")) {
      return make_error(ErrorKind::kDenied, "mailbox name " + name + " cannot be stored in mbox");
    }
    for (char ch : c) {
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
        return make_error(ErrorKind::kDenied, "mailbox name " + name + " has control characters");
      }
    }
  }
  std::string p = settings_.root + "/" + name;
  if (Status c = common::maildir::check_within(settings_.root, p); !c) return c.take_error();
  return p;
}

std::string MboxStore::journal_of(const std::string& path) const {
  std::string n;
  for (char c : path) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') n += c;
    else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", static_cast<unsigned char>(c));
      n += b;
    }
  }
  if (n.size() > 200) n = n.substr(n.size() - 200) + std::to_string(std::hash<std::string>()(path));
  return settings_.root + "/.tern-mbox/" + n + ".journal";
}

std::shared_ptr<MboxState> MboxStore::state(const std::string& name, const std::string& path) {
  auto it = states_.find(path);
  if (it != states_.end()) {
    if (auto s = it->second.lock()) return s;
  }
  std::shared_ptr<MboxState> s;
  auto k = keep_.find(path);
  if (k != keep_.end()) s = k->second;
  else {
    s = std::make_shared<MboxState>();
    s->name = name;
    s->path = path;
    s->modseq = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  }
  states_[path] = s;
  return s;
}

Status MboxStore::update(MboxState& st, bool claim, std::vector<uint32_t>* claimed,
                         const std::function<Status(Edit&)>& edit) {
  const bool inbox = st.path == settings_.inbox;
  if (inbox) {
    std::string dir = st.path.substr(0, st.path.rfind('/'));
    if (Status c = common::maildir::check_within(dir.empty() ? "/" : dir, st.path); !c) return c;
  } else if (Status c = common::maildir::check_within(settings_.root, st.path); !c) {
    return c;
  }
  Result<Lock> lock = Lock::take(st.path, settings_.locks, inbox);
  if (!lock) return lock.take_error();
  const std::string journal = journal_of(st.path);
  if (Status r = mbox_recover(lock->fd(), st.path, journal, settings_.fsync); !r) return r;
  struct stat sb;
  if (::fstat(lock->fd(), &sb) < 0) return common::errno_error("fstat " + st.path, errno);
  const int64_t mtime_ns = static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
  if (!edit && !claim && st.known && sb.st_ino == st.ino && sb.st_size == st.size && mtime_ns == st.mtime_ns) {
    return {};
  }
  Result<std::string> data = read_fd(lock->fd(), st.path);
  if (!data) return data.take_error();
  std::vector<MboxMessage> msgs = mboxfmt::parse(*data);

  // UIDVALIDITY and UIDs (see the header comment).
  uint32_t validity = 0, stored_next = 0;
  if (!msgs.empty() && msgs[0].has_base) {
    validity = msgs[0].base_validity;
    stored_next = msgs[0].base_next;
  }
  bool fresh_validity = false;
  if (!validity) {
    // No X-IMAPbase: what this worker remembers, else a new one. Old X-UIDs mean nothing.
    validity = st.uid_validity ? st.uid_validity : static_cast<uint32_t>(::time(nullptr));
    stored_next = st.uid_validity ? st.uid_next : 1;
    fresh_validity = true;
    for (auto& m : msgs) m.uid = 0;
  }
  if (validity != st.uid_validity) {
    st.modseqs.clear();
  }
  uint32_t next = std::max<uint32_t>(stored_next, 1);
  for (const auto& m : msgs) next = std::max(next, m.uid + 1);
  std::vector<bool> dirty(msgs.size(), false);
  uint32_t prev = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    MboxMessage& m = msgs[i];
    if (m.uid == 0 || m.uid <= prev) {
      m.uid = next++;
      dirty[i] = true;
    }
    prev = m.uid;
    if (claim && !m.old) {
      m.old = true;
      dirty[i] = true;
      if (claimed) claimed->push_back(m.uid);
    }
    if (i > 0 && m.has_base) dirty[i] = true;  // only the first message carries it
  }
  if (!msgs.empty() && (fresh_validity || !msgs[0].has_base)) dirty[0] = true;

  // The caller's change.
  Edit e;
  e.msgs = &msgs;
  e.data = &*data;
  e.uid_validity = validity;
  e.uid_next = next;
  std::vector<std::vector<std::string>> before;
  for (const auto& m : msgs) before.push_back(m.flags);
  if (edit) {
    if (Status s = edit(e); !s) return s;
  }
  next = e.uid_next;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].flags != before[i]) dirty[i] = true;
  }
  // Render from the first changed message on.
  size_t first = msgs.size();
  bool removed_any = false;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].uid == 0) removed_any = true;
    if ((dirty[i] || msgs[i].uid == 0) && first == msgs.size()) first = i;
  }
  // Removing the highest UIDs must not let uidnext fall back: X-IMAPbase says it.
  std::vector<size_t> kept;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].uid) kept.push_back(i);
  }
  // Dovecot takes an X-UID at or above X-IMAPbase's uidnext for a broken one and
  // renumbers: uidnext is rewritten with every new UID (zero-padded to 10 digits as
  // Dovecot writes it, so it keeps its length and only those bytes change).
  if (stored_next != next || fresh_validity || (!kept.empty() && kept[0] != 0) ||
      (kept.empty() && !e.appended.empty() && removed_any)) {
    first = 0;
  }
  (void)removed_any;
  std::string out;
  uint64_t from = data->size();
  if (first < msgs.size() || !e.appended.empty() || from == 0) {
    from = first < msgs.size() ? msgs[first].offset : data->size();
    if (first == 0) from = 0;
    out.assign(*data, 0, from);
    bool first_written = first > 0 && !kept.empty();
    // A file ending without a newline (mutt cut it off): start the new part cleanly.
    if (from == data->size() && !out.empty() && out.back() != '\n') out += "\n\n";
    for (size_t i = first; i < msgs.size(); ++i) {
      if (!msgs[i].uid) continue;
      out += mboxfmt::render(*data, msgs[i], validity, first_written ? 0 : next);
      first_written = true;
    }
    for (auto& [am, bytes] : e.appended) {
      MboxMessage parsed_copy = am;
      std::vector<MboxMessage> one = mboxfmt::parse(bytes);
      if (one.empty()) continue;
      one[0].uid = am.uid;
      one[0].flags = am.flags;
      one[0].old = am.old;
      out += mboxfmt::render(bytes, one[0], validity, first_written ? 0 : next);
      first_written = true;
    }
    // Only what differs is written: the first differing byte on.
    while (from < data->size() && from < out.size() && (*data)[from] == out[from]) ++from;
    if (Status s = mbox_rewrite(lock->fd(), st.path, journal, *data, out, from, settings_.fsync); !s) return s;
    if (::fstat(lock->fd(), &sb) < 0) return common::errno_error("fstat " + st.path, errno);
    msgs = mboxfmt::parse(out);
    // parse() gives what is now in the file (UIDs included).
  } else {
    out = std::move(*data);
  }

  // The shared view, with MODSEQs for what changed.
  std::map<uint32_t, std::vector<std::string>> old_flags;
  for (const auto& m : st.msgs) old_flags[m.uid] = m.flags;
  std::map<uint32_t, uint64_t> modseqs;
  st.keywords.clear();
  for (const auto& m : msgs) {
    auto of = old_flags.find(m.uid);
    auto om = st.modseqs.find(m.uid);
    if (of == old_flags.end() || om == st.modseqs.end() || of->second != m.flags) modseqs[m.uid] = ++st.modseq;
    else modseqs[m.uid] = om->second;
    for (const auto& f : m.flags) {
      if (!is_system_flag(f)) st.keywords.insert(f);
    }
  }
  if (!e.removed.empty()) ++st.modseq;
  st.msgs = std::move(msgs);
  st.modseqs = std::move(modseqs);
  st.uid_validity = validity;
  st.uid_next = std::max(next, st.msgs.empty() ? 1u : st.msgs.back().uid + 1);
  st.known = true;
  st.ino = sb.st_ino;
  st.size = sb.st_size;
  st.mtime_ns = static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec;
  if (st.msgs.empty()) keep_[st.path] = states_[st.path].lock();  // remember UIDVALIDITY/UIDNEXT
  return {};
}

Status MboxStore::refresh(MboxState& st, bool claim, std::vector<uint32_t>* claimed) {
  if (claim && st.known) {
    struct stat sb;
    if (::stat(st.path.c_str(), &sb) == 0 && sb.st_ino == st.ino && sb.st_size == st.size &&
        static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec == st.mtime_ns) {
      bool all_old = std::all_of(st.msgs.begin(), st.msgs.end(), [](const MboxMessage& m) { return m.old; });
      if (all_old) return {};
    }
  }
  if (!claim && st.known) {
    struct stat sb;
    if (::stat(st.path.c_str(), &sb) == 0 && sb.st_ino == st.ino && sb.st_size == st.size &&
        static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000 + sb.st_mtim.tv_nsec == st.mtime_ns) {
      return {};
    }
  }
  return update(st, claim, claimed, nullptr);
}

// --- one opened mailbox ---------------------------------------------------------------

namespace {

class MboxMailbox : public Mailbox {
 public:
  MboxMailbox(MboxStore& store, std::shared_ptr<MboxState> st, OpenMode mode, UniqueFd pop3_lock)
      : store_(store), st_(std::move(st)), mode_(mode), pop3_lock_(std::move(pop3_lock)) {}

  bool read_only() const override { return mode_ == OpenMode::kReadOnly; }
  uint32_t uid_validity() const override { return st_->uid_validity; }
  uint32_t uid_next() const override { return st_->uid_next; }
  uint64_t highest_modseq() const override { return std::max<uint64_t>(st_->modseq, 1); }
  std::vector<std::string> keywords() const override { return {st_->keywords.begin(), st_->keywords.end()}; }

  Result<MailboxChanges> sync() override {
    std::vector<uint32_t> claimed;
    if (Status s = store_.refresh(*st_, mode_ != OpenMode::kReadOnly, &claimed); !s) return s.take_error();
    recent_.insert(claimed.begin(), claimed.end());
    MailboxChanges c;
    std::set<uint32_t> now;
    for (const auto& m : st_->msgs) {
      now.insert(m.uid);
      uint64_t ms = st_->modseqs[m.uid];
      auto it = known_.find(m.uid);
      if (it == known_.end()) {
        MessageMeta meta = meta_of(m);
        c.added.push_back(std::move(meta));
        known_[m.uid] = ms;
      } else if (it->second != ms) {
        it->second = ms;
        c.changed.push_back(meta_of(m));
      }
    }
    for (auto it = known_.begin(); it != known_.end();) {
      if (!now.count(it->first)) {
        c.expunged.push_back(it->first);
        recent_.erase(it->first);
        it = known_.erase(it);
      } else {
        ++it;
      }
    }
    return c;
  }

  Result<std::vector<MessageMeta>> fetch_meta(const std::vector<uint32_t>& uids) override {
    std::vector<MessageMeta> out;
    std::set<uint32_t> want(uids.begin(), uids.end());
    for (const auto& m : st_->msgs) {
      if (want.count(m.uid)) out.push_back(meta_of(m));
    }
    return out;
  }

  Result<std::string> read(uint32_t uid) override {
    if (Status s = store_.refresh(*st_, false, nullptr); !s) return s.take_error();
    for (const auto& m : st_->msgs) {
      if (m.uid != uid) continue;
      UniqueFd fd(::open(st_->path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return common::errno_error("open " + st_->path, errno);
      std::string buf(m.end - m.offset, '\0');
      ssize_t n = ::pread(fd.get(), buf.data(), buf.size(), static_cast<off_t>(m.offset));
      if (n != static_cast<ssize_t>(buf.size())) return make_error(ErrorKind::kTemp, "short read of " + st_->path);
      MboxMessage local = m;
      local.header_off -= m.offset;
      local.body_off -= m.offset;
      local.end -= m.offset;
      local.offset = 0;
      return mboxfmt::client_view(buf, local);
    }
    return make_error(ErrorKind::kNotFound, "message " + std::to_string(uid) + " was expunged");
  }

  Result<StoreResult> store(const std::vector<uint32_t>& uids, StoreMode mode, const std::vector<std::string>& flags,
                            std::optional<uint64_t> unchanged_since) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    std::set<uint32_t> want(uids.begin(), uids.end()), modified;
    std::vector<std::string> fl;
    for (const auto& f : flags) fl.push_back(canon_flag(f));
    Status s = store_.update(*st_, false, nullptr, [&](MboxStore::Edit& e) -> Status {
      for (auto& m : *e.msgs) {
        if (!want.count(m.uid)) continue;
        if (unchanged_since) {
          auto it = st_->modseqs.find(m.uid);
          if (it != st_->modseqs.end() && it->second > *unchanged_since) {
            modified.insert(m.uid);
            continue;
          }
        }
        std::vector<std::string> nf;
        if (mode == StoreMode::kReplace) nf = fl;
        else {
          nf = m.flags;
          for (const auto& f : fl) {
            auto it = std::find(nf.begin(), nf.end(), f);
            if (mode == StoreMode::kAdd && it == nf.end()) nf.push_back(f);
            if (mode == StoreMode::kRemove && it != nf.end()) nf.erase(it);
          }
        }
        // A stable order, so an unchanged set is no change.
        std::vector<std::string> sys, kw;
        for (const char* f : {"\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"}) {
          if (std::find(nf.begin(), nf.end(), f) != nf.end()) sys.push_back(f);
        }
        for (const auto& f : nf) {
          if (!is_system_flag(f) && std::find(kw.begin(), kw.end(), f) == kw.end()) kw.push_back(f);
        }
        sys.insert(sys.end(), kw.begin(), kw.end());
        m.flags = std::move(sys);
      }
      return {};
    });
    if (!s) return s.take_error();
    StoreResult r;
    for (const auto& m : st_->msgs) {
      if (!want.count(m.uid) || modified.count(m.uid)) continue;
      known_[m.uid] = st_->modseqs[m.uid];  // this handle's change: not reported by sync()
      r.updated.push_back(meta_of(m));
    }
    r.modified.assign(modified.begin(), modified.end());
    return r;
  }

  Result<CopyResult> copy(const std::vector<uint32_t>& uids, const std::string& dest) override {
    if (Status s = store_.refresh(*st_, false, nullptr); !s) return s.take_error();
    std::set<uint32_t> want(uids.begin(), uids.end());
    CopyResult r;
    for (const auto& m : st_->msgs) {
      if (!want.count(m.uid)) continue;
      Result<std::string> text = read(m.uid);
      if (!text) return text.take_error();
      Result<AppendResult> a = store_.append(dest, *text, m.flags, m.date);
      if (!a) return a.take_error();
      r.uid_validity = a->uid_validity;
      r.src_uids.push_back(m.uid);
      r.dst_uids.push_back(a->uid);
    }
    if (r.uid_validity == 0) {
      Result<MailboxStatus> ds = store_.status(dest);
      if (!ds) return ds.take_error();
      r.uid_validity = ds->uid_validity;
    }
    return r;
  }

  Result<CopyResult> move(const std::vector<uint32_t>& uids, const std::string& dest) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    Result<CopyResult> r = copy(uids, dest);
    if (!r) return r;
    std::set<uint32_t> gone(r->src_uids.begin(), r->src_uids.end());
    if (Status s = remove_where([&](const MboxMessage& m) { return gone.count(m.uid) > 0; }, nullptr); !s) {
      return s.take_error();
    }
    return r;
  }

  Result<std::vector<uint32_t>> expunge(const std::optional<std::vector<uint32_t>>& only) override {
    if (read_only()) return make_error(ErrorKind::kDenied, "mailbox is read-only");
    std::set<uint32_t> o;
    if (only) o.insert(only->begin(), only->end());
    std::vector<uint32_t> removed;
    Status s = remove_where(
        [&](const MboxMessage& m) {
          if (only && !o.count(m.uid)) return false;
          return std::find(m.flags.begin(), m.flags.end(), "\\Deleted") != m.flags.end();
        },
        &removed);
    if (!s) return s.take_error();
    std::sort(removed.begin(), removed.end());
    return removed;
  }

 private:
  Status remove_where(const std::function<bool(const MboxMessage&)>& pred, std::vector<uint32_t>* removed) {
    return store_.update(*st_, false, nullptr, [&](MboxStore::Edit& e) -> Status {
      for (auto& m : *e.msgs) {
        if (m.uid && pred(m)) {
          if (removed) removed->push_back(m.uid);
          e.removed.push_back(m.uid);
          m.uid = 0;
        }
      }
      return {};
    });
  }

  MessageMeta meta_of(const MboxMessage& m) const {
    MessageMeta x;
    x.uid = m.uid;
    auto it = st_->modseqs.find(m.uid);
    x.modseq = it == st_->modseqs.end() ? 1 : it->second;
    x.flags = m.flags;
    x.recent = recent_.count(m.uid) > 0;
    x.size = m.size;
    x.internal_date = m.date;
    return x;
  }

  MboxStore& store_;
  std::shared_ptr<MboxState> st_;
  OpenMode mode_;
  UniqueFd pop3_lock_;
  std::map<uint32_t, uint64_t> known_;  // uid -> MODSEQ this handle reported
  std::set<uint32_t> recent_;
};

}  // namespace

Result<std::unique_ptr<Mailbox>> MboxStore::open(const std::string& name, OpenMode mode) {
  Result<std::string> path = path_of(name);
  if (!path) return path.take_error();
  const bool inbox = *path == settings_.inbox;
  struct stat sb;
  if (!inbox) {
    if (::lstat(path->c_str(), &sb) < 0) return make_error(ErrorKind::kNotFound, "mailbox " + name + " does not exist");
    if (!S_ISREG(sb.st_mode)) return make_error(ErrorKind::kNotFound, "mailbox " + name + " cannot be selected");
  }
  UniqueFd pop3_lock;
  if (mode == OpenMode::kPop3) {
    std::string lp = journal_of(*path) + ".pop3";
    pop3_lock.reset(::open(lp.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!pop3_lock) return common::errno_error("open " + lp, errno);
    if (::flock(pop3_lock.get(), LOCK_EX | LOCK_NB) < 0) {
      if (errno == EWOULDBLOCK) return make_error(ErrorKind::kInUse, "another POP3 session holds the maildrop");
      return common::errno_error("flock " + lp, errno);
    }
  }
  std::shared_ptr<MboxState> st = state(common::iequals(name, "INBOX") ? "INBOX" : name, *path);
  if (Status s = update(*st, false, nullptr, nullptr); !s) return s.take_error();
  return std::unique_ptr<Mailbox>(new MboxMailbox(*this, st, mode, std::move(pop3_lock)));
}

Result<MailboxStatus> MboxStore::status(const std::string& name) {
  Result<std::string> path = path_of(name);
  if (!path) return path.take_error();
  struct stat sb;
  if (*path != settings_.inbox && (::lstat(path->c_str(), &sb) < 0 || !S_ISREG(sb.st_mode))) {
    return make_error(ErrorKind::kNotFound, "mailbox " + name + " does not exist");
  }
  std::shared_ptr<MboxState> st = state(name, *path);
  if (Status s = refresh(*st, false, nullptr); !s) return s.take_error();
  MailboxStatus r;
  r.uid_validity = st->uid_validity;
  r.uid_next = st->uid_next;
  r.highest_modseq = std::max<uint64_t>(st->modseq, 1);
  for (const auto& m : st->msgs) {
    ++r.messages;
    if (!m.old) ++r.recent;
    r.size += m.size;
    auto has = [&](const char* f) { return std::find(m.flags.begin(), m.flags.end(), f) != m.flags.end(); };
    if (!has("\\Seen")) ++r.unseen;
    if (has("\\Deleted")) ++r.deleted;
  }
  return r;
}

Result<AppendResult> MboxStore::append(const std::string& name, std::string_view message,
                                       const std::vector<std::string>& flags, std::optional<int64_t> internal_date) {
  Result<std::string> path = path_of(name);
  if (!path) return path.take_error();
  struct stat sb;
  if (*path != settings_.inbox && (::lstat(path->c_str(), &sb) < 0 || !S_ISREG(sb.st_mode))) {
    return make_error(ErrorKind::kNotFound, "mailbox " + name + " does not exist");
  }
  if (settings_.quota_bytes) {
    Result<QuotaInfo> q = quota();
    if (q && q->storage_used + message.size() > settings_.quota_bytes) {
      return make_error(ErrorKind::kNoQuota, "Quota exceeded (mailbox for user is full)");
    }
  }
  std::shared_ptr<MboxState> st = state(name, *path);
  AppendResult r;
  Status s = update(*st, false, nullptr, [&](Edit& e) -> Status {
    MboxMessage m;
    m.uid = e.uid_next++;
    for (const auto& f : flags) {
      std::string c = canon_flag(f);
      if (std::find(m.flags.begin(), m.flags.end(), c) == m.flags.end()) m.flags.push_back(c);
    }
    m.old = false;
    e.appended.emplace_back(m, mboxfmt::new_message(message, internal_date.value_or(::time(nullptr))));
    r.uid = m.uid;
    r.uid_validity = e.uid_validity;
    return {};
  });
  if (!s) return s.take_error();
  return r;
}

Result<QuotaInfo> MboxStore::quota() {
  QuotaInfo q;
  q.storage_limit = settings_.quota_bytes;
  struct stat sb;
  if (::stat(settings_.inbox.c_str(), &sb) == 0) q.storage_used += static_cast<uint64_t>(sb.st_size);
  Result<std::vector<MailboxInfo>> l = list();
  if (l) {
    for (const auto& i : *l) {
      if (i.name == "INBOX" || i.noselect) continue;
      Result<std::string> p = path_of(i.name);
      if (p && ::lstat(p->c_str(), &sb) == 0) q.storage_used += static_cast<uint64_t>(sb.st_size);
    }
  }
  return q;
}

// --- mailbox management ---------------------------------------------------------------

namespace {
void walk(const std::string& dir, const std::string& prefix, std::map<std::string, MailboxInfo>& out, int depth) {
  if (depth > 16) return;  // bounded: a deep tree is not a mail folder hierarchy
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::pair<std::string, bool>> entries;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.empty() || n[0] == '.' || (n.size() >= 5 && n.substr(n.size() - 5) == ".lock")) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if (S_ISREG(st.st_mode)) entries.emplace_back(n, false);
    else if (S_ISDIR(st.st_mode)) entries.emplace_back(n, true);  // symlinks are not followed
  }
  ::closedir(d);
  for (const auto& [n, is_dir] : entries) {
    std::string name = prefix.empty() ? n : prefix + "/" + n;
    if (common::iequals(name, "INBOX")) continue;
    if (is_dir) {
      if (!out.count(name)) out[name] = MailboxInfo{name, SpecialUse::kNone, false, true};
      walk(dir + "/" + n, name, out, depth + 1);
    } else {
      out[name] = MailboxInfo{name, special_use_of(name), false, false};
    }
  }
}
}  // namespace

Result<std::vector<MailboxInfo>> MboxStore::list() {
  std::map<std::string, MailboxInfo> out;
  walk(settings_.root, "", out, 0);
  Result<std::vector<std::string>> subs = read_subscriptions();
  std::set<std::string> subscribed;
  if (subs) subscribed.insert(subs->begin(), subs->end());
  std::vector<MailboxInfo> r;
  r.push_back(MailboxInfo{"INBOX", SpecialUse::kNone, subscribed.count("INBOX") > 0, false});
  for (auto& [n, i] : out) {
    i.subscribed = subscribed.count(n) > 0;
    r.push_back(i);
  }
  // Subscriptions to mailboxes that do not exist stay visible (RFC 3501 6.3.6).
  for (const std::string& n : subscribed) {
    if (!common::iequals(n, "INBOX") && !out.count(n)) r.push_back(MailboxInfo{n, SpecialUse::kNone, true, false, true});
  }
  return r;
}

Status MboxStore::create(const std::string& name_in) {
  std::string name = name_in;
  while (!name.empty() && name.back() == '/') name.pop_back();
  if (common::iequals(name, "INBOX")) return make_error(ErrorKind::kExists, "INBOX exists");
  Result<std::string> path = path_of(name);
  if (!path) return path.take_error();
  // Parent directories, each checked not to leave the root.
  for (size_t i = settings_.root.size() + 1; i < path->size(); ++i) {
    if ((*path)[i] != '/') continue;
    std::string p = path->substr(0, i);
    if (Status c = common::maildir::check_within(settings_.root, p); !c) return c;
    if (::mkdir(p.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + p, errno);
    struct stat st;
    if (::lstat(p.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
      return make_error(ErrorKind::kExists, "mailbox " + p + " is a file; it cannot have children in mbox");
    }
  }
  if (name_in.size() > name.size()) {  // "a/": a directory, a \NoSelect parent-to-be
    if (::mkdir(path->c_str(), 0700) < 0) {
      return errno == EEXIST ? make_error(ErrorKind::kExists, "mailbox exists") : common::errno_error("mkdir " + *path, errno);
    }
    return {};
  }
  UniqueFd fd(::open(path->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) {
    if (errno == EEXIST) return make_error(ErrorKind::kExists, "mailbox " + name + " exists");
    return common::errno_error("create " + *path, errno);
  }
  return sync_dir_of(*path, settings_.fsync);
}

Status MboxStore::remove(const std::string& name) {
  if (common::iequals(name, "INBOX")) return make_error(ErrorKind::kDenied, "INBOX cannot be deleted");
  Result<std::string> path = path_of(name);
  if (!path) return path.take_error();
  struct stat st;
  if (::lstat(path->c_str(), &st) < 0) return make_error(ErrorKind::kNotFound, "mailbox " + name + " does not exist");
  if (S_ISDIR(st.st_mode)) {
    if (::rmdir(path->c_str()) < 0) {
      if (errno == ENOTEMPTY || errno == EEXIST) {
        return make_error(ErrorKind::kDenied, "mailbox " + name + " has children; delete them first");
      }
      return common::errno_error("rmdir " + *path, errno);
    }
    return {};
  }
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::kDenied, "mailbox " + name + " is not a file");
  {
    // Under the locks, so no delivery is half-way into it.
    Result<Lock> l = Lock::take(*path, settings_.locks, false);
    if (!l) return l.take_error();
    if (::unlink(path->c_str()) < 0) return common::errno_error("unlink " + *path, errno);
  }
  states_.erase(*path);
  keep_.erase(*path);
  ::unlink((journal_of(*path) + ".pop3").c_str());
  return {};
}

Status MboxStore::rename(const std::string& from, const std::string& to) {
  Result<std::string> dst = path_of(to);
  if (!dst) return dst.take_error();
  if (common::iequals(to, "INBOX")) return make_error(ErrorKind::kExists, "INBOX exists");
  struct stat st;
  if (::lstat(dst->c_str(), &st) == 0) return make_error(ErrorKind::kExists, "mailbox " + to + " exists");
  if (common::iequals(from, "INBOX")) {
    // RFC 3501 6.3.5: INBOX's messages move to the new mailbox, INBOX stays, empty.
    if (Status c = create(to); !c) return c;
    Result<std::unique_ptr<Mailbox>> in = open("INBOX", OpenMode::kReadWrite);
    if (!in) return in.take_error();
    Result<MailboxChanges> ch = (*in)->sync();
    if (!ch) return ch.take_error();
    std::vector<uint32_t> uids;
    for (const auto& m : ch->added) uids.push_back(m.uid);
    if (!uids.empty()) {
      Result<CopyResult> mv = (*in)->move(uids, to);
      if (!mv) return mv.take_error();
    }
    return {};
  }
  Result<std::string> src = path_of(from);
  if (!src) return src.take_error();
  if (::lstat(src->c_str(), &st) < 0) return make_error(ErrorKind::kNotFound, "mailbox " + from + " does not exist");
  for (size_t i = settings_.root.size() + 1; i < dst->size(); ++i) {
    if ((*dst)[i] != '/') continue;
    std::string p = dst->substr(0, i);
    if (Status c = common::maildir::check_within(settings_.root, p); !c) return c;
    if (::mkdir(p.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + p, errno);
  }
  if (::rename(src->c_str(), dst->c_str()) < 0) return common::errno_error("rename " + *src, errno);
  states_.erase(*src);
  keep_.erase(*src);
  // Subscriptions follow the name.
  Result<std::vector<std::string>> subs = read_subscriptions();
  if (subs) {
    bool changed = false;
    for (auto& s : *subs) {
      if (s == from) {
        s = to;
        changed = true;
      } else if (s.rfind(from + "/", 0) == 0) {
        s = to + s.substr(from.size());
        changed = true;
      }
    }
    if (changed) (void)write_subscriptions(*subs);
  }
  return {};
}

Result<std::vector<std::string>> MboxStore::read_subscriptions() const {
  std::vector<std::string> out;
  Result<std::string> data = read_path(settings_.root + "/.subscriptions");
  if (!data) return out;
  for (const std::string& l : common::split(*data, '\n')) {
    std::string_view t = common::trim(l);
    if (!t.empty()) out.emplace_back(t);
  }
  return out;
}

Status MboxStore::write_subscriptions(const std::vector<std::string>& names) const {
  std::string text;
  for (const auto& n : names) text += n + "\n";
  const std::string path = settings_.root + "/.subscriptions";
  const std::string tmp = path + ".tmp";
  if (Status s = write_new_file(tmp, text, settings_.fsync); !s) return s;
  if (::rename(tmp.c_str(), path.c_str()) < 0) return common::errno_error("rename " + tmp, errno);
  return {};
}

Status MboxStore::subscribe(const std::string& name, bool subscribed) {
  Result<std::vector<std::string>> subs = read_subscriptions();
  if (!subs) return subs.take_error();
  std::vector<std::string> v = std::move(subs).value();
  auto it = std::find(v.begin(), v.end(), name);
  if (subscribed && it == v.end()) v.push_back(name);
  else if (!subscribed && it != v.end()) v.erase(it);
  else return {};
  return write_subscriptions(v);
}

}  // namespace tern::mra
