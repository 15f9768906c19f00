#include "authd/userdb.h"

#include <unistd.h>

#include "common/auth_protocol.h"
#include "common/text.h"

namespace tern::authd {

using common::ErrorKind;
using common::make_error;
namespace ap = common::auth_protocol;

namespace {

// Parses "k=v\tk=v..." and calls fn(key, value) for each field.
template <class Fn>
common::Status parse_fields(std::string_view data, Fn fn) {
  if (data.empty()) return {};
  for (const std::string& raw : common::split(data, '\t')) {
    std::optional<std::string> f = ap::tab_unescape(raw);
    if (!f) return make_error(ErrorKind::kPerm, "bad escape in record");
    size_t eq = f->find('=');
    if (eq == std::string::npos) return make_error(ErrorKind::kPerm, "field without '=' in record");
    fn(f->substr(0, eq), f->substr(eq + 1));
  }
  return {};
}

void add(std::string& out, std::string_view k, std::string_view v) {
  if (v.empty()) return;
  if (!out.empty()) out += '\t';
  out += ap::tab_escape(std::string(k) + "=" + std::string(v));
}

}  // namespace

std::string encode_user(const UserRecord& u) {
  std::string out;
  add(out, "password", u.password);
  for (const std::string& s : u.scram) add(out, "scram", s);
  add(out, "cram", u.cram);
  add(out, "uid", u.uid);
  add(out, "gid", u.gid);
  add(out, "home", u.home);
  add(out, "mail", u.mail);
  add(out, "quota_rule", u.quota_rule);
  add(out, "enabled", u.enabled ? "yes" : "no");
  return out;
}

common::Result<UserRecord> decode_user(std::string_view name, std::string_view data) {
  UserRecord u;
  u.name = std::string(name);
  common::Status st = parse_fields(data, [&](const std::string& k, const std::string& v) {
    if (k == "password") u.password = v;
    else if (k == "scram") {
      if (!v.empty()) u.scram.push_back(v);  // an empty value is no secret (and would not round-trip)
    }
    else if (k == "cram") u.cram = v;
    else if (k == "uid") u.uid = v;
    else if (k == "gid") u.gid = v;
    else if (k == "home") u.home = v;
    else if (k == "mail") u.mail = v;
    else if (k == "quota_rule") u.quota_rule = v;
    else if (k == "enabled") u.enabled = v != "no";
    // Unknown fields come from a newer version: kept out, not an error.
  });
  if (!st) return make_error(ErrorKind::kPerm, "user " + common::log_escape(name) + ": " + st.error().message);
  return u;
}

std::string encode_domain(const DomainRecord& d) {
  std::string out;
  add(out, "uid", d.uid);
  add(out, "gid", d.gid);
  add(out, "home", d.home);
  add(out, "mail", d.mail);
  add(out, "quota_rule", d.quota_rule);
  add(out, "enabled", d.enabled ? "yes" : "no");
  return out;
}

common::Result<DomainRecord> decode_domain(std::string_view name, std::string_view data) {
  DomainRecord d;
  d.name = std::string(name);
  common::Status st = parse_fields(data, [&](const std::string& k, const std::string& v) {
    if (k == "uid") d.uid = v;
    else if (k == "gid") d.gid = v;
    else if (k == "home") d.home = v;
    else if (k == "mail") d.mail = v;
    else if (k == "quota_rule") d.quota_rule = v;
    else if (k == "enabled") d.enabled = v != "no";
  });
  if (!st) return make_error(ErrorKind::kPerm, "domain " + common::log_escape(name) + ": " + st.error().message);
  return d;
}

common::Result<std::string> canonical_user(std::string_view name, std::string_view default_realm) {
  std::string n = common::to_lower(name);
  if (n.find('@') == std::string::npos && !default_realm.empty()) n += "@" + common::to_lower(default_realm);
  if (!ap::valid_user_name(n)) return make_error(ErrorKind::kPerm, "invalid user name");
  size_t at = n.find('@');
  if (at != std::string::npos) {
    if (at == 0 || at + 1 == n.size() || n.find('@', at + 1) != std::string::npos) {
      return make_error(ErrorKind::kPerm, "invalid user name (expected local@domain)");
    }
  }
  return n;
}

std::string_view domain_of(std::string_view user) {
  size_t at = user.rfind('@');
  return at == std::string_view::npos ? std::string_view() : user.substr(at + 1);
}

std::string_view local_part(std::string_view user) {
  size_t at = user.rfind('@');
  return at == std::string_view::npos ? user : user.substr(0, at);
}

std::string expand_template(std::string_view tmpl, std::string_view user) {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c != '%' || i + 1 >= tmpl.size()) {
      out += c;
      continue;
    }
    char v = tmpl[++i];
    if (v == '{') {
      size_t close = tmpl.find('}', i);
      if (close == std::string_view::npos) {
        out += "%{";
        continue;
      }
      std::string_view name = tmpl.substr(i + 1, close - i - 1);
      i = close;
      if (name == "user") out += user;
      else if (name == "username") out += local_part(user);
      else if (name == "domain") out += domain_of(user);
      continue;
    }
    switch (v) {
      case 'u': out += user; break;
      case 'n': out += local_part(user); break;
      case 'd': out += domain_of(user); break;
      case '%': out += '%'; break;
      default: out += '%'; out += v;
    }
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> userdb_fields(const UserRecord& u, const DomainRecord* d,
                                                               const UserdbDefaults& defaults) {
  auto pick = [&](const std::string& mine, std::string DomainRecord::*field, const std::string& def) {
    if (!mine.empty()) return mine;
    if (d && !(d->*field).empty()) return d->*field;
    return def;
  };
  std::vector<std::pair<std::string, std::string>> out;
  out.emplace_back("uid", pick(u.uid, &DomainRecord::uid, defaults.uid));
  out.emplace_back("gid", pick(u.gid, &DomainRecord::gid, defaults.gid));
  std::string home = expand_template(pick(u.home, &DomainRecord::home, defaults.home), u.name);
  out.emplace_back("home", home);
  // mail_location's "~" is the home directory; Dovecot expands it in the mail
  // process, so the template is passed on with only the user variables filled in.
  out.emplace_back("mail", expand_template(pick(u.mail, &DomainRecord::mail, defaults.mail), u.name));
  std::string quota = pick(u.quota_rule, &DomainRecord::quota_rule, defaults.quota_rule);
  if (!quota.empty()) out.emplace_back("quota_rule", quota);
  return out;
}

bool glob_match(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

std::string UserDb::path_for(const common::Config& cfg) { return cfg.str("data_directory") + "/auth/users.lmdb"; }

common::Result<std::unique_ptr<UserDb>> UserDb::open(const std::string& path, bool create) {
  common::lmdb::Env::Options o;
  // A few hundred bytes per user: 256 MiB of (sparse) map holds about a million
  // users before ternctl has to grow it.
  o.map_size = 256u << 20;
  o.max_dbs = 4;
  // Read transactions from the threadpool and the loop thread alike.
  o.flags = MDB_NOSUBDIR | MDB_NOTLS;
  if (!create) {
    if (::access(path.c_str(), F_OK) != 0) {
      return make_error(ErrorKind::kNotFound, "user database " + path + " does not exist yet (ternctl user add creates it)");
    }
  }
  common::Result<std::unique_ptr<common::lmdb::Env>> env = common::lmdb::Env::open(path, o);
  if (!env) return env.take_error();
  std::unique_ptr<UserDb> db(new UserDb);
  db->env_ = std::move(env).value();
  common::Status st = common::lmdb::write(*db->env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<MDB_dbi> u = t.open_db("users", true);
    if (!u) return u.take_error();
    common::Result<MDB_dbi> d = t.open_db("domains", true);
    if (!d) return d.take_error();
    db->users_ = *u;
    db->domains_ = *d;
    return {};
  });
  if (!st) return st.take_error();
  return db;
}

common::Result<UserRecord> UserDb::get_user(std::string_view name) {
  common::Result<UserRecord> out = make_error(ErrorKind::kNotFound, "no such user");
  common::Status st = common::lmdb::read(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<std::string_view> v = t.get(users_, name);
    if (!v) return v.take_error();
    out = decode_user(name, *v);
    return {};
  });
  if (!st) return st.take_error();
  return out;
}

