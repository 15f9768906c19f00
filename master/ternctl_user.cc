// ternctl user / domain / pw: the virtual-user database (doveadm user, doveadm pw).
//
// Passwords never come from argv (ps(1) and shell history show it): on a terminal
// they are read from /dev/tty with echo off and typed twice; otherwise one line is
// read from standard input, so scripts and tests can pipe them in. They are never
// logged. Run as root, ternctl becomes authd_user before it opens the database, so
// the files stay owned by the only user that may read them.
#include <fcntl.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include "authd/password.h"
#include "authd/userdb.h"
#include "common/auth_protocol.h"
#include "common/privilege.h"
#include "common/services.h"
#include "common/text.h"
#include "master/ternctl.h"

namespace tern::ternctl {

using authd::UserDb;
using authd::UserRecord;

namespace {

int fail(const std::string& msg, int code) {
  std::fprintf(stderr, "ternctl: %s\n", msg.c_str());
  return code;
}

// One line from fd, without its newline; false at EOF before any byte.
bool read_line_fd(int fd, std::string& out, size_t max) {
  out.clear();
  char c;
  bool any = false;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return any;
    any = true;
    if (c == '\n') break;
    if (out.size() < max) out += c;
  }
  if (!out.empty() && out.back() == '\r') out.pop_back();
  return true;
}

// Reads a secret: from the terminal without echo (typed twice when `confirm`), or
// one line from standard input when it is not a terminal.
common::Result<std::string> read_secret(const char* prompt, bool confirm) {
  constexpr size_t kMax = 1024;  // longer than any real password; bounds the read
  if (!::isatty(0)) {
    std::string s;
    if (!read_line_fd(0, s, kMax)) return common::make_error(common::ErrorKind::kPerm, "no password on standard input");
    return s;
  }
  int tty = ::open("/dev/tty", O_RDWR | O_CLOEXEC);
  if (tty < 0) return common::errno_error("open /dev/tty", errno);
  termios old{};
  ::tcgetattr(tty, &old);
  termios quiet = old;
  quiet.c_lflag &= static_cast<tcflag_t>(~ECHO);
  quiet.c_lflag |= ECHONL;
  ::tcsetattr(tty, TCSAFLUSH, &quiet);
  auto ask = [&](const char* p, std::string& out) {
    (void)!::write(tty, p, std::strlen(p));
    return read_line_fd(tty, out, kMax);
  };
  std::string a, b;
  bool ok = ask(prompt, a) && (!confirm || ask("Retype password: ", b));
  ::tcsetattr(tty, TCSAFLUSH, &old);
  ::close(tty);
  if (!ok) return common::make_error(common::ErrorKind::kPerm, "no password entered");
  if (confirm && a != b) return common::make_error(common::ErrorKind::kPerm, "the passwords do not match");
  return a;
}

// Becomes authd_user (when root) and opens the database.
common::Result<std::unique_ptr<UserDb>> open_db(const common::Config& cfg, bool create) {
  if (::geteuid() == 0) {
    // The master creates data_directory/auth at start; do it here too so that users
    // can be added before the first start.
    std::vector<common::DirectorySpec> dirs;
    for (const common::DirectorySpec& d : common::directory_table(cfg)) {
      if (d.path == cfg.str("data_directory") || d.path == cfg.str("data_directory") + "/auth") dirs.push_back(d);
    }
    if (common::Status s = common::make_directories(dirs); !s) return s.take_error();
    common::Result<common::UserIds> u = common::lookup_user(cfg.str("authd_user"));
    if (!u) return common::make_error(common::ErrorKind::kConfig, "authd_user = " + cfg.str("authd_user") + ": " + u.error().message);
    if (u->uid != 0) {
      if (common::Status s = common::drop_privileges(*u, u->gid); !s) return s.take_error();
    }
  }
  return UserDb::open(UserDb::path_for(cfg), create);
}

struct Opts {
  std::vector<std::string> positional;
  std::string uid, gid, home, mail, quota, scheme;
  bool hash_input = false, disabled = false, enabled = false, with_users = false;
  std::string bad;
};

Opts parse_opts(const std::vector<std::string>& args, size_t from) {
  Opts o;
  for (size_t i = from; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= args.size()) o.bad = a + " needs a value";
      else out = args[++i];
    };
    if (a == "--uid") value(o.uid);
    else if (a == "--gid") value(o.gid);
    else if (a == "--home") value(o.home);
    else if (a == "--mail") value(o.mail);
    else if (a == "--quota") value(o.quota);
    else if (a == "-s" || a == "--scheme") value(o.scheme);
    else if (a == "--hash") o.hash_input = true;
    else if (a == "--disabled" || a == "--disable") o.disabled = true;
    else if (a == "--enable") o.enabled = true;
    else if (a == "--with-users") o.with_users = true;
    else if (!a.empty() && a[0] == '-') o.bad = "unknown option " + a;
    else o.positional.push_back(a);
  }
  return o;
}

