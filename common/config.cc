#include "common/config.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/text.h"

namespace tern::common {
namespace {

constexpr int kMaxExpansionDepth = 20;  // deeper is a reference loop
// A value that names another key several times, at every level, grows exponentially
// ("a = $b$b$b", "b = $c$c$c", ...): bound the work and the result, so that such a
// file is an error rather than a hang or an out-of-memory kill.
constexpr size_t kMaxExpandedBytes = 256 << 10;
constexpr size_t kMaxExpansionRefs = 1000;
constexpr size_t kMaxConfigBytes = 4 << 20;  // a config file is small; refuse junk

bool valid_key_name(std::string_view k) {
  if (k.empty()) return false;
  for (char c : k) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string system_hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost.localdomain";
  std::string h = to_lower(buf);
  // A name without a dot is not fully qualified; Postfix insists on one.
  if (h.find('.') == std::string::npos) h += ".localdomain";
  return h;
}

}  // namespace

struct Config::ExpandBudget {
  std::string_view top_key;          // the key whose value is being expanded
  std::vector<std::string_view> chain;  // keys being expanded, outermost first
  std::string first_set_origin;      // origin of the first key met that the file sets
  size_t bytes = kMaxExpandedBytes;
  size_t refs = kMaxExpansionRefs;
  // Where an error about the whole expansion belongs: the top key's line, or when
  // the top key is a default, the line of the first key it reached that is set.
  std::string where(const Config& c) const {
    std::string o = c.origin(top_key);
    return o == "default" && !first_set_origin.empty() ? first_set_origin : o;
  }
};

std::string unknown_key_message(std::string_view key) {
  std::string msg = "unknown parameter '" + std::string(key) + "'";
  const KeyDef* best = nullptr;
  size_t best_d = SIZE_MAX;
  for (const KeyDef& k : known_keys()) {
    size_t d = edit_distance(key, k.name);
    if (d < best_d) {
      best_d = d;
      best = &k;
    }
  }
  // Close enough to be a typo: a third of the name, at least 2 edits.
  if (best && best_d <= std::max<size_t>(2, key.size() / 3)) {
    msg += "; did you mean '" + std::string(best->name) + "'?";
  }
  return msg;
}

Config::Config() = default;

Result<Config> Config::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return errno_error("open " + path, errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > kMaxConfigBytes) {
    return make_error(ErrorKind::kConfig, path + ": file too large");
  }
  return parse(text, path);
}

Result<Config> Config::parse(std::string_view text, const std::string& filename) {
  Config cfg;
  cfg.path_ = filename;
  std::string cur_key, cur_value;
  int cur_line = 0;
  auto flush = [&]() -> Status {
    if (cur_key.empty()) return {};
    std::string where = filename + ":" + std::to_string(cur_line);
    if (!find_key(cur_key)) {
      return make_error(ErrorKind::kConfig, where + ": " + unknown_key_message(cur_key));
    }
    cfg.values_[cur_key] = Entry{std::string(trim(cur_value)), where};
    cur_key.clear();
    cur_value.clear();
    return {};
  };

  int lineno = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\0') != std::string_view::npos) {
      return make_error(ErrorKind::kConfig, filename + ":" + std::to_string(lineno) + ": NUL byte in line");
    }
    std::string_view t = trim(line);
    if (t.empty() || t[0] == '#') continue;  // blank and comment lines never end a value
    if (line[0] == ' ' || line[0] == '\t') {
      if (cur_key.empty()) {
        return make_error(ErrorKind::kConfig, filename + ":" + std::to_string(lineno) +
                                                  ": continuation line without a parameter before it");
      }
      cur_value += ' ';
      cur_value += t;
      continue;
    }
    if (Status s = flush(); !s) return s.take_error();
    size_t eq = t.find('=');
    std::string where = filename + ":" + std::to_string(lineno);
    if (eq == std::string_view::npos) {
      return make_error(ErrorKind::kConfig, where + ": missing '=' after parameter name '" +
                                                log_escape(t, 64) + "'");
    }
    std::string_view key = trim(t.substr(0, eq));
    if (!valid_key_name(key)) {
      return make_error(ErrorKind::kConfig, where + ": bad parameter name '" + log_escape(key, 64) + "'");
    }
    cur_key = std::string(key);
    cur_value = std::string(trim(t.substr(eq + 1)));
    cur_line = lineno;
    if (pos > text.size()) break;
  }
  if (Status s = flush(); !s) return s.take_error();
  if (Status s = cfg.validate(); !s) return s.take_error();
  return cfg;
}

