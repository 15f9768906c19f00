// tern.conf: one file, Postfix main.cf syntax, Postfix and Dovecot key names.
//
//   key = value          whitespace around '=' is ignored
//   # comment            only a whole line is a comment (as in main.cf)
//       more value       a line starting with whitespace continues the previous one
//   $name ${name} $(name) expand another key; $$ is a literal '$';
//   ${name?text} is text when name is non-empty, ${name:text} when it is empty.
//
// Every key is declared once in the table of config_keys.h with its type, default,
// bounds and a line of doc. An unknown key, a bad value or a reference to an unknown
// key is an error that names file:line and the key, and suggests the nearest known
// key. Values are checked when the file is loaded, so a daemon never starts on a
// config it would reject later.
//
// This module parses and answers lookups; it does no privilege or socket work.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config_keys.h"
#include "common/result.h"

namespace tern::common {

class Config {
 public:
  // The built-in defaults only.
  Config();

  // Reads and checks a file. Errors name "path:line: ...".
  static Result<Config> load_file(const std::string& path);
  // Parses text as if it were the file `filename` (for tests and generated configs).
  static Result<Config> parse(std::string_view text, const std::string& filename);

  // Sets a value from outside the file (a -o key=value option, the development
  // default). `origin` is shown by `ternctl config -n` and in errors.
  Status set(std::string_view key, std::string_view value, std::string origin = "override");

  // Checks every value against its type and bounds and every $reference.
  Status validate() const;

  // Lookups. The key must be in the table (a programming error otherwise: panic).
  // Values are expanded; the typed getters cannot fail after validate() succeeded.
  std::string str(std::string_view key) const;
  int64_t integer(std::string_view key) const;
  bool boolean(std::string_view key) const;
  int64_t seconds(std::string_view key) const;    // kTime, in seconds
  uint64_t bytes(std::string_view key) const;     // kSize, in bytes
  std::vector<std::string> list(std::string_view key) const;  // kList: comma/space separated

  // The unexpanded value, as written (or the default).
  std::string raw(std::string_view key) const;
  bool is_set(std::string_view key) const;  // set in the file or by set()
  std::string origin(std::string_view key) const;  // "file:line", or "default"
  const std::string& path() const { return path_; }

  // `postconf`-style output: "key = value" per line, sorted by key; only the keys
  // set in the file (or by set()) when non_default_only; expanded when `expand`.
  std::string dump(bool non_default_only, bool expand = false) const;

  // Typed parsing used by validate() and the getters; exposed for tests.
  static std::optional<bool> parse_bool(std::string_view v);
  static std::optional<int64_t> parse_time(std::string_view v, char default_unit);
  static std::optional<uint64_t> parse_size(std::string_view v);
  static std::optional<int64_t> parse_int(std::string_view v);

 private:
  struct Entry {
    std::string value;
    std::string origin;  // "file:line" or "override"
  };
  struct ExpandBudget;
  Result<std::string> expand(std::string_view key) const;
  Result<std::string> expand(std::string_view key, int depth, ExpandBudget& budget) const;
  Result<std::string> expand_text(std::string_view text, std::string_view where, int depth,
                                  ExpandBudget& budget) const;
  Status check_value(const KeyDef& def, const std::string& value, const std::string& where) const;
  Result<std::string> computed_default(const KeyDef& def, int depth, ExpandBudget& budget) const;
  const KeyDef& def_or_panic(std::string_view key) const;

  std::map<std::string, Entry, std::less<>> values_;
  std::string path_;
};

// "unknown parameter 'x'" plus "; did you mean 'y'?" when a known key is close.
std::string unknown_key_message(std::string_view key);

}  // namespace tern::common
