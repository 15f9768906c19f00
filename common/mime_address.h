// Address lists of RFC 5322 3.4 (From, To, Cc, Bcc, Reply-To, Sender), with the
// obsolete forms of 4.4 (routes, phrases with dots, comments anywhere) and groups.
//
// Lenient like every mail parser must be: a missing '>' or domain, stray specials and
// unbalanced quotes give the best reading rather than an error. The display name is
// kept raw (RFC 2047 encoded-words undecoded, quotes removed), because IMAP's ENVELOPE
// returns it so; decode it with decode_header_text() to show or search it. No I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tern::common::mime {

struct Address {
  // What this entry is: RFC 3501 represents a group by a start marker carrying the
  // group name and an end marker, around its members.
  enum class Kind {
    kMailbox,     // an address: name, route, mailbox, host
    kGroupStart,  // "name:" of a group; the group name is in `mailbox`
    kGroupEnd,    // the ";" closing a group
  };
  Kind kind = Kind::kMailbox;
  std::string name;     // display name (phrase), unquoted, encoded-words kept; may be empty
  std::string route;    // obsolete source route "@a,@b" without the ':'; usually empty
  std::string mailbox;  // local part, unquoted; empty when missing
  std::string host;     // domain; empty when missing

  // "local@domain" (the local part re-quoted when it needs it).
  std::string addr_spec() const;
};

// Parses an address-list header value. At most `max_addresses` entries are returned
// (a bound for crafted headers; group markers count).
std::vector<Address> parse_address_list(std::string_view raw, size_t max_addresses = 10000);

// A readable UTF-8 form for search and logs: "Name <local@domain>", "local@domain",
// or "group:" / ";" for group markers.
std::string address_display(const Address& a);

}  // namespace tern::common::mime