Status Config::set(std::string_view key, std::string_view value, std::string origin) {
  if (!find_key(key)) return make_error(ErrorKind::kConfig, origin + ": " + unknown_key_message(key));
  values_[std::string(key)] = Entry{std::string(trim(value)), std::move(origin)};
  return {};
}

const KeyDef& Config::def_or_panic(std::string_view key) const {
  const KeyDef* d = find_key(key);
  if (!d) log::panic("config lookup of undeclared key '%.*s'", static_cast<int>(key.size()), key.data());
  return *d;
}

// A default computed by code from the system or from other keys. It is already a
// final value (not expanded again). Lookups of other keys go through the same
// expansion, so "myhostname = $mydomain" is a loop error, not endless recursion.
Result<std::string> Config::computed_default(const KeyDef& def, int depth, ExpandBudget& budget) const {
  std::string_view name = def.name;
  if (name == "myhostname") return system_hostname();
  if (name == "mydomain") {
    Result<std::string> h = expand("myhostname", depth + 1, budget);
    if (!h) return h;
    size_t dot = h->find('.');
    return dot == std::string::npos ? std::string("localdomain") : h->substr(dot + 1);
  }
  return std::string();
}

std::string Config::raw(std::string_view key) const {
  const KeyDef& def = def_or_panic(key);
  auto it = values_.find(key);
  if (it != values_.end()) return it->second.value;
  if (std::string_view(def.default_value) == "@computed") {
    ExpandBudget budget;
    budget.top_key = def.name;
    budget.chain.push_back(def.name);
    Result<std::string> v = computed_default(def, 0, budget);
    return v ? std::move(v).value() : std::string();  // validate() reports the error
  }
  return def.default_value;
}

bool Config::is_set(std::string_view key) const { return values_.count(key) != 0; }

std::string Config::origin(std::string_view key) const {
  auto it = values_.find(key);
  return it == values_.end() ? "default" : it->second.origin;
}


Result<std::string> Config::expand(std::string_view key) const {
  ExpandBudget budget;
  budget.top_key = key;
  return expand(key, 0, budget);
}

Result<std::string> Config::expand(std::string_view key, int depth, ExpandBudget& budget) const {
  auto seen = std::find(budget.chain.begin(), budget.chain.end(), key);
  if (seen != budget.chain.end()) {
    // A reference loop: name the loop, at the line of a key in it that is set (the
    // built-in defaults never loop on their own).
    std::string cycle;
    std::string_view blame;
    for (auto it = seen; it != budget.chain.end(); ++it) {
      cycle += std::string(*it) + " -> ";
      if (blame.empty() && is_set(*it)) blame = *it;
    }
    cycle += std::string(key);
    if (blame.empty()) blame = key;
    return make_error(ErrorKind::kConfig, origin(blame) + ": parameter '" + std::string(blame) +
                                              "': $name expansion loops: " + cycle);
  }
  if (depth > kMaxExpansionDepth) {
    return make_error(ErrorKind::kConfig, budget.where(*this) + ": parameter '" + std::string(budget.top_key) +
                                              "': $name expansion nested too deeply");
  }
  if (budget.first_set_origin.empty() && is_set(key)) budget.first_set_origin = origin(key);
  budget.chain.push_back(key);
  const KeyDef& def = def_or_panic(key);
  Result<std::string> r = !is_set(key) && std::string_view(def.default_value) == "@computed"
                              ? computed_default(def, depth, budget)
                              : expand_text(raw(key), key, depth, budget);
  budget.chain.pop_back();
  return r;
}

