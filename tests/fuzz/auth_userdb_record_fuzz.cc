// libFuzzer target: decoding of stored user/domain records and user-name
// canonicalisation (authd/userdb.h), which see names typed by clients.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "authd/userdb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto u = tern::authd::decode_user("x@y", in);
  if (u) {
    auto again = tern::authd::decode_user("x@y", tern::authd::encode_user(*u));
    if (!again || again->password != u->password || again->scram != u->scram) __builtin_trap();
  }
  (void)tern::authd::decode_domain("y", in);
  auto c = tern::authd::canonical_user(in, "example.test");
  if (c && c->find(' ') != std::string::npos) __builtin_trap();
  (void)tern::authd::expand_template(in, "a@b");
  (void)tern::authd::glob_match(in.substr(0, 64), in);
  return 0;
}
