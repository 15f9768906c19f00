#include "mta/address.h"

#include "common/text.h"

namespace tern::mta {

using common::ErrorKind;
using common::Result;

const char* address_class_name(AddressClass c) {
  switch (c) {
    case AddressClass::kLocal: return "local";
    case AddressClass::kVirtualAlias: return "virtual alias";
    case AddressClass::kVirtualMailbox: return "virtual mailbox";
    case AddressClass::kRelay: return "relay";
    case AddressClass::kDefault: return "default";
  }
  return "?";
}

std::pair<std::string, std::string> split_address(const std::string& a) {
  size_t at = a.rfind('@');
  if (at == std::string::npos) return {a, ""};
  return {a.substr(0, at), a.substr(at + 1)};
}

std::pair<std::string, std::string> split_extension(std::string_view lp, std::string_view delimiters) {
  if (delimiters.empty()) return {std::string(lp), ""};
  size_t pos = lp.find_first_of(delimiters);
  // "+foo" alone is a user name, not an empty user with an extension (Postfix).
  if (pos == std::string_view::npos || pos == 0) return {std::string(lp), ""};
  return {std::string(lp.substr(0, pos)), std::string(lp.substr(pos))};
}

static bool is_map_spec(const std::string& e) {
  size_t colon = e.find(':');
  return colon != std::string::npos && colon > 0 && e.find('/') != std::string::npos && e[0] != '[';
}

DomainList::DomainList(std::vector<std::string> entries) {
  for (std::string& e : entries) {
    if (is_map_spec(e)) {
      maps_.push_back(e);
    } else if (!e.empty() && e[0] == '.') {
      parents_.push_back(common::to_lower(e));
    } else if (!e.empty()) {
      std::string d = common::to_lower(e);
      while (!d.empty() && d.back() == '.') d.pop_back();
      names_.push_back(d);
    }
  }
  open_.resize(maps_.size());
}

Result<bool> DomainList::contains(std::string_view domain_in) const {
  std::string d = common::to_lower(domain_in);
  for (const std::string& n : names_) {
    if (n == d) return true;
  }
  for (const std::string& p : parents_) {
    if (d.size() > p.size() && d.compare(d.size() - p.size(), p.size(), p) == 0) return true;
  }
  for (size_t i = 0; i < maps_.size(); ++i) {
    if (!open_[i]) {
      Result<std::unique_ptr<common::Map>> m = common::Map::open(maps_[i], common::MapSyntax::kPostmap);
      if (!m) return common::make_error(ErrorKind::kTemp, m.error().message);
      open_[i] = std::move(m).value();
    }
    Result<std::optional<std::string>> v = open_[i]->lookup(d);
    if (!v) return common::make_error(ErrorKind::kTemp, v.error().message);
    if (v->has_value()) return true;
  }
  return false;
}

Result<common::Map*> MapCache::get(const std::string& spec, common::MapSyntax syntax) {
  for (auto& m : maps_) {
    if (m->spec() == spec) return m.get();
  }
  Result<std::unique_ptr<common::Map>> m = common::Map::open(spec, syntax);
  if (!m) return common::make_error(ErrorKind::kTemp, m.error().message);
  maps_.push_back(std::move(m).value());
  return maps_.back().get();
}

DomainTables DomainTables::from_config(const common::Config& cfg) {
  DomainTables t;
  t.mydestination = DomainList(cfg.list("mydestination"));
  t.virtual_alias_domains = DomainList(cfg.list("virtual_alias_domains"));
  t.virtual_mailbox_domains = DomainList(cfg.list("virtual_mailbox_domains"));
  t.relay_domains = DomainList(cfg.list("relay_domains"));
  return t;
}

Result<AddressClass> DomainTables::classify(std::string_view domain, bool literal) const {
  if (literal || domain.empty()) return AddressClass::kDefault;
  // Postfix's order: local first, then virtual alias, virtual mailbox, relay.
  const std::pair<const DomainList*, AddressClass> order[] = {
      {&mydestination, AddressClass::kLocal},
      {&virtual_alias_domains, AddressClass::kVirtualAlias},
      {&virtual_mailbox_domains, AddressClass::kVirtualMailbox},
      {&relay_domains, AddressClass::kRelay},
  };
  for (const auto& [list, cls] : order) {
    Result<bool> in = list->contains(domain);
    if (!in) return in.take_error();
    if (*in) return cls;
  }
  return AddressClass::kDefault;
}

bool is_routed(const common::smtp::Mailbox& m) { return m.has_routing_characters(); }

std::string canonical_address(const common::smtp::Mailbox& m) {
  common::smtp::Mailbox c = m;
  if (!c.domain_is_literal) c.domain = common::to_lower(c.domain);
  return c.address();
}

}  // namespace tern::mta