bool valid_number(const std::string& s) { return s.empty() || common::parse_u64(s).has_value(); }

// The secrets stored for a new password: the crypt hash, and SCRAM secrets and the
// plaintext-equivalent value only when the admin switched them on. A SCRAM secret is
// PBKDF2 at auth_scram_iterations, so it would let a stolen database be guessed at
// PBKDF2's speed rather than the crypt hash's (yescrypt): off by default. Changing a
// password with auth_scram_secrets = no drops the user's old secrets.
common::Status set_password(const common::Config& cfg, UserRecord& u, const std::string& password, const std::string& scheme_name) {
  std::string sn = scheme_name.empty() ? cfg.str("auth_password_scheme") : scheme_name;
  std::optional<authd::Scheme> scheme = authd::parse_scheme(sn);
  if (!scheme) return common::make_error(common::ErrorKind::kConfig, "unknown password scheme '" + sn + "' (yescrypt, BLF-CRYPT, SHA512-CRYPT)");
  if (password.empty()) return common::make_error(common::ErrorKind::kPerm, "empty password refused");
  common::Result<std::string> h = authd::hash_password(password, *scheme);
  if (!h) return h.take_error();
  u.password = *h;
  u.scram.clear();
  const unsigned iter = static_cast<unsigned>(cfg.integer("auth_scram_iterations"));
  for (authd::ScramHash sh : {authd::ScramHash::kSha256, authd::ScramHash::kSha1}) {
    if (!cfg.boolean("auth_scram_secrets")) break;
    common::Result<std::string> s = authd::scram_secret(password, sh, iter);
    if (!s) return s.take_error();
    u.scram.push_back(*s);
  }
  u.cram = cfg.boolean("auth_plaintext_equivalent") ? password : "";
  return {};
}

common::Result<std::string> user_arg(const common::Config& cfg, const std::string& name) {
  common::Result<std::string> n = authd::canonical_user(name, cfg.str("auth_default_realm"));
  if (!n) return n;
  if (n->find('@') == std::string::npos) {
    return common::make_error(common::ErrorKind::kPerm, "virtual users are user@domain (or set auth_default_realm)");
  }
  return n;
}

int user_add_or_passwd(const Invocation& inv, bool add) {
  Opts o = parse_opts(inv.args, 1);
  if (!o.bad.empty() || o.positional.size() != 1) {
    return fail(o.bad.empty() ? std::string("usage: ternctl user ") + (add ? "add" : "passwd") +
                                    " [--hash] [-s SCHEME] [--uid N] [--gid N] [--home DIR] [--mail LOCATION] "
                                    "[--quota RULE] [--disabled] USER@DOMAIN  (password on stdin or the terminal)"
                              : o.bad,
                EX_USAGE);
  }
  if (!valid_number(o.uid) || !valid_number(o.gid)) return fail("--uid and --gid take numbers", EX_USAGE);
  common::Config cfg = inv.load_config();
  common::Result<std::string> name = user_arg(cfg, o.positional[0]);
  if (!name) return fail("'" + common::log_escape(o.positional[0], 64) + "': " + name.error().message, EX_DATAERR);
  std::string secret;
  if (o.hash_input) {
    common::Result<std::string> h = read_secret("Password hash: ", false);
    if (!h) return fail(h.error().message, EX_DATAERR);
    secret = *h;
    std::string why = authd::check_importable_hash(secret);
    if (!why.empty()) return fail(why, EX_DATAERR);
  } else {
    common::Result<std::string> p = read_secret("Password: ", true);
    if (!p) return fail(p.error().message, EX_DATAERR);
    secret = *p;
  }
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, true);
  if (!db) return fail(db.error().message, EX_CANTCREAT);
  UserRecord u;
  if (!add) {
    common::Result<UserRecord> old = (*db)->get_user(*name);
    if (!old) return fail("no such user: " + *name, EX_NOUSER);
    u = *old;
  }
  u.name = *name;
  if (o.hash_input) {
    // An imported hash: no SCRAM or CRAM secrets can be derived from it.
    u.password = secret;
    u.scram.clear();
    u.cram.clear();
  } else if (common::Status s = set_password(cfg, u, secret, o.scheme); !s) {
    std::memset(secret.data(), 0, secret.size());
    return fail(s.error().message, EX_DATAERR);
  }
  std::memset(secret.data(), 0, secret.size());
  if (!o.uid.empty()) u.uid = o.uid;
  if (!o.gid.empty()) u.gid = o.gid;
  if (!o.home.empty()) u.home = o.home;
  if (!o.mail.empty()) u.mail = o.mail;
  if (!o.quota.empty()) u.quota_rule = o.quota;
  if (o.disabled) u.enabled = false;
  if (o.enabled) u.enabled = true;
  if (common::Status s = (*db)->put_user(u, add); !s) {
    if (s.error().kind == common::ErrorKind::kExists) return fail("user " + *name + " already exists (ternctl user passwd changes the password)", EX_DATAERR);
    return fail(s.error().message, EX_IOERR);
  }
  if (add) {
    const std::string domain(authd::domain_of(*name));
    if (!(*db)->get_domain(domain)) {
      authd::DomainRecord d;
      d.name = domain;
      (void)(*db)->put_domain(d, true);
      std::printf("added domain %s\n", domain.c_str());
    }
    std::printf("added user %s\n", name->c_str());
  } else {
    std::printf("changed password of %s\n", name->c_str());
  }
  return 0;
}

