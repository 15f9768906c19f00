// RFC 5321 paths and mailboxes: "<user@example.org>", "<>", "<@a.example,@b.example:
// user@c.example>", "<\"john doe\"@example.org>", "<user@[192.0.2.1]>", and with
// SMTPUTF8 (RFC 6531) "<jürgen@bücher.example>".
//
// A parser, no I/O. It accepts exactly the grammar of RFC 5321 4.1.2 and 4.1.3 (plus
// the UTF-8 extensions of RFC 6531 3.3 when asked to), and rejects everything else:
// unbalanced brackets, a second '@' outside quotes (`user@other@domain`), empty
// atoms (`a..b@x`), control bytes, NUL, invalid UTF-8, domains with bad labels,
// address literals that are not addresses. What the RFC allows but a relay must be
// careful with is kept visible in the result rather than silently rewritten, so that
// an MTA can refuse relay tricks: '%' (`user%other@domain`), '!' (bang paths,
// `host!user@domain`), a quoted '@' (`"user@other"@domain`), and source routes.
//
// Limits (RFC 5321 4.5.3.1): a local part of at most 64 octets and a domain of at
// most 255 are what every implementation must accept; real mail (SRS, VERP, BATV)
// has longer local parts, so we accept up to kMaxLocalPart and kMaxDomain, and the
// whole path is bounded by the command line length anyway.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::common::smtp {

// Bounds on what a client controls; generous beyond the RFC minimums (see above).
inline constexpr size_t kMaxLocalPart = 256;
inline constexpr size_t kMaxDomain = 255;
inline constexpr size_t kMaxLabel = 63;
inline constexpr size_t kMaxSourceRoute = 16;

struct Mailbox {
  std::string local_part;           // decoded: surrounding quotes and quoted-pair backslashes removed
  bool quoted = false;              // the local part was written as a Quoted-string
  std::string domain;               // as written; for a literal, including the brackets
  bool domain_is_literal = false;   // "[192.0.2.1]", "[IPv6:2001:db8::1]", "[tag:text]"
  bool utf8 = false;                // non-ASCII in the local part or domain (needs SMTPUTF8)

  bool empty() const { return local_part.empty() && domain.empty(); }
  // local@domain with the local part re-quoted when it is not a valid Dot-string.
  std::string address() const;
  // The local part as it would appear on the wire (quoted when needed).
  std::string wire_local_part() const;

  // Relay tricks (an MTA must not treat these as local just because the domain is):
  bool has_percent_hack() const { return local_part.find('%') != std::string::npos; }
  bool has_bang_path() const { return local_part.find('!') != std::string::npos; }
  bool has_at_in_local_part() const { return local_part.find('@') != std::string::npos; }
  bool has_routing_characters() const { return has_percent_hack() || has_bang_path() || has_at_in_local_part(); }
};

struct Path {
  bool null = false;                       // "<>": the null reverse-path
  bool postmaster = false;                 // "<Postmaster>" with no domain (RFC 5321 4.1.1.3)
  std::vector<std::string> source_route;   // "@a,@b:" domains; obsolete, to be ignored (RFC 5321 C)
  Mailbox mailbox;

  // "<...>" as it would be sent again (source route dropped, as RFC 5321 3.6.1 allows).
  std::string wire() const;
};

struct PathOptions {
  bool allow_null = false;          // MAIL FROM:<> (never RCPT TO:<>)
  bool allow_postmaster = false;    // RCPT TO:<Postmaster>
  bool smtputf8 = false;            // RFC 6531: UTF-8 in local part and domain
};

// Parses a whole path ("<...>"). Errors are kProtocol with a short reason
// ("unbalanced '<'", "bad domain", ...) fit for a 501 reply text.
Result<Path> parse_path(std::string_view text, const PathOptions& options);
// Parses a path at the start of `in` and removes it from `in` (for command lines
// where ESMTP parameters follow).
Result<Path> consume_path(std::string_view& in, const PathOptions& options);
// A bare "local@domain" (no brackets), as found in an ORCPT rfc822 address or a
// tern-deliver -a argument.
Result<Mailbox> parse_mailbox(std::string_view text, bool smtputf8);
// A domain name (letters, digits, hyphens; UTF-8 U-labels with smtputf8).
bool valid_domain(std::string_view d, bool smtputf8);
// Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool valid_utf8(std::string_view s);

}  // namespace tern::common::smtp
