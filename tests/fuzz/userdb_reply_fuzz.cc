// Fuzzes parse_user_reply (common/auth_client.h): the USER reply of tern-authd's
// userdb, read by processes that run as root (tern-mda's delivery helper, the
// master's checks) and decide a uid, gid and home from it. Input: the reply's
// arguments after the id, tab-separated, as the auth protocol splits them.
// Invariants: no crash; an accepted reply has the user it was given, a uid/gid only
// when a field gave one that fits 32 bits, and home/mail only from their fields.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/auth_client.h"
#include "common/auth_protocol.h"

using namespace tern::common;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  size_t start = 0;
  while (true) {
    size_t tab = in.find('\t', start);
    args.emplace_back(in.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  Result<auth::UserInfo> u = auth::parse_user_reply(args);
  if (!u) return 0;
  if (u->user != args[0]) __builtin_trap();
  bool has_uid = false, has_home = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const auth_protocol::Field f = auth_protocol::split_field(args[i]);
    if (f.key == "uid") has_uid = true;
    if (f.key == "home") has_home = true;
  }
  if (u->uid && !has_uid) __builtin_trap();
  if (!u->home.empty() && !has_home) __builtin_trap();
  return 0;
}