int user_del(const Invocation& inv) {
  if (inv.args.size() != 2) return fail("usage: ternctl user del USER@DOMAIN", EX_USAGE);
  common::Config cfg = inv.load_config();
  common::Result<std::string> name = user_arg(cfg, inv.args[1]);
  if (!name) return fail(name.error().message, EX_DATAERR);
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, false);
  if (!db) return fail(db.error().message, EX_UNAVAILABLE);
  if (common::Status s = (*db)->del_user(*name); !s) {
    if (s.error().kind == common::ErrorKind::kNotFound) return fail("no such user: " + *name, EX_NOUSER);
    return fail(s.error().message, EX_IOERR);
  }
  std::printf("deleted user %s (its mail is left where it is)\n", name->c_str());
  return 0;
}

int user_list(const Invocation& inv) {
  std::string mask = inv.args.size() > 1 ? inv.args[1] : "";
  common::Config cfg = inv.load_config();
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, false);
  if (!db) {
    if (db.error().kind == common::ErrorKind::kNotFound) return 0;  // no users yet
    return fail(db.error().message, EX_UNAVAILABLE);
  }
  common::Result<std::vector<std::string>> users = (*db)->list_users(common::to_lower(mask), SIZE_MAX);
  if (!users) return fail(users.error().message, EX_IOERR);
  for (const std::string& u : *users) std::printf("%s\n", u.c_str());
  return 0;
}

std::string hash_scheme(const std::string& h) {
  if (!h.empty() && h[0] == '{') return h.substr(1, h.find('}') - 1);
  if (h.rfind("$y$", 0) == 0) return "yescrypt";
  if (h.rfind("$2", 0) == 0) return "BLF-CRYPT";
  if (h.rfind("$6$", 0) == 0) return "SHA512-CRYPT";
  if (h.rfind("$5$", 0) == 0) return "SHA256-CRYPT";
  if (h.rfind("$1$", 0) == 0) return "MD5-CRYPT";
  return "unknown";
}

int user_show(const Invocation& inv) {
  if (inv.args.size() != 2) return fail("usage: ternctl user show USER@DOMAIN", EX_USAGE);
  common::Config cfg = inv.load_config();
  common::Result<std::string> name = user_arg(cfg, inv.args[1]);
  if (!name) return fail(name.error().message, EX_DATAERR);
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, false);
  if (!db) return fail(db.error().message, EX_UNAVAILABLE);
  common::Result<UserRecord> u = (*db)->get_user(*name);
  if (!u) return fail("no such user: " + *name, EX_NOUSER);
  common::Result<authd::DomainRecord> d = (*db)->get_domain(std::string(authd::domain_of(*name)));
  authd::UserdbDefaults defs;
  defs.uid = cfg.str("mail_uid");
  defs.gid = cfg.str("mail_gid");
  common::Result<common::UserIds> mu = common::lookup_user(defs.uid);
  if (mu) defs.uid = std::to_string(mu->uid);
  common::Result<gid_t> mg = common::lookup_group(defs.gid);
  if (mg) defs.gid = std::to_string(*mg);
  defs.home = cfg.str("mail_home");
  defs.mail = cfg.str("mail_location");
  std::printf("user       %s\n", u->name.c_str());
  std::printf("enabled    %s\n", u->enabled && (!d || d->enabled) ? "yes" : "no");
  std::printf("password   %s\n", hash_scheme(u->password).c_str());
  std::string scram;
  for (const std::string& s : u->scram) scram += (scram.empty() ? "" : " ") + s.substr(0, s.find('$'));
  std::printf("scram      %s\n", scram.empty() ? "none" : scram.c_str());
  std::printf("cram-md5   %s\n", u->cram.empty() ? "no" : "yes (plaintext-equivalent)");
  for (const auto& [k, v] : authd::userdb_fields(*u, d ? &d.value() : nullptr, defs)) {
    std::printf("%-10s %s\n", k.c_str(), v.c_str());
  }
  return 0;
}