common::Result<DomainRecord> UserDb::get_domain(std::string_view name) {
  common::Result<DomainRecord> out = make_error(ErrorKind::kNotFound, "no such domain");
  common::Status st = common::lmdb::read(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<std::string_view> v = t.get(domains_, name);
    if (!v) return v.take_error();
    out = decode_domain(name, *v);
    return {};
  });
  if (!st) return st.take_error();
  return out;
}

common::Status UserDb::put_user(const UserRecord& u, bool must_be_new) {
  return common::lmdb::write(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    return t.put(users_, u.name, encode_user(u), must_be_new ? MDB_NOOVERWRITE : 0);
  });
}

common::Status UserDb::del_user(std::string_view name) {
  return common::lmdb::write(*env_, [&](common::lmdb::Txn& t) -> common::Status { return t.del(users_, name); });
}

common::Status UserDb::put_domain(const DomainRecord& d, bool must_be_new) {
  return common::lmdb::write(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    return t.put(domains_, d.name, encode_domain(d), must_be_new ? MDB_NOOVERWRITE : 0);
  });
}

common::Status UserDb::del_domain(std::string_view name, bool with_users) {
  const std::string suffix = "@" + std::string(name);
  return common::lmdb::write(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    std::vector<std::string> members;
    {
      common::Result<common::lmdb::Cursor> c = common::lmdb::Cursor::open(t, users_);
      if (!c) return c.take_error();
      for (auto e = c->first(); e; e = c->next()) {
        std::string_view k = e->first;
        if (k.size() > suffix.size() && k.substr(k.size() - suffix.size()) == suffix) members.emplace_back(k);
      }
    }
    if (!members.empty() && !with_users) {
      return make_error(ErrorKind::kInUse, "domain " + std::string(name) + " still has " + std::to_string(members.size()) +
                                               " users (delete them first, or use --with-users)");
    }
    for (const std::string& m : members) {
      if (common::Status s = t.del(users_, m); !s) return s;
    }
    return t.del(domains_, name);
  });
}

