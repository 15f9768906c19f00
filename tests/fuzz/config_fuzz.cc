// Fuzz target: the tern.conf parser and $name expansion (common/config.h).
//
// A config file is written by an administrator, not a client, but it is parsed by
// every daemon at start and by ternctl; a file that crashes or hangs the parser
// takes the mail system down. Beyond "no crash, no hang", a parsed file must
// survive a round trip: what `ternctl config -n` prints parses back to the same.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/config.h"
#include "common/config_keys.h"

using tern::common::Config;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  tern::common::Result<Config> cfg = Config::parse(text, "fuzz.conf");
  if (!cfg) {
    // Every error names the file and a line.
    if (cfg.error().message.rfind("fuzz.conf:", 0) != 0) std::abort();
    return 0;
  }
  // After a successful parse no lookup may fail (the getters panic if one does).
  for (const tern::common::KeyDef& k : tern::common::known_keys()) {
    (void)cfg->str(k.name);
    switch (k.type) {
      case tern::common::KeyType::kInt: (void)cfg->integer(k.name); break;
      case tern::common::KeyType::kBool: (void)cfg->boolean(k.name); break;
      case tern::common::KeyType::kTime: (void)cfg->seconds(k.name); break;
      case tern::common::KeyType::kSize: (void)cfg->bytes(k.name); break;
      case tern::common::KeyType::kList: (void)cfg->list(k.name); break;
      case tern::common::KeyType::kString: break;
    }
  }
  const std::string set_only = cfg->dump(true);
  (void)cfg->dump(false, true);
  tern::common::Result<Config> again = Config::parse(set_only, "fuzz.conf");
  if (!again) std::abort();
  if (again->dump(true) != set_only) std::abort();
  return 0;
}