// Dovecot passwd-file: user:password:uid:gid:(gecos):home:(shell):extra_fields
int user_import(const Invocation& inv) {
  if (inv.args.size() != 2) return fail("usage: ternctl user import PASSWD-FILE  (Dovecot passwd-file format)", EX_USAGE);
  common::Config cfg = inv.load_config();
  std::ifstream in(inv.args[1]);
  if (!in) return fail("cannot read " + inv.args[1] + ": " + std::strerror(errno), EX_NOINPUT);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, true);
  if (!db) return fail(db.error().message, EX_CANTCREAT);
  int imported = 0, bad = 0, lineno = 0;
  for (const std::string& line : lines) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = common::split(line, ':');
    if (f.size() < 2) {
      std::fprintf(stderr, "ternctl: %s:%d: expected user:password[:uid:gid:gecos:home:shell:extra]\n", inv.args[1].c_str(), lineno);
      ++bad;
      continue;
    }
    common::Result<std::string> name = user_arg(cfg, f[0]);
    if (!name) {
      std::fprintf(stderr, "ternctl: %s:%d: %s\n", inv.args[1].c_str(), lineno, name.error().message.c_str());
      ++bad;
      continue;
    }
    UserRecord u;
    u.name = *name;
    std::string pw = f[1];
    std::string lower = common::to_lower(pw.substr(0, std::min<size_t>(pw.size(), 12)));
    if (lower.rfind("{plain}", 0) == 0 || lower.rfind("{cleartext}", 0) == 0) {
      // A plaintext password: stored hashed, never as it is.
      std::string plain = pw.substr(pw.find('}') + 1);
      if (common::Status s = set_password(cfg, u, plain, ""); !s) {
        std::fprintf(stderr, "ternctl: %s:%d: %s\n", inv.args[1].c_str(), lineno, s.error().message.c_str());
        ++bad;
        continue;
      }
    } else {
      std::string why = authd::check_importable_hash(pw);
      if (!why.empty()) {
        std::fprintf(stderr, "ternctl: %s:%d: user %s: %s\n", inv.args[1].c_str(), lineno, name->c_str(), why.c_str());
        ++bad;
        continue;
      }
      u.password = pw;
    }
    if (f.size() > 2 && valid_number(f[2])) u.uid = f[2];
    if (f.size() > 3 && valid_number(f[3])) u.gid = f[3];
    if (f.size() > 5) u.home = f[5];
    if (f.size() > 7) {
      // extra fields: "userdb_mail=maildir:~/Maildir userdb_quota_rule=*:storage=1G"
      for (const std::string& e : common::split_any(f[7], " ")) {
        std::string k = e.substr(0, e.find('=')), v = e.find('=') == std::string::npos ? "" : e.substr(e.find('=') + 1);
        if (k.rfind("userdb_", 0) == 0) k = k.substr(7);
        if (k == "mail") u.mail = v;
        else if (k == "quota_rule") u.quota_rule = v;
        else if (k == "home") u.home = v;
        else if (k == "uid") u.uid = v;
        else if (k == "gid") u.gid = v;
        else if (k == "nologin" || k == "deny") u.enabled = false;
      }
    }
    if (common::Status s = (*db)->put_user(u, false); !s) return fail(s.error().message, EX_IOERR);
    const std::string domain(authd::domain_of(*name));
    if (!(*db)->get_domain(domain)) {
      authd::DomainRecord d;
      d.name = domain;
      (void)(*db)->put_domain(d, true);
    }
    ++imported;
  }
  std::printf("imported %d users%s\n", imported, bad ? (", skipped " + std::to_string(bad) + " lines").c_str() : "");
  return bad ? EX_DATAERR : 0;
}

}  // namespace