common::Result<std::vector<std::string>> UserDb::list_users(std::string_view mask, size_t limit) {
  std::vector<std::string> out;
  common::Status st = common::lmdb::read(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<common::lmdb::Cursor> c = common::lmdb::Cursor::open(t, users_);
    if (!c) return c.take_error();
    for (auto e = c->first(); e && out.size() < limit; e = c->next()) {
      if (mask.empty() || glob_match(mask, e->first)) out.emplace_back(e->first);
    }
    return {};
  });
  if (!st) return st.take_error();
  return out;
}

common::Result<bool> UserDb::any_scram() {
  bool found = false;
  common::Status st = common::lmdb::read(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<common::lmdb::Cursor> c = common::lmdb::Cursor::open(t, users_);
    if (!c) return c.take_error();
    for (auto e = c->first(); e && !found; e = c->next()) {
      // Only records that mention the field are decoded: a database without secrets
      // (the default) is a plain scan.
      if (e->second.find("scram=") == std::string_view::npos) continue;
      common::Result<UserRecord> u = decode_user(e->first, e->second);
      found = u && !u->scram.empty();
    }
    return {};
  });
  if (!st) return st.take_error();
  return found;
}

common::Result<std::vector<DomainRecord>> UserDb::list_domains() {
  std::vector<DomainRecord> out;
  common::Status st = common::lmdb::read(*env_, [&](common::lmdb::Txn& t) -> common::Status {
    common::Result<common::lmdb::Cursor> c = common::lmdb::Cursor::open(t, domains_);
    if (!c) return c.take_error();
    for (auto e = c->first(); e; e = c->next()) {
      common::Result<DomainRecord> d = decode_domain(e->first, e->second);
      if (d) out.push_back(std::move(d).value());
    }
    return {};
  });
  if (!st) return st.take_error();
  return out;
}

}  // namespace tern::authd
