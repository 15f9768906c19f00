// Address classes and the tables that decide them (Postfix ADDRESS_CLASS_README):
// which domains are ours (local, virtual alias, virtual mailbox), which we relay
// for, and everything else (the default class: remote, needs AUTH or mynetworks).
//
// The class is what relay control rests on, so the rules are strict and explicit:
//   - domains compare case-insensitively, with no trailing dot (the path parser
//     refuses "example.org." already);
//   - an address literal ("[192.0.2.1]") is never ours: Postfix would accept one
//     naming its own interface, Tern refuses that convenience rather than reason
//     about every address a host has;
//   - a local part that carries routing ('%', '!', a quoted '@') makes the address
//     "routed": it is not an authorised destination even in our own domains,
//     because a later hop could route on it (Postfix's reject_unauth_destination
//     says the same: "the address contains no sender-specified routing").
//
// Domain lists are Postfix's: names, ".example.org" for subdomains, and type:table
// maps looked up by domain. Lookups that fail are temporary errors.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/maps.h"
#include "common/result.h"
#include "common/smtp_address.h"

namespace tern::mta {

enum class AddressClass {
  kLocal,           // mydestination: aliases, then a user of tern-mda
  kVirtualAlias,    // virtual_alias_domains: every address must be an alias
  kVirtualMailbox,  // virtual_mailbox_domains: a user of tern-mda
  kRelay,           // relay_domains: forwarded to the domain's MX
  kDefault,         // anyone else's domain
};
const char* address_class_name(AddressClass c);

// "user@domain" split at the last '@' (a quoted local part may hold one; such
// addresses never reach the expansion as routed ones are refused at RCPT, but be
// exact): {"user", "domain"}, {a, ""} without '@'.
std::pair<std::string, std::string> split_address(const std::string& a);

// Splits "user+ext" at the first recipient_delimiter character: {"user", "+ext"}.
// An empty delimiter set, or a delimiter at the start, splits nothing.
std::pair<std::string, std::string> split_extension(std::string_view local_part, std::string_view delimiters);

// A list of domains: literal names, ".parent" patterns, and maps (looked up by the
// domain, lower-cased). Entries come from a config list.
class DomainList {
 public:
  DomainList() = default;
  explicit DomainList(std::vector<std::string> entries);
  // kTemp when a map cannot be read.
  common::Result<bool> contains(std::string_view domain) const;
  bool empty() const { return names_.empty() && maps_.empty(); }

 private:
  std::vector<std::string> names_;           // lower-case, no dot prefix
  std::vector<std::string> parents_;         // ".example.org" patterns, lower-case
  std::vector<std::string> maps_;            // specs
  mutable std::vector<std::unique_ptr<common::Map>> open_;
};

// Opens maps on first use and keeps them; a map that cannot be opened is a
// temporary failure for the lookup that needed it (a missing /etc/aliases.lmdb
// says "run newaliases" in the log rather than killing the daemon).
class MapCache {
 public:
  common::Result<common::Map*> get(const std::string& spec, common::MapSyntax syntax);

 private:
  std::vector<std::unique_ptr<common::Map>> maps_;
};

struct DomainTables {
  DomainList mydestination;
  DomainList virtual_alias_domains;
  DomainList virtual_mailbox_domains;
  DomainList relay_domains;

  static DomainTables from_config(const common::Config& cfg);
  // The class of a domain (without brackets for literals: pass domain_is_literal).
  common::Result<AddressClass> classify(std::string_view domain, bool literal) const;
};

// Whether an address has a routing part that a later hop could act on.
bool is_routed(const common::smtp::Mailbox& m);

// Lower-cases the domain part of local@domain; the local part keeps its case
// (RFC 5321 2.4), though lookups fold it.
std::string canonical_address(const common::smtp::Mailbox& m);

}  // namespace tern::mta