int cmd_user(const Invocation& inv) {
  const std::string sub = inv.args.empty() ? "" : inv.args[0];
  if (sub == "add") return user_add_or_passwd(inv, true);
  if (sub == "passwd") return user_add_or_passwd(inv, false);
  if (sub == "del") return user_del(inv);
  if (sub == "list") return user_list(inv);
  if (sub == "show") return user_show(inv);
  if (sub == "import") return user_import(inv);
  return fail("usage: ternctl user add|passwd|del|list|show|import ...", EX_USAGE);
}

int cmd_domain(const Invocation& inv) {
  const std::string sub = inv.args.empty() ? "" : inv.args[0];
  Opts o = parse_opts(inv.args, 1);
  if (!o.bad.empty()) return fail(o.bad, EX_USAGE);
  if (!valid_number(o.uid) || !valid_number(o.gid)) return fail("--uid and --gid take numbers", EX_USAGE);
  if (sub == "list") {
    common::Config cfg = inv.load_config();
    common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, false);
    if (!db) return db.error().kind == common::ErrorKind::kNotFound ? 0 : fail(db.error().message, EX_UNAVAILABLE);
    common::Result<std::vector<authd::DomainRecord>> ds = (*db)->list_domains();
    if (!ds) return fail(ds.error().message, EX_IOERR);
    for (const auto& d : *ds) std::printf("%s%s\n", d.name.c_str(), d.enabled ? "" : " (disabled)");
    return 0;
  }
  if ((sub != "add" && sub != "del") || o.positional.size() != 1) {
    return fail("usage: ternctl domain add [--uid N] [--gid N] [--home TEMPLATE] [--mail LOCATION] [--quota RULE] "
                "[--disabled] DOMAIN | domain del [--with-users] DOMAIN | domain list",
                EX_USAGE);
  }
  common::Config cfg = inv.load_config();
  std::string name = common::to_lower(o.positional[0]);
  if (!common::auth_protocol::valid_user_name(name) || name.find('@') != std::string::npos) {
    return fail("invalid domain name '" + common::log_escape(name, 64) + "'", EX_DATAERR);
  }
  common::Result<std::unique_ptr<UserDb>> db = open_db(cfg, sub == "add");
  if (!db) return fail(db.error().message, EX_UNAVAILABLE);
  if (sub == "del") {
    if (common::Status s = (*db)->del_domain(name, o.with_users); !s) {
      if (s.error().kind == common::ErrorKind::kNotFound) return fail("no such domain: " + name, EX_NOUSER);
      return fail(s.error().message, EX_DATAERR);
    }
    std::printf("deleted domain %s\n", name.c_str());
    return 0;
  }
  authd::DomainRecord d;
  common::Result<authd::DomainRecord> old = (*db)->get_domain(name);
  if (old) d = *old;
  d.name = name;
  if (!o.uid.empty()) d.uid = o.uid;
  if (!o.gid.empty()) d.gid = o.gid;
  if (!o.home.empty()) d.home = o.home;
  if (!o.mail.empty()) d.mail = o.mail;
  if (!o.quota.empty()) d.quota_rule = o.quota;
  d.enabled = !o.disabled;
  if (common::Status s = (*db)->put_domain(d, false); !s) return fail(s.error().message, EX_IOERR);
  std::printf("%s domain %s\n", old ? "updated" : "added", name.c_str());
  return 0;
}

int cmd_pw(const Invocation& inv) {
  Opts o = parse_opts(inv.args, 0);
  if (!o.bad.empty() || !o.positional.empty()) return fail("usage: ternctl pw [-s SCHEME]  (password on stdin or the terminal)", EX_USAGE);
  common::Config cfg = inv.load_config();
  std::string sn = o.scheme.empty() ? cfg.str("auth_password_scheme") : o.scheme;
  std::optional<authd::Scheme> scheme = authd::parse_scheme(sn);
  if (!scheme) return fail("unknown password scheme '" + sn + "' (yescrypt, BLF-CRYPT, SHA512-CRYPT)", EX_USAGE);
  common::Result<std::string> p = read_secret("Enter new password: ", true);
  if (!p) return fail(p.error().message, EX_DATAERR);
  if (p->empty()) return fail("empty password refused", EX_DATAERR);
  common::Result<std::string> h = authd::hash_password(*p, *scheme);
  std::memset(p->data(), 0, p->size());
  if (!h) return fail(h.error().message, EX_SOFTWARE);
  // Dovecot's doveadm pw prints the scheme prefix; Tern accepts both forms.
  std::printf("{%s}%s\n", scheme == authd::Scheme::kYescrypt ? "CRYPT" : authd::scheme_name(*scheme), h->c_str());
  return 0;
}

}  // namespace tern::ternctl
