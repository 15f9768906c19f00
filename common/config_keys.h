// The table of every tern.conf key: type, default, bounds, and one line of doc.
//
// MTA keys keep Postfix's names and meaning (main.cf), mail-store and login keys keep
// Dovecot's (dovecot.conf); Tern's own keys exist only where neither has the setting.
// The table is one array assembled from one file per area (config_keys_*.inc), so that
// work on different daemons does not edit the same lines.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace tern::common {

// How a value is read.
enum class KeyType {
  kString,  // any text; $name expanded
  kInt,     // decimal integer within [min, max]
  kBool,    // yes/no (also true/false)
  kTime,    // number with an optional unit s m h d w; `unit` is the default unit
  kSize,    // bytes, with an optional k/M/G/T suffix (powers of 1024)
  kList,    // items separated by commas and/or whitespace
};

struct KeyDef {
  const char* name;
  KeyType type;
  const char* default_value;  // may contain $name; "@computed" for code-computed ones
  int64_t min;                // bounds for kInt/kTime (seconds)/kSize
  int64_t max;
  char unit;                  // default unit for kTime
  const char* doc;
};

std::span<const KeyDef> known_keys();
const KeyDef* find_key(std::string_view name);

}  // namespace tern::common
