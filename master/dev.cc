#include "master/dev.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "common/config.h"
#include "common/privilege.h"
#include "common/safe_path.h"
#include "common/tls.h"

namespace tern::master {

using common::ErrorKind;

namespace {

std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

constexpr const char* kDemoUser = "demo@example.test";

std::string demo_password_path(const std::string& dir) { return dir + "/demo-password"; }

// A random password of 16 letters and digits (no characters a shell or an IMAP
// LOGIN command would need quoted).
common::Result<std::string> random_password() {
  static const char kAlphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  unsigned char raw[16];
  if (::getrandom(raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) return common::errno_error("getrandom", errno);
  std::string out;
  for (unsigned char c : raw) out += kAlphabet[c % (sizeof kAlphabet - 1)];
  return out;
}

// Creates the demo user with `ternctl user add`, the password on a pipe (never in
// argv), and keeps the password in DIR/demo-password (0600) for the banner.
common::Status make_demo_user(const std::string& dir, const std::string& conf) {
  const std::string pw_path = demo_password_path(dir);
  if (::access(pw_path.c_str(), F_OK) == 0) return {};
  common::Result<std::string> pw = random_password();
  if (!pw) return pw.take_error();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return common::errno_error("pipe", errno);
  const std::string ternctl = self_dir() + "/ternctl";
  pid_t pid = ::fork();
  if (pid < 0) return common::errno_error("fork", errno);
  if (pid == 0) {
    ::dup2(p[0], 0);
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 1);
    ::execl(ternctl.c_str(), "ternctl", "-c", conf.c_str(), "user", "add", kDemoUser, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(p[0]);
  std::string line = *pw + "\n";
  bool wrote = ::write(p[1], line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(p[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!wrote || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return common::make_error(ErrorKind::kTemp, "could not create the demo user with " + ternctl + " user add");
  }
  int fd = ::open(pw_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return common::errno_error("create " + pw_path, errno);
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ::close(fd);
  if (!ok) return common::errno_error("write " + pw_path, errno);
  return {};
}

// The virtual users' mail lives under the fixed part of mail_home (./var/mail in the
// development default). tern-mda and tern-mra run as mail_uid and create each
// user's directory below it, so it must exist and belong to mail_uid: as root, ./var
// is root's and they could not create it themselves. An existing directory is left
// as it is (the administrator may have chosen other owners).
common::Status ensure_mail_base(const std::string& conf) {
  common::Result<common::Config> c = common::Config::load_file(conf);
  if (!c) return c.take_error();
  std::string home = c->str("mail_home");
  size_t var = home.find_first_of("%~");
  if (var != std::string::npos) home.resize(var);
  size_t slash = home.rfind('/');
  if (slash == std::string::npos || slash == 0) return {};
  const std::string base = home.substr(0, slash);
  struct stat st;
  if (::stat(base.c_str(), &st) == 0) return {};
  common::DirOwner owner{::geteuid(), ::getegid()};
  if (::geteuid() == 0) {
    common::Result<common::UserIds> u = common::lookup_user(c->str("mail_uid"));
    if (!u) return common::make_error(ErrorKind::kConfig, conf + ": mail_uid = " + c->str("mail_uid") + ": " + u.error().message);
    common::Result<gid_t> g = common::lookup_group(c->str("mail_gid"));
    if (!g) return common::make_error(ErrorKind::kConfig, conf + ": mail_gid = " + c->str("mail_gid") + ": " + g.error().message);
    owner = {u->uid, *g};
  }
  if (common::Result<common::UniqueFd> fd = common::make_directory_safely(base, owner, 0750); !fd) return fd.take_error();
  return {};
}

}  // namespace

common::Result<std::string> prepare_dev(const std::string& dir_in) {
  if (::mkdir(dir_in.c_str(), 0755) < 0 && errno != EEXIST) return common::errno_error("mkdir " + dir_in, errno);
  char real[PATH_MAX];
  if (!::realpath(dir_in.c_str(), real)) return common::errno_error("realpath " + dir_in, errno);
  const std::string dir = real;
  const std::string conf = dir + "/tern.conf";
  const std::string tls_dir = dir + "/tls";
  if (::mkdir(tls_dir.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + tls_dir, errno);
  const std::string cert = tls_dir + "/cert.pem", key = tls_dir + "/key.pem";
  if (::access(cert.c_str(), R_OK) != 0 || ::access(key.c_str(), R_OK) != 0) {
    if (common::Status s = common::tls::make_self_signed(cert, key, "mail.example.test"); !s) return s.take_error();
  }
  if (::access(conf.c_str(), F_OK) == 0) {
    if (common::Status s = ensure_mail_base(conf); !s) return s.take_error();
    if (common::Status s = make_demo_user(dir, conf); !s) return s.take_error();
    return conf;
  }

  // Who the daemons run as: as root, the system users scripts/setup creates (as a
  // package would); otherwise the invoking user for all of them.
  std::string owner, login, auth, mail_uid, mail_gid, first_uid;
  if (::geteuid() == 0) {
    for (const char* u : {"tern", "tern-login", "tern-auth", "vmail"}) {
      if (!common::lookup_user(u)) {
        return common::make_error(ErrorKind::kConfig, std::string("system user '") + u +
                                                           "' does not exist: run scripts/setup (it creates tern, "
                                                           "tern-login, tern-auth and vmail)");
      }
    }
    owner = "tern";
    login = "tern-login";
    auth = "tern-auth";
    mail_uid = "vmail";
    mail_gid = "vmail";
    first_uid = "100";
  } else {
    common::UserIds me = common::current_user();
    owner = login = auth = mail_uid = me.name;
    mail_gid = std::to_string(me.gid);
    first_uid = std::to_string(std::min<uid_t>(me.uid, 500));
  }
  const std::string aliases = dir + "/aliases";
  if (::access(aliases.c_str(), F_OK) != 0) {
    // RFC 5321 4.5.1: mail to postmaster must be deliverable. The system's
    // /etc/aliases may be uncompiled or point at root, who has no mailbox here.
    std::ofstream a(aliases);
    a << "# aliases(5) of the development default; edit freely, no newaliases needed.\n"
         "postmaster: " << kDemoUser << "\n"
         "root: " << kDemoUser << "\n";
    a.close();
    if (!a) return common::make_error(ErrorKind::kTemp, "cannot write " + aliases);
  }
  std::ofstream out(conf);
  out << "# Tern development configuration, written by tern-master --dev.\n"
         "# Edit freely: it is not rewritten while it exists. Keys are Postfix's and Dovecot's.\n"
         "myhostname = mail.example.test\n"
         "mydomain = example.test\n"
         "mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain\n"
         "inet_interfaces = 127.0.0.1\n"
         "inet_protocols = ipv4\n"
         "smtpd_port = 2525\n"
         "submission_port = 2587\n"
         "smtps_port = 2465\n"
         "imap_port = 1143\n"
         "imaps_port = 1993\n"
         "pop3_port = 1110\n"
         "pop3s_port = 1995\n"
         "base_dir = " << dir << "/run\n"
         "queue_directory = " << dir << "/spool\n"
         "data_directory = " << dir << "/lib\n"
         "daemon_directory = " << self_dir() << "\n"
         "command_directory = " << self_dir() << "\n"
         "mail_home = " << dir << "/mail/%d/%n\n"
         "# Postmaster and root reach the demo user (texthash: needs no newaliases).\n"
         "alias_maps = texthash:" << dir << "/aliases\n"
         "alias_database = texthash:" << dir << "/aliases\n"
         "maillog_file = /dev/stderr\n"
         "smtpd_tls_cert_file = " << cert << "\n"
         "smtpd_tls_key_file = " << key << "\n"
         "mail_owner = " << owner << "\n"
         "default_login_user = " << login << "\n"
         "authd_user = " << auth << "\n"
         "mail_uid = " << mail_uid << "\n"
         "mail_gid = " << mail_gid << "\n"
         "first_valid_uid = " << first_uid << "\n"
         "# Loopback only: let telnet and plain IMAP LOGIN work without TLS for trying\n"
         "# things out. The built-in default (yes) refuses passwords without TLS.\n"
         "disable_plaintext_auth = no\n";
  out.close();
  if (!out) return common::make_error(ErrorKind::kTemp, "cannot write " + conf);
  // Check what we wrote with the same parser the daemons use.
  if (common::Result<common::Config> c = common::Config::load_file(conf); !c) return c.take_error();
  if (common::Status s = ensure_mail_base(conf); !s) return s.take_error();
  if (common::Status s = make_demo_user(dir, conf); !s) return s.take_error();
  return conf;
}

// cfg is the configuration in effect: the file with the -o overrides applied, so
// the banner shows the ports that really listen.
std::string dev_banner(const std::string& dir, const std::string& config_path, const common::Config& cfg) {
  auto port = [&](const char* k) { return cfg.str(k); };
  std::string host = "127.0.0.1";
  std::string b;
  b += "\nTern is running (development default), state in " + dir + "\n";
  b += "  SMTP       " + host + ":" + port("smtpd_port") + "   submission " + host + ":" + port("submission_port") +
       "   SMTPS " + host + ":" + port("smtps_port") + "\n";
  b += "  IMAP       " + host + ":" + port("imap_port") + "   IMAPS      " + host + ":" + port("imaps_port") + "\n";
  b += "  POP3       " + host + ":" + port("pop3_port") + "   POP3S      " + host + ":" + port("pop3s_port") + "\n";
  b += "  config     " + config_path + "   (ternctl -c " + config_path + " status)\n";
  std::string pw;
  {
    std::ifstream in(demo_password_path(dir));
    std::getline(in, pw);
  }
  if (!pw.empty()) {
    const std::string sub = port("submission_port"), imap = port("imap_port"), imaps = port("imaps_port");
    b += "  demo user  " + std::string(kDemoUser) + "   password " + pw + "   (kept in " + demo_password_path(dir) + ")\n";
    b += "Try it:\n";
    b += "  swaks --server " + host + ":" + sub + " --tls --auth PLAIN --auth-user " + kDemoUser + " --auth-password " + pw +
         " --from " + kDemoUser + " --to " + kDemoUser + "\n";
    b += "  telnet " + host + " " + imap + "      then type:  a LOGIN " + kDemoUser + " " + pw + "\n";
    b += "  mutt -f 'imaps://demo%40example.test@" + host + ":" + imaps + "/'   (accept the self-signed certificate; password above)\n";
    b += "  ternctl -c " + config_path + " user add you@example.test   (more users; the password is asked for)\n";
  }
  b += "Ctrl-C stops everything.\n";
  return b;
}

}  // namespace tern::master