Result<std::string> Config::expand_text(std::string_view text, std::string_view where_key, int depth,
                                        ExpandBudget& budget) const {
  auto too_large = [&]() -> Error {
    return make_error(ErrorKind::kConfig, budget.where(*this) + ": parameter '" + std::string(budget.top_key) +
                                              "': $name expansion is too large (more than " +
                                              std::to_string(kMaxExpandedBytes) + " bytes or " +
                                              std::to_string(kMaxExpansionRefs) + " references)");
  };
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c != '$') {
      out += c;
      continue;
    }
    if (i + 1 >= text.size()) {
      out += '$';
      continue;
    }
    char n = text[i + 1];
    if (n == '$') {
      out += '$';
      ++i;
      continue;
    }
    std::string name, alt;
    char op = 0;
    if (n == '{' || n == '(') {
      char close = n == '{' ? '}' : ')';
      // The matching bracket: ${name?${other}} nests.
      size_t end = std::string_view::npos;
      int nest = 0;
      for (size_t k = i + 2; k < text.size(); ++k) {
        if (text[k] == n) {
          ++nest;
        } else if (text[k] == close) {
          if (nest == 0) {
            end = k;
            break;
          }
          --nest;
        }
      }
      if (end == std::string_view::npos) {
        return make_error(ErrorKind::kConfig, origin(where_key) + ": parameter '" + std::string(where_key) +
                                                  "': unterminated " + std::string(1, n));
      }
      std::string_view inner = text.substr(i + 2, end - i - 2);
      size_t q = inner.find_first_of("?:");
      if (q != std::string_view::npos) {
        op = inner[q];
        alt = std::string(inner.substr(q + 1));
        inner = inner.substr(0, q);
      }
      name = std::string(inner);
      i = end;
    } else {
      size_t j = i + 1;
      while (j < text.size() && (std::isalnum(static_cast<unsigned char>(text[j])) || text[j] == '_')) ++j;
      if (j == i + 1) {  // "$" followed by something that is not a name: keep it
        out += '$';
        continue;
      }
      name = std::string(text.substr(i + 1, j - i - 1));
      i = j - 1;
    }
    if (!find_key(name)) {
      return make_error(ErrorKind::kConfig, origin(where_key) + ": parameter '" + std::string(where_key) +
                                                "': $" + name + ": " + unknown_key_message(name));
    }
    if (budget.refs == 0) return too_large();
    --budget.refs;
    Result<std::string> v = expand(name, depth + 1, budget);
    if (!v) return v;
    const std::string* piece = nullptr;
    Result<std::string> a = std::string();
    if (op == '?' || op == ':') {
      if (v->empty() == (op == ':')) {
        a = expand_text(alt, where_key, depth + 1, budget);
        if (!a) return a;
        piece = &*a;
      }
    } else {
      piece = &*v;
    }
    if (piece) {
      if (piece->size() > budget.bytes) return too_large();
      budget.bytes -= piece->size();
      out += *piece;
    }
  }
  if (out.size() > kMaxExpandedBytes) return too_large();
  return out;
}

std::optional<bool> Config::parse_bool(std::string_view v) {
  if (iequals(v, "yes") || iequals(v, "true")) return true;
  if (iequals(v, "no") || iequals(v, "false")) return false;
  return std::nullopt;
}

