#include "common/maps.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "common/privilege.h"
#include "common/text.h"
#include "common/unique_fd.h"

namespace tern::common {
namespace {

// The largest value a child reading another user's table may answer.
constexpr size_t kMaxOwnerValue = 1 << 20;

// A compiled table opened read-only (the file is replaced, never written in place)
// with its main database.
Result<std::unique_ptr<lmdb::Env>> open_compiled(const std::string& path, MDB_dbi& dbi) {
  lmdb::Env::Options o;
  o.flags = MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK;
  o.map_size = 0;
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(path, o);
  if (!env) return env.take_error();
  Status s = lmdb::read(**env, [&](lmdb::Txn& t) -> Status {
    Result<MDB_dbi> d = t.open_db(nullptr, false);
    if (!d) return d.take_error();
    dbi = *d;
    return {};
  });
  if (!s) return s.take_error();
  return env;
}


struct Spec {
  std::string type;
  std::string source;  // the text file
  std::string db;      // the compiled file (lmdb) or the source (texthash)
};

Result<Spec> parse_spec(const std::string& spec) {
  Spec s;
  size_t colon = spec.find(':');
  if (colon == std::string::npos || spec[0] == '/') {
    s.type = "lmdb";
    s.source = spec;
  } else {
    s.type = to_lower(spec.substr(0, colon));
    s.source = spec.substr(colon + 1);
  }
  if (s.type == "hash" || s.type == "btree") s.type = "lmdb";
  if (s.type != "lmdb" && s.type != "texthash") {
    return make_error(ErrorKind::kConfig, "map " + spec + ": unsupported type '" + s.type +
                                              "' (lmdb, hash, btree or texthash)");
  }
  if (s.source.empty() || s.source[0] != '/') {
    return make_error(ErrorKind::kConfig, "map " + spec + ": the path must be absolute");
  }
  s.db = s.type == "lmdb" ? s.source + ".lmdb" : s.source;
  return s;
}

}  // namespace

Result<std::vector<std::pair<std::string, std::string>>> parse_map_source(const std::string& text,
                                                                        const std::string& path, MapSyntax syntax) {
  std::vector<std::pair<std::string, std::string>> out;
  // Join continuation lines first, remembering where each logical line began.
  std::vector<std::pair<int, std::string>> logical;
  int lineno = 0;
  for (const std::string& raw : split(text, '\n')) {
    ++lineno;
    std::string line = raw;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string_view t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    if ((line[0] == ' ' || line[0] == '\t') && !logical.empty()) {
      logical.back().second += " ";
      logical.back().second += t;
      continue;
    }
    if (line[0] == ' ' || line[0] == '\t') {
      return make_error(ErrorKind::kConfig, path + ":" + std::to_string(lineno) +
                                                ": continuation line without an entry before it");
    }
    logical.emplace_back(lineno, std::string(t));
  }
  for (auto& [ln, line] : logical) {
    std::string where = path + ":" + std::to_string(ln);
    std::string key, value;
    if (syntax == MapSyntax::kAliases) {
      size_t colon;
      if (line[0] == '"') {
        size_t q = line.find('"', 1);
        if (q == std::string::npos) return make_error(ErrorKind::kConfig, where + ": unterminated quoted name");
        key = line.substr(1, q - 1);
        colon = line.find(':', q);
      } else {
        colon = line.find(':');
        if (colon != std::string::npos) key = std::string(trim(line.substr(0, colon)));
      }
      if (colon == std::string::npos) {
        return make_error(ErrorKind::kConfig, where + ": missing ':' after the alias name");
      }
      value = std::string(trim(line.substr(colon + 1)));
    } else {
      size_t sp = line.find_first_of(" \t");
      key = line.substr(0, sp);
      value = sp == std::string::npos ? "" : std::string(trim(line.substr(sp)));
    }
    if (key.empty()) return make_error(ErrorKind::kConfig, where + ": empty key");
    if (value.empty()) return make_error(ErrorKind::kConfig, where + ": no value for '" + log_escape(key, 64) + "'");
    out.emplace_back(to_lower(key), value);
  }
  return out;
}

Result<std::string> read_table_file(const std::string& path, struct stat& st, off_t max_size) {
  // O_NONBLOCK: a FIFO in a table's place never blocks the open.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) return errno_error("open " + path, errno);
  return read_table_fd(fd.get(), path, st, max_size);
}

Result<std::string> read_table_fd(int fd, const std::string& path, struct stat& st, off_t max_size) {
  if (::fstat(fd, &st) < 0) return errno_error("stat " + path, errno);
  const std::string bound = max_size > 0 ? " of at most " + std::to_string(max_size) + " bytes" : "";
  if (!S_ISREG(st.st_mode) || (max_size > 0 && st.st_size > max_size)) {
    return make_error(ErrorKind::kPerm, path + ": not a regular file" + bound);
  }
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("read " + path, errno);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (max_size > 0 && text.size() > static_cast<size_t>(max_size)) {
      return make_error(ErrorKind::kPerm, path + ": not a regular file" + bound);
    }
  }
}

