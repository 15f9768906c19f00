#include "mta/rewrite.h"

#include "common/text.h"

namespace tern::mta {

using common::ErrorKind;
using common::Result;
using common::Status;

namespace {

Destination error_dest(std::string text, const std::string& orig) {
  Destination d;
  d.kind = Destination::Kind::kError;
  d.value = std::move(text);
  d.orig = orig;
  return d;
}

}  // namespace

std::vector<std::string> split_alias_value(std::string_view v, bool ws) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  auto flush = [&] {
    std::string t(common::trim(cur));
    if (!t.empty()) out.push_back(t);
    cur.clear();
  };
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '"') {
      quoted = !quoted;
      continue;  // quotes group; they are not part of the item
    }
    if (!quoted && (c == ',' || (ws && (c == ' ' || c == '\t')))) {
      flush();
      continue;
    }
    if (c == '\\' && quoted && i + 1 < v.size()) c = v[++i];
    cur += c;
  }
  flush();
  return out;
}

void Expander::add(std::vector<Destination>& out, Destination d) {
  // Postfix delivers once per distinct destination.
  for (const Destination& e : out) {
    if (e.kind == d.kind && common::iequals(e.value, d.value)) return;
  }
  out.push_back(std::move(d));
}

Result<std::optional<std::string>> Expander::virtual_lookup(const std::string& local, const std::string& domain,
                                                           bool local_domain, bool& matched_without_ext) {
  matched_without_ext = false;
  if (!t_.virtual_alias) return std::optional<std::string>();
  auto [user, ext] = split_extension(local, t_.delimiters);
  // virtual(5): user@domain (with the extension first), then user for our own
  // domains, then the catch-all @domain.
  std::vector<std::pair<std::string, bool>> keys;
  keys.emplace_back(local + "@" + domain, false);
  if (!ext.empty()) keys.emplace_back(user + "@" + domain, true);
  if (local_domain) {
    keys.emplace_back(local, false);
    if (!ext.empty()) keys.emplace_back(user, true);
  }
  keys.emplace_back("@" + domain, false);
  for (const auto& [k, without_ext] : keys) {
    Result<std::optional<std::string>> v = t_.virtual_alias(k);
    if (!v) return v.take_error();
    if (v->has_value()) {
      matched_without_ext = without_ext;
      return v;
    }
  }
  return std::optional<std::string>();
}

Result<bool> Expander::has_virtual_alias(const std::string& address) {
  auto [local, domain] = split_address(address);
  bool local_domain = false;
  if (t_.classify) {
    Result<AddressClass> c = t_.classify(domain);
    if (!c) return c.take_error();
    local_domain = *c == AddressClass::kLocal;
  }
  bool wo;
  Result<std::optional<std::string>> v = virtual_lookup(local, domain, local_domain, wo);
  if (!v) return v.take_error();
  return v->has_value();
}

Result<bool> Expander::has_alias(const std::string& local_part) {
  if (!t_.alias) return false;
  auto [user, ext] = split_extension(local_part, t_.delimiters);
  Result<std::optional<AliasHit>> v = t_.alias(local_part);
  if (!v) return v.take_error();
  if (v->has_value()) return true;
  if (ext.empty()) return false;
  v = t_.alias(user);
  if (!v) return v.take_error();
  return v->has_value();
}

Result<std::vector<Destination>> Expander::expand(const std::string& address) {
  std::vector<Destination> out;
  if (Status s = expand_one(address, address, 0, out); !s) return s.take_error();
  return out;
}

Status Expander::expand_one(const std::string& address, const std::string& orig, int depth,
                            std::vector<Destination>& out) {
  if (out.size() >= t_.expansion_limit) {
    add(out, error_dest("5.3.0 alias expansion limit exceeded (expansion_limit)", orig));
    return {};
  }
  if (depth > t_.recursion_limit) {
    add(out, error_dest("5.4.6 alias recursion limit exceeded (recursion_limit)", orig));
    return {};
  }
  auto [local, domain] = split_address(address);
  AddressClass cls = AddressClass::kDefault;
  if (t_.classify && !domain.empty()) {
    Result<AddressClass> c = t_.classify(domain);
    if (!c) return c.take_error();
    cls = *c;
  }
  // 1. virtual_alias_maps, for every domain.
  bool without_ext = false;
  Result<std::optional<std::string>> v = virtual_lookup(local, domain, cls == AddressClass::kLocal, without_ext);
  if (!v) return v.take_error();
  if (v->has_value()) {
    auto [user, ext] = split_extension(local, t_.delimiters);
    for (const std::string& item : split_alias_value(**v, true)) {
      if (item[0] == '|' || item[0] == '/' || common::istarts_with(item, ":include:")) {
        // virtual(5) results are addresses; commands and files come only from aliases.
        add(out, error_dest("5.7.1 mail to command or file is restricted (virtual_alias_maps)", orig));
        continue;
      }
      std::string target = item.find('@') == std::string::npos ? item + "@" + t_.myorigin : item;
      if (without_ext && t_.propagate_unmatched_extensions) {
        auto [tl, td] = split_address(target);
        auto [tu, te] = split_extension(tl, t_.delimiters);
        if (te.empty()) target = tl + ext + "@" + td;
      }
      auto [tl, td] = split_address(target);
      target = tl + "@" + common::to_lower(td);
      if (common::iequals(target, address)) {
        // "a@x  a@x, b@x": the address itself is delivered, not expanded again.
        Destination d;
        d.value = target;
        d.orig = orig;
        add(out, std::move(d));
        continue;
      }
      if (Status s = expand_one(target, orig, depth + 1, out); !s) return s;
    }
    return {};
  }
  // 2. aliases(5), for local domains only.
  if (cls == AddressClass::kLocal && t_.alias) {
    auto [user, ext] = split_extension(local, t_.delimiters);
    Result<std::optional<AliasHit>> a = t_.alias(common::to_lower(local));
    if (!a) return a.take_error();
    if (!a->has_value() && !ext.empty()) {
      a = t_.alias(common::to_lower(user));
      if (!a) return a.take_error();
    }
    if (a->has_value()) {
      return expand_alias_value((*a)->value, common::to_lower(user), domain, orig, AliasSource::kAlias, (*a)->owner,
                                depth, out);
    }
  }
  Destination d;
  d.value = address;
  d.orig = orig;
  add(out, std::move(d));
  return {};
}