std::optional<int64_t> Config::parse_int(std::string_view v) {
  bool neg = !v.empty() && v[0] == '-';
  std::optional<uint64_t> u = parse_u64(neg ? v.substr(1) : v);
  if (!u || *u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  return neg ? -static_cast<int64_t>(*u) : static_cast<int64_t>(*u);
}

std::optional<int64_t> Config::parse_time(std::string_view v, char default_unit) {
  if (v.empty()) return std::nullopt;
  char unit = default_unit ? default_unit : 's';
  if (std::isalpha(static_cast<unsigned char>(v.back()))) {
    unit = static_cast<char>(std::tolower(static_cast<unsigned char>(v.back())));
    v.remove_suffix(1);
  }
  std::optional<uint64_t> n = parse_u64(v);
  if (!n) return std::nullopt;
  int64_t mult = 0;
  switch (unit) {
    case 's': mult = 1; break;
    case 'm': mult = 60; break;
    case 'h': mult = 3600; break;
    case 'd': mult = 86400; break;
    case 'w': mult = 7 * 86400; break;
    default: return std::nullopt;
  }
  if (*n > static_cast<uint64_t>(INT64_MAX / mult)) return std::nullopt;
  return static_cast<int64_t>(*n) * mult;
}

std::optional<uint64_t> Config::parse_size(std::string_view v) {
  if (v.empty()) return std::nullopt;
  uint64_t mult = 1;
  char last = static_cast<char>(std::toupper(static_cast<unsigned char>(v.back())));
  if (last == 'B' && v.size() >= 2 && std::isalpha(static_cast<unsigned char>(v[v.size() - 2]))) {
    v.remove_suffix(1);  // "10MB" as well as "10M"
    last = static_cast<char>(std::toupper(static_cast<unsigned char>(v.back())));
  }
  switch (last) {
    case 'K': mult = 1ull << 10; break;
    case 'M': mult = 1ull << 20; break;
    case 'G': mult = 1ull << 30; break;
    case 'T': mult = 1ull << 40; break;
    default: break;
  }
  if (mult != 1) v.remove_suffix(1);
  std::optional<uint64_t> n = parse_u64(v);
  if (!n || *n > UINT64_MAX / mult) return std::nullopt;
  return *n * mult;
}

Status Config::check_value(const KeyDef& def, const std::string& value, const std::string& where) const {
  auto bad = [&](const std::string& why) -> Status {
    return make_error(ErrorKind::kConfig, where + ": parameter '" + def.name + "': " + why);
  };
  switch (def.type) {
    case KeyType::kString: {
      // String keys that take one of a few words.
      static const std::pair<std::string_view, std::vector<std::string_view>> kChoices[] = {
          {"seccomp_filter", {"yes", "log", "no"}},
      };
      for (const auto& [name, words] : kChoices) {
        if (name != def.name) continue;
        const std::string v = to_lower(value);
        if (std::find(words.begin(), words.end(), v) != words.end()) return {};
        std::string list;
        for (std::string_view w : words) list += (list.empty() ? "" : ", ") + std::string(w);
        return bad("'" + log_escape(value, 64) + "' is not one of " + list);
      }
      return {};
    }
    case KeyType::kList:
      return {};
    case KeyType::kBool:
      if (!parse_bool(value)) return bad("'" + log_escape(value, 64) + "' is not yes or no");
      return {};
    case KeyType::kInt: {
      std::optional<int64_t> n = parse_int(value);
      if (!n) return bad("'" + log_escape(value, 64) + "' is not a number");
      if (*n < def.min || *n > def.max) {
        return bad(std::to_string(*n) + " is out of range " + std::to_string(def.min) + ".." + std::to_string(def.max));
      }
      return {};
    }
    case KeyType::kTime: {
      std::optional<int64_t> n = parse_time(value, def.unit);
      if (!n) return bad("'" + log_escape(value, 64) + "' is not a time (a number with unit s, m, h, d or w)");
      if (*n < def.min || *n > def.max) {
        return bad(value + " is out of range " + std::to_string(def.min) + "s.." + std::to_string(def.max) + "s");
      }
      return {};
    }
    case KeyType::kSize: {
      std::optional<uint64_t> n = parse_size(value);
      if (!n) return bad("'" + log_escape(value, 64) + "' is not a size (bytes, or a number with k, M, G or T)");
      if (static_cast<int64_t>(*n) < def.min || (def.max > 0 && *n > static_cast<uint64_t>(def.max))) {
        return bad(value + " is out of range " + std::to_string(def.min) + ".." + std::to_string(def.max) + " bytes");
      }
      return {};
    }
  }
  return {};
}

Status Config::validate() const {
  // Report the first bad line of the file first: keys set in the file in line order,
  // then those set by set(), then the defaults (which can fail only through a key
  // they reference).
  struct Item {
    const KeyDef* def;
    int group;     // 0 file, 1 set(), 2 default
    long line;
  };
  std::vector<Item> items;
  for (const KeyDef& def : known_keys()) {
    Item it{&def, 2, 0};
    auto v = values_.find(std::string_view(def.name));
    if (v != values_.end()) {
      const std::string& o = v->second.origin;
      size_t colon = o.rfind(':');
      std::optional<uint64_t> n = colon == std::string::npos ? std::nullopt : parse_u64(o.substr(colon + 1));
      if (!path_.empty() && o.compare(0, path_.size(), path_) == 0 && n) {
        it.group = 0;
        it.line = static_cast<long>(*n);
      } else {
        it.group = 1;
      }
    }
    items.push_back(it);
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.group != b.group ? a.group < b.group : a.line < b.line;
  });
  for (const Item& it : items) {
    ExpandBudget budget;
    budget.top_key = it.def->name;
    Result<std::string> v = expand(it.def->name, 0, budget);
    if (!v) return v.take_error();
    if (Status s = check_value(*it.def, *v, budget.where(*this)); !s) return s;
  }
  return {};
}

