#include "authd/client_trust.h"

#include <algorithm>

namespace tern::authd {

bool peer_trusted(bool has_creds, uid_t uid, std::span<const uid_t> trusted_uids) {
  if (!has_creds) return false;
  return uid == 0 || std::find(trusted_uids.begin(), trusted_uids.end(), uid) != trusted_uids.end();
}

std::vector<std::string> drop_client_claims(common::auth_protocol::AuthCommand& cmd) {
  std::vector<std::string> dropped;
  auto clear = [&](std::string& field, const char* name) {
    if (field.empty()) return;
    field.clear();
    dropped.push_back(name);
  };
  auto unset = [&](bool& flag, const char* name) {
    if (!flag) return;
    flag = false;
    dropped.push_back(name);
  };
  clear(cmd.rip, "rip");
  clear(cmd.lip, "lip");
  clear(cmd.rport, "rport");
  clear(cmd.lport, "lport");
  unset(cmd.secured, "secured");
  unset(cmd.valid_client_cert, "valid-client-cert");
  unset(cmd.no_penalty, "no-penalty");
  return dropped;
}

std::string local_penalty_key(uid_t uid) { return "local uid " + std::to_string(uid); }

}  // namespace tern::authd
