#include "mra/imap_mailbox_name.h"

#include <vector>

#include "common/mime_charset.h"
#include "common/text.h"

namespace tern::mra::imap {

using tern::common::ErrorKind;
using tern::common::make_error;
using tern::common::Result;

namespace {

std::string canonical_inbox(std::string_view name, char sep) {
  size_t end = name.find(sep);
  std::string_view first = name.substr(0, end);
  if (tern::common::iequals(first, "INBOX")) {
    return "INBOX" + std::string(end == std::string_view::npos ? std::string_view() : name.substr(end));
  }
  return std::string(name);
}

}  // namespace

Result<std::string> check_mailbox_name(std::string_view name, const MailboxNameRules& rules) {
  auto bad = [](const char* why) { return make_error(ErrorKind::kProtocol, why); };
  if (name.empty()) return bad("Empty mailbox name");
  if (name.size() > rules.max_length) return bad("Mailbox name too long");
  if (!tern::common::mime::is_valid_utf8(name)) return bad("Mailbox name is not valid UTF-8");
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return bad("Control characters are not allowed in mailbox names");
    if (c == '*' || c == '%') return bad("Wildcards are not allowed in mailbox names");
  }
  if (name[0] == rules.separator) return bad("Mailbox name must not begin with the hierarchy separator");
  if (name[0] == '~') return bad("Mailbox name must not begin with '~'");
  size_t depth = 0;
  size_t i = 0;
  for (;;) {
    size_t j = name.find(rules.separator, i);
    std::string_view comp = name.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i);
    if (comp.empty()) return bad("Empty hierarchy level in mailbox name");
    if (comp == "." || comp == "..") return bad("'.' and '..' are not allowed in mailbox names");
    if (comp[0] == '.') return bad("Mailbox name levels must not begin with '.'");
    if (comp.size() > rules.max_component) return bad("Mailbox name level too long");
    if (++depth > rules.max_depth) return bad("Mailbox hierarchy too deep");
    if (j == std::string_view::npos) break;
    i = j + 1;
  }
  return canonical_inbox(name, rules.separator);
}

bool is_inbox(std::string_view name, char separator) {
  std::string_view first = name.substr(0, name.find(separator));
  return tern::common::iequals(first, "INBOX");
}

bool list_match(std::string_view pattern, std::string_view name, char sep) {
  // Canonicalise INBOX on both sides so "inbox/%" matches "INBOX/x".
  std::string n = canonical_inbox(name, sep);
  std::string p;
  // Collapse runs of wildcards: "*%*" is "*", "%%" is "%".
  for (char c : pattern) {
    if ((c == '*' || c == '%') && !p.empty() && (p.back() == '*' || p.back() == '%')) {
      if (c == '*') p.back() = '*';
      continue;
    }
    p += c;
  }
  if (p.size() >= 5 && tern::common::iequals(std::string_view(p).substr(0, 5), "INBOX") &&
      (p.size() == 5 || p[5] == sep)) {
    p.replace(0, 5, "INBOX");
  }
  // NFA over pattern positions: state k means p[0..k) matched a prefix of n.
  std::vector<char> cur(p.size() + 1, 0), next(p.size() + 1, 0);
  auto close = [&](std::vector<char>& st) {
    // A wildcard may match the empty string: its state implies the state after it.
    for (size_t k = 0; k < p.size(); ++k) {
      if (st[k] && (p[k] == '*' || p[k] == '%')) st[k + 1] = 1;
    }
  };
  cur[0] = 1;
  close(cur);
  // INBOX is case-insensitive (RFC 3501 5.1) wherever a pattern spells it, whole or
  // in part ("iNbOx*", "in%"), as Dovecot matches it: the letters of INBOX itself
  // compare without case; every other name compares exactly.
  const size_t inbox_letters = n.starts_with("INBOX") && (n.size() == 5 || n[5] == sep) ? 5 : 0;
  size_t at = 0;
  for (char c : n) {
    const bool fold = at++ < inbox_letters;
    std::fill(next.begin(), next.end(), 0);
    bool any = false;
    for (size_t k = 0; k < p.size(); ++k) {
      if (!cur[k]) continue;
      char pc = p[k];
      if (pc == '*' || (pc == '%' && c != sep)) {
        next[k] = 1;  // the wildcard consumes c and may consume more
        any = true;
      } else if (pc == c || (fold && pc >= 'a' && pc <= 'z' && pc - 'a' + 'A' == c)) {
        next[k + 1] = 1;
        any = true;
      }
    }
    if (!any) return false;
    close(next);
    cur.swap(next);
  }
  return cur[p.size()] != 0;
}

std::string list_pattern(std::string_view reference, std::string_view mailbox) {
  return std::string(reference) + std::string(mailbox);
}

}  // namespace tern::mra::imap