std::string Config::str(std::string_view key) const {
  Result<std::string> v = expand(key);
  if (!v) log::panic("config: %s", v.error().message.c_str());
  std::string s = std::move(v).value();
  // Dovecot writes file values as "<path".
  if ((key == "ssl_cert" || key == "ssl_key") && !s.empty() && s[0] == '<') s = std::string(trim(s.substr(1)));
  return s;
}

int64_t Config::integer(std::string_view key) const {
  std::optional<int64_t> v = parse_int(str(key));
  if (!v) log::panic("config: %.*s is not an integer", static_cast<int>(key.size()), key.data());
  return *v;
}

bool Config::boolean(std::string_view key) const {
  std::optional<bool> v = parse_bool(str(key));
  if (!v) log::panic("config: %.*s is not a boolean", static_cast<int>(key.size()), key.data());
  return *v;
}

int64_t Config::seconds(std::string_view key) const {
  std::optional<int64_t> v = parse_time(str(key), def_or_panic(key).unit);
  if (!v) log::panic("config: %.*s is not a time", static_cast<int>(key.size()), key.data());
  return *v;
}

uint64_t Config::bytes(std::string_view key) const {
  std::optional<uint64_t> v = parse_size(str(key));
  if (!v) log::panic("config: %.*s is not a size", static_cast<int>(key.size()), key.data());
  return *v;
}

std::vector<std::string> Config::list(std::string_view key) const { return split_any(str(key), ", \t"); }

std::string Config::dump(bool non_default_only, bool expand_values) const {
  std::vector<const KeyDef*> defs;
  for (const KeyDef& k : known_keys()) defs.push_back(&k);
  std::sort(defs.begin(), defs.end(), [](const KeyDef* a, const KeyDef* b) {
    return std::string_view(a->name) < std::string_view(b->name);
  });
  std::string out;
  for (const KeyDef* k : defs) {
    if (non_default_only && !is_set(k->name)) continue;
    out += k->name;
    out += " = ";
    out += expand_values ? str(k->name) : raw(k->name);
    out += '\n';
  }
  return out;
}

}  // namespace tern::common
