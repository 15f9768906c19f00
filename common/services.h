// The services tern-master runs, their listeners and their directories, computed
// from the config. tern-master binds and creates everything here as root; a daemon
// started alone (--foreground, not under the master or systemd) binds its own part
// of the same table, so the two never disagree about a port or a path.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "common/sockets.h"
#include "common/unique_fd.h"

namespace tern::common {

struct ListenerSpec {
  std::string name;     // LISTEN_FDNAMES entry: "smtp", "imaps", "auth-client"...
  bool is_unix = false;
  std::string address;  // inet: numeric address
  uint16_t port = 0;
  std::string path;     // unix: socket path
  mode_t mode = 0666;   // unix: permission bits (peers are also checked by SO_PEERCRED)
  std::string owner;    // unix: owning user ("" keeps the creator)
};

struct ServiceSpec {
  std::string name;      // "authd", "mda", "mta", "mra"
  std::string binary;    // "tern-authd"
  std::string user_key;  // config key naming the user it runs as ("" when privileged)
  // Runs as root: only tern-mra-postlogin, which creates session workers with the
  // mail owners' uids (DESIGN.md 2; its header says why). The master's refusal to run
  // a daemon as root has this one exception.
  bool privileged = false;
  std::vector<ListenerSpec> listeners;
};

// $base_dir/login: the login process's chroot (login_chroot). Root owns it and it
// holds only the sockets a pre-authentication process needs: auth-client and
// mra-postlogin, never sendmail, lmtp or auth-userdb (Dovecot's login/ directory).
inline constexpr const char* kLoginDir = "login";

struct DirectorySpec {
  std::string path;
  std::string owner;  // user name; "" for root (or the invoking user, unprivileged)
  mode_t mode;
};

// Every service named in master_services, in start order (authd first: the others
// depend on it). Errors name the offending key.
Result<std::vector<ServiceSpec>> service_table(const Config& cfg);
// One service by name; kNotFound if it is not in master_services.
Result<ServiceSpec> find_service(const Config& cfg, const std::string& name);
// Directories to create before any daemon starts.
std::vector<DirectorySpec> directory_table(const Config& cfg);

// A bound listener ready to pass on.
struct BoundListener {
  std::string name;
  UniqueFd fd;
};
// Binds every listener of a service. Unix socket owners are applied only as root.
Result<std::vector<BoundListener>> bind_listeners(const ServiceSpec& service);
// Creates the directories (owners applied only as root), fixing modes of existing ones.
Status make_directories(const std::vector<DirectorySpec>& dirs);

// The uids of the users a list parameter names (auth_client_trusted_users,
// lmtp_allow_users: peers a socket believes by SO_PEERCRED). A name the admin wrote
// must exist (kConfig naming the file, line and key); one in the default that this
// host lacks ("postfix" without Postfix) is skipped.
Result<std::vector<uid_t>> configured_uids(const Config& cfg, const std::string& key);

}  // namespace tern::common
