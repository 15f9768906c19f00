#include "common/config_keys.h"

#include <algorithm>
#include <array>

namespace tern::common {
namespace {

// For rows without an upper bound (kNoMax); unused until an area needs it.
[[maybe_unused]] constexpr int64_t kNoMax = INT64_MAX;

// Row helpers for the .inc files: S string, L list, B bool, I int, T time, Z size.
#define S(name, def, doc) {name, KeyType::kString, def, 0, 0, 0, doc},
#define L(name, def, doc) {name, KeyType::kList, def, 0, 0, 0, doc},
#define B(name, def, doc) {name, KeyType::kBool, def, 0, 0, 0, doc},
#define I(name, def, min, max, doc) {name, KeyType::kInt, def, min, max, 0, doc},
#define T(name, def, unit, min, max, doc) {name, KeyType::kTime, def, min, max, unit, doc},
#define Z(name, def, min, max, doc) {name, KeyType::kSize, def, min, max, 0, doc},

constexpr KeyDef kKeys[] = {
#include "common/config_keys_general.inc"
#include "common/config_keys_authd.inc"
#include "common/config_keys_mda.inc"
#include "common/config_keys_mta.inc"
#include "common/config_keys_mra.inc"
};

#undef S
#undef L
#undef B
#undef I
#undef T
#undef Z

}  // namespace

std::span<const KeyDef> known_keys() { return kKeys; }

const KeyDef* find_key(std::string_view name) {
  for (const KeyDef& k : kKeys) {
    if (name == k.name) return &k;
  }
  return nullptr;
}

}  // namespace tern::common