Status compile_map(const std::string& spec_text, MapSyntax syntax) {
  Result<Spec> spec = parse_spec(spec_text);
  if (!spec) return spec.take_error();
  if (spec->type == "texthash") return {};  // read as it is; nothing to compile
  struct stat st;
  Result<std::string> text = read_table_file(spec->source, st);
  if (!text) return text.take_error();
  Result<std::vector<std::pair<std::string, std::string>>> entries = parse_map_source(*text, spec->source, syntax);
  if (!entries) return entries.take_error();
  const std::string tmp = spec->db + ".tmp" + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  ::unlink((tmp + "-lock").c_str());
  {
    lmdb::Env::Options o;
    o.map_size = std::max<size_t>(1 << 20, text->size() * 4);
    o.mode = 0644;
    Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(tmp, o);
    if (!env) return env.take_error();
    Status s = lmdb::write(**env, [&](lmdb::Txn& t) -> Status {
      Result<MDB_dbi> d = t.open_db(nullptr, false);
      if (!d) return d.take_error();
      for (const auto& [k, v] : *entries) {
        // A key given twice: the last one wins, as postmap warns and does.
        if (Status p = t.put(*d, k, v); !p) return p;
      }
      return {};
    });
    if (!s) {
      ::unlink(tmp.c_str());
      ::unlink((tmp + "-lock").c_str());
      return s;
    }
    if (Status s2 = (*env)->sync(true); !s2) return s2;
  }
  ::unlink((tmp + "-lock").c_str());
  if (::rename(tmp.c_str(), spec->db.c_str()) < 0) return errno_error("rename " + tmp + " to " + spec->db, errno);
  return {};
}

Result<std::unique_ptr<Map>> Map::open(const std::string& spec_text, MapSyntax syntax) {
  Result<Spec> spec = parse_spec(spec_text);
  if (!spec) return spec.take_error();
  std::unique_ptr<Map> m(new Map);
  m->spec_ = spec_text;
  m->type_ = spec->type;
  m->path_ = spec->db;
  m->syntax_ = syntax;
  m->owner_reads_ = ::geteuid() == 0 && spec->type != "texthash";
  if (Status s = m->refresh(); !s) return s.take_error();
  return m;
}

