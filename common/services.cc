#include "common/services.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "common/privilege.h"
#include "common/safe_path.h"
#include "common/text.h"

namespace tern::common {
namespace {

Status add_inet(const Config& cfg, const char* list_key, const char* port_key, const std::string& name,
                std::vector<ListenerSpec>& out) {
  int64_t port = cfg.integer(port_key);
  if (port == 0) return {};
  Result<std::vector<std::string>> addrs = net::listen_addresses(cfg.list(list_key), cfg.list("inet_protocols"));
  if (!addrs) {
    return make_error(ErrorKind::kConfig, cfg.origin(list_key) + ": parameter '" + list_key + "': " +
                                              addrs.error().message);
  }
  for (const std::string& a : *addrs) {
    ListenerSpec l;
    l.name = name;
    l.address = a;
    l.port = static_cast<uint16_t>(port);
    out.push_back(l);
  }
  return {};
}

// A unix socket $base_dir/<file> (file "" = the listener's name).
ListenerSpec unix_listener(const Config& cfg, const std::string& name, mode_t mode, const std::string& owner,
                           const std::string& file = "") {
  ListenerSpec l;
  l.name = name;
  l.is_unix = true;
  l.path = cfg.str("base_dir") + "/" + (file.empty() ? name : file);
  l.mode = mode;
  l.owner = owner;
  return l;
}

Result<ServiceSpec> make_service(const Config& cfg, const std::string& name) {
  ServiceSpec s;
  s.name = name;
  s.binary = "tern-" + name;
  if (name == "authd") {
    s.user_key = "authd_user";
    // Logins (tern-mta, tern-mra, a real Postfix) connect to auth-client; authd
    // checks the peer of auth-userdb by SO_PEERCRED.
    s.listeners.push_back(unix_listener(cfg, "auth-client", 0666, cfg.str("authd_user")));
    // The same service inside the login chroot ($base_dir/login, kLoginDir).
    s.listeners.push_back(unix_listener(cfg, "login-auth-client", 0666, cfg.str("authd_user"),
                                        std::string(kLoginDir) + "/auth-client"));
    s.listeners.push_back(unix_listener(cfg, "auth-userdb", 0666, cfg.str("authd_user")));
  } else if (name == "mda") {
    s.user_key = "mail_uid";
    s.listeners.push_back(unix_listener(cfg, "lmtp", 0666, cfg.str("mail_uid")));
  } else if (name == "mta") {
    s.user_key = "mail_owner";
    if (Status st = add_inet(cfg, "inet_interfaces", "smtpd_port", "smtp", s.listeners); !st) return st.take_error();
    if (Status st = add_inet(cfg, "inet_interfaces", "submission_port", "submission", s.listeners); !st) {
      return st.take_error();
    }
    if (Status st = add_inet(cfg, "inet_interfaces", "smtps_port", "smtps", s.listeners); !st) return st.take_error();
    // The sendmail command submits here; tern-mta knows the caller by SO_PEERCRED.
    s.listeners.push_back(unix_listener(cfg, "sendmail", 0666, cfg.str("mail_owner")));
  } else if (name == "mra") {
    s.user_key = "default_login_user";
    if (Status st = add_inet(cfg, "listen", "imap_port", "imap", s.listeners); !st) return st.take_error();
    if (Status st = add_inet(cfg, "listen", "imaps_port", "imaps", s.listeners); !st) return st.take_error();
    if (Status st = add_inet(cfg, "listen", "pop3_port", "pop3", s.listeners); !st) return st.take_error();
    if (Status st = add_inet(cfg, "listen", "pop3s_port", "pop3s", s.listeners); !st) return st.take_error();
  } else if (name == "mra-postlogin") {
    // Started with tern-mra (never named in master_services): the root process that
    // takes logged-in connections from the login process and starts session workers
    // as the mail owners. Only the login user may connect (and SO_PEERCRED is checked).
    s.privileged = true;
    s.listeners.push_back(unix_listener(cfg, "mra-postlogin", 0600, cfg.str("default_login_user"),
                                        std::string(kLoginDir) + "/mra-postlogin"));
  } else {
    return make_error(ErrorKind::kConfig, cfg.origin("master_services") + ": parameter 'master_services': unknown service '" +
                                              log_escape(name, 32) + "' (known: authd, mda, mta, mra)");
  }
  return s;
}

}  // namespace

Result<std::vector<ServiceSpec>> service_table(const Config& cfg) {
  std::vector<ServiceSpec> out;
  std::vector<std::string> names = cfg.list("master_services");
  // Start order: authd first, then the MDA (the MTA delivers to it), then the rest.
  static const char* const kOrder[] = {"authd", "mda", "mta", "mra", "mra-postlogin"};
  // tern-mra's post-login process runs whenever tern-mra does.
  bool has_mra = false;
  for (const std::string& n : names) has_mra = has_mra || n == "mra";
  if (has_mra) names.push_back("mra-postlogin");
  for (const std::string& n : names) {
    bool known = false;
    for (const char* k : kOrder) known = known || n == k;
    if (!known) {
      Result<ServiceSpec> s = make_service(cfg, n);  // produces the error message
      return s.take_error();
    }
  }
  for (const char* k : kOrder) {
    for (const std::string& n : names) {
      if (n != k) continue;
      Result<ServiceSpec> s = make_service(cfg, n);
      if (!s) return s.take_error();
      out.push_back(std::move(s).value());
      break;
    }
  }
  return out;
}

Result<ServiceSpec> find_service(const Config& cfg, const std::string& name) {
  Result<std::vector<ServiceSpec>> all = service_table(cfg);
  if (!all) return all.take_error();
  for (ServiceSpec& s : *all) {
    if (s.name == name) return std::move(s);
  }
  return make_error(ErrorKind::kNotFound, "service " + name + " is not in master_services");
}

std::vector<DirectorySpec> directory_table(const Config& cfg) {
  return {
      {cfg.str("base_dir"), "", 0755},
      // The login chroot: root's, holding only the login process's two sockets.
      {cfg.str("base_dir") + "/" + kLoginDir, "", 0755},
      // 0711: sendmail must reach the maildrop inside it; nobody may list the queue.
      {cfg.str("queue_directory"), cfg.str("mail_owner"), 0711},
      // Sticky and not listable (Postfix's maildrop before postdrop): any user may
      // leave a file, none may read, list or remove another's.
      {cfg.str("maildrop_directory"), cfg.str("mail_owner"), 01733},
      {cfg.str("data_directory"), "", 0755},
      {cfg.str("data_directory") + "/auth", cfg.str("authd_user"), 0700},
      // tern-mda's memory of XTERN-DELIVERY-IDs (mda/delivery_ids.h).
      {cfg.str("data_directory") + "/mda", cfg.str("mail_uid"), 0700},
  };
}

Result<std::vector<BoundListener>> bind_listeners(const ServiceSpec& service) {
  std::vector<BoundListener> out;
  const bool root = ::geteuid() == 0;
  for (const ListenerSpec& l : service.listeners) {
    Result<UniqueFd> fd = [&]() -> Result<UniqueFd> {
      if (!l.is_unix) return net::bind_inet(l.address, l.port);
      uid_t uid = static_cast<uid_t>(-1);
      gid_t gid = static_cast<gid_t>(-1);
      if (root && !l.owner.empty()) {
        Result<UserIds> u = lookup_user(l.owner);
        if (!u) return make_error(ErrorKind::kConfig, "socket " + l.path + ": " + u.error().message);
        uid = u->uid;
        gid = u->gid;
      }
      if (root) {
        // Root unlinks a stale socket and chowns the new one by name: only in a
        // directory nobody else can write to (common/safe_path.h).
        const size_t slash = l.path.rfind('/');
        const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : l.path.substr(0, slash);
        Result<UniqueFd> dfd = open_directory_safely(dir, DirOwner{});
        if (!dfd) return dfd.take_error();
        if (Status st = check_trusted_directory(dfd->get(), dir); !st) return st.take_error();
      }
      return net::bind_unix(l.path, l.mode, uid, gid);
    }();
    if (!fd) {
      Error e = fd.take_error();
      e.message = "tern-" + service.name + " listener " + l.name + ": " + e.message;
      return e;
    }
    out.push_back({l.name, std::move(fd).value()});
  }
  return out;
}

Status make_directories(const std::vector<DirectorySpec>& dirs) {
  const bool root = ::geteuid() == 0;
  for (const DirectorySpec& d : dirs) {
    DirOwner owner;
    if (root && !d.owner.empty()) {
      Result<UserIds> u = lookup_user(d.owner);
      if (!u) return make_error(ErrorKind::kConfig, "directory " + d.path + ": " + u.error().message);
      owner = {u->uid, u->gid};
    }
    // Through descriptors, never by name: some of these sit in directories their
    // users own (common/safe_path.h).
    Result<UniqueFd> fd = make_directory_safely(d.path, owner, d.mode);
    if (!fd) return fd.take_error();
  }
  return {};
}

Result<std::vector<uid_t>> configured_uids(const Config& cfg, const std::string& key) {
  std::vector<uid_t> out;
  for (const std::string& name : cfg.list(key)) {
    Result<UserIds> u = lookup_user(name);
    if (u) {
      out.push_back(u->uid);
    } else if (cfg.is_set(key) || u.error().kind != ErrorKind::kNotFound) {
      return make_error(ErrorKind::kConfig, cfg.origin(key) + ": parameter '" + key + "': user '" +
                                                log_escape(name, 64) + "': " + u.error().message);
    }
  }
  return out;
}

}  // namespace tern::common
