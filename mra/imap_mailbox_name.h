// Mailbox names at the trust boundary: what a client may name, and LIST patterns.
//
// Every mailbox name a client sends passes check_mailbox_name() before the store sees
// it, so no name can reach outside the user's mail root whatever the store does with
// it: no empty, "." or ".." components, no leading separator (an absolute path), no
// NUL or other control characters, no leading '~' (home expansion in some stores), no
// LIST wildcards, valid UTF-8, and bounded lengths. The store may refuse more (its own
// on-disk limits) but never needs to refuse less. Names are UTF-8 here; the session
// converts from modified UTF-7 first. "INBOX" is case-insensitive (RFC 3501 5.1) and
// comes out canonical. No I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::mra::imap {

struct MailboxNameRules {
  char separator = '/';          // hierarchy separator the session announces
  size_t max_length = 1024;      // bytes of the whole name
  size_t max_component = 255;    // bytes of one level: a file name on most file systems
  size_t max_depth = 32;         // levels; deeper trees are abuse, not organisation
};

// Checks a UTF-8 mailbox name; returns it with a leading "inbox" component
// canonicalised to "INBOX". The error message is fit to show the client.
tern::common::Result<std::string> check_mailbox_name(std::string_view utf8, const MailboxNameRules& rules = {});

// True when `name` is INBOX or below it ("INBOX/x").
bool is_inbox(std::string_view name, char separator = '/');

// LIST/LSUB pattern matching (RFC 3501 6.3.8): '*' matches anything, '%' anything but
// the separator; the INBOX component matches case-insensitively. Linear in
// name x pattern (NFA simulation), so a pattern of many wildcards cannot backtrack
// exponentially.
bool list_match(std::string_view pattern, std::string_view name, char separator = '/');

// The pattern LIST applies: reference and mailbox argument joined (RFC 3501 6.3.8).
std::string list_pattern(std::string_view reference, std::string_view mailbox);

}  // namespace tern::mra::imap