Status Map::refresh() {
  struct stat st;
  if (::stat(path_.c_str(), &st) < 0) {
    Error e = errno_error("map " + spec_ + ": " + path_, errno);
    if (type_ == "lmdb" && errno == ENOENT) e.message += " (run: ternctl postmap " + spec_ + ")";
    return e;
  }
  // (Under owner_reads_ a chown reopens too: who maps the file depends on its owner.)
  if (st.st_ino == inode_ && st.st_mtim.tv_sec == mtime_.tv_sec && st.st_mtim.tv_nsec == mtime_.tv_nsec &&
      (!owner_reads_ || st.st_uid == owner_)) {
    owner_ = st.st_uid;  // chown changes neither
    return {};
  }
  if (type_ == "texthash") {
    Result<std::string> text = read_table_file(path_, st);
    if (!text) return text.take_error();
    Result<std::vector<std::pair<std::string, std::string>>> entries = parse_map_source(*text, path_, syntax_);
    if (!entries) return entries.take_error();
    text_ = std::move(entries).value();
    std::stable_sort(text_.begin(), text_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  } else if (owner_reads_) {
    // Opened, not mapped: its owner decides whether root maps it.
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) return errno_error("open " + path_, errno);
    if (::fstat(fd.get(), &st) < 0) return errno_error("stat " + path_, errno);
    if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::kPerm, path_ + ": not a regular file");
    env_.reset();
    owned_fd_ = std::move(fd);
    if (st.st_uid == 0) {
      // Root's own table: mapped here, as always (through the same open file).
      Result<std::unique_ptr<lmdb::Env>> env = open_compiled("/proc/self/fd/" + std::to_string(owned_fd_.get()), dbi_);
      if (!env) return env.take_error();
      env_ = std::move(env).value();
      owned_fd_.reset();
    }
  } else {
    Result<std::unique_ptr<lmdb::Env>> env = open_compiled(path_, dbi_);
    if (!env) return env.take_error();
    // The owner and identity of the file LMDB opened, not of the name's stat above.
    int fd = -1;
    if (mdb_env_get_fd((*env)->get(), &fd) != 0 || ::fstat(fd, &st) < 0) {
      return errno_error("stat " + path_, errno);
    }
    env_ = std::move(env).value();
  }
  inode_ = st.st_ino;
  mtime_ = st.st_mtim;
  owner_ = st.st_uid;
  return {};
}

Result<std::optional<std::string>> Map::lookup(const std::string& key_in) {
  if (Status s = refresh(); !s) return s.take_error();
  const std::string key = to_lower(key_in);
  if (type_ == "texthash") {
    // Last definition wins, as with compiled tables.
    auto it = std::upper_bound(text_.begin(), text_.end(), key,
                               [](const std::string& k, const auto& e) { return k < e.first; });
    if (it == text_.begin() || std::prev(it)->first != key) return std::optional<std::string>();
    return std::optional<std::string>(std::prev(it)->second);
  }
  if (owned_fd_) {
    // Another user's compiled table: looked up by a child that is that user, on
    // the file root opened (so the owner is the owner of what is read).
    const std::string via = "/proc/self/fd/" + std::to_string(owned_fd_.get());
    Result<std::string> got = run_as(
        owner_,
        [&]() -> Result<std::string> {
          MDB_dbi dbi = 0;
          Result<std::unique_ptr<lmdb::Env>> env = open_compiled(via, dbi);
          if (!env) return env.take_error();
          std::string answer = "-";  // absent
          Status s = lmdb::read(**env, [&](lmdb::Txn& t) -> Status {
            Result<std::string_view> v = t.get(dbi, key);
            if (v) answer = "+" + std::string(*v);
            else if (v.error().kind != ErrorKind::kNotFound) return v.take_error();
            return {};
          });
          if (!s) return s.take_error();
          return answer;
        },
        kMaxOwnerValue);
    if (!got) return make_error(ErrorKind::kTemp, "map " + spec_ + ": " + got.error().message);
    if (got->empty() || (*got)[0] == '-') return std::optional<std::string>();
    return std::optional<std::string>(got->substr(1));
  }
  std::optional<std::string> out;
  Status s = lmdb::read(*env_, [&](lmdb::Txn& t) -> Status {
    Result<std::string_view> v = t.get(dbi_, key);
    if (v) out = std::string(*v);
    else if (v.error().kind != ErrorKind::kNotFound) return v.take_error();
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

}  // namespace tern::common