Status Expander::expand_alias_value(const std::string& value, const std::string& self, const std::string& domain,
                                    const std::string& orig,
                                    AliasSource source, uid_t owner, int depth, std::vector<Destination>& out) {
  for (const std::string& item : split_alias_value(value, false)) {
    if (item[0] == '|') {
      bool ok = source == AliasSource::kAlias ? t_.commands_from_alias : t_.commands_from_include;
      if (!ok) {
        add(out, error_dest("5.7.1 mail to command is restricted", orig));
        continue;
      }
      Destination d;
      d.kind = Destination::Kind::kCommand;
      d.value = item.substr(1);
      d.orig = orig;
      d.owner = owner;
      add(out, std::move(d));
    } else if (common::istarts_with(item, ":include:")) {
      std::string path(common::trim(item.substr(9)));
      if (!t_.read_include || path.empty() || path[0] != '/') {
        add(out, error_dest("5.3.5 bad :include: path " + common::log_escape(path, 128), orig));
        continue;
      }
      Result<std::pair<std::string, uid_t>> f = t_.read_include(path, owner);
      if (!f) {
        if (f.error().kind == ErrorKind::kTemp) return f.take_error();
        add(out, error_dest("5.3.5 cannot open include file " + path + ": " + f.error().message, orig));
        continue;
      }
      std::string joined;
      for (const std::string& line : common::split(f->first, '\n')) {
        std::string_view t = common::trim(line);
        if (t.empty() || t[0] == '#') continue;
        if (!joined.empty()) joined += ", ";
        joined += std::string(t);
      }
      if (depth + 1 > t_.recursion_limit) {
        add(out, error_dest("5.4.6 alias recursion limit exceeded (recursion_limit)", orig));
        continue;
      }
      if (Status s = expand_alias_value(joined, self, domain, orig, AliasSource::kInclude, f->second, depth + 1, out);
          !s) {
        return s;
      }
    } else if (item[0] == '/') {
      bool ok = source == AliasSource::kAlias ? t_.files_from_alias : t_.files_from_include;
      if (!ok || item.back() == '/') {
        add(out, error_dest("5.7.1 mail to file is restricted", orig));
        continue;
      }
      Destination d;
      d.kind = Destination::Kind::kFile;
      d.value = item;
      d.orig = orig;
      d.owner = owner;
      add(out, std::move(d));
    } else if (item[0] == '\\') {
      // "\user": the local user itself, no further alias expansion.
      Destination d;
      d.value = item.substr(1) + "@" + domain;
      d.orig = orig;
      add(out, std::move(d));
    } else {
      // An unqualified name is a user of the same local domain (Postfix appends
      // $myorigin; its local domains share one user table, Tern's virtual users
      // do not, so the alias's own domain is the one that names the same user).
      std::string target = item.find('@') == std::string::npos ? item + "@" + domain : item;
      auto [tl, td] = split_address(target);
      target = tl + "@" + common::to_lower(td);
      // "root: root, admin": the user itself gets a copy without looping.
      Result<AddressClass> tc = t_.classify ? t_.classify(common::to_lower(td)) : Result<AddressClass>(AddressClass::kDefault);
      if (!tc) return tc.take_error();
      auto [tu, te] = split_extension(tl, t_.delimiters);
      if (*tc == AddressClass::kLocal && common::iequals(tu, self)) {
        Destination d;
        d.value = target;
        d.orig = orig;
        add(out, std::move(d));
        continue;
      }
      if (Status s = expand_one(target, orig, depth + 1, out); !s) return s;
    }
  }
  return {};
}

}  // namespace tern::mta
