#include "common/smtp_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/text.h"

namespace tern::common::smtp {
namespace {

Error bad(std::string why) { return make_error(ErrorKind::kProtocol, std::move(why)); }

bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// RFC 5322 atext.
bool is_atext(unsigned char c) {
  if (is_alpha(c) || is_digit(c)) return true;
  return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != 0;
}

// Length of the well-formed UTF-8 sequence at s[i] (a non-ASCII lead byte), or 0.
size_t utf8_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;  // ASCII, a continuation byte, or C0/C1/F5..FF: never a lead byte
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF) return 0;  // overlong / too big
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0;  // UTF-16 surrogates are not characters
  return n;
}

// inet_pton reads a C string: a NUL inside the literal would end it early and let
// whatever follows through unchecked (found by tests/fuzz/smtp_address_fuzz.cc).
bool only_chars(std::string_view s, const char* allowed) {
  for (char c : s) {
    if (c == '\0' || !std::strchr(allowed, c)) return false;
  }
  return true;
}

bool valid_ipv4(std::string_view s) {
  // inet_pton accepts exactly dotted-quad decimal, which is RFC 5321's IPv4-address-literal.
  if (s.empty() || s.size() > 15 || !only_chars(s, "0123456789.")) return false;
  std::string z(s);
  in_addr a;
  return ::inet_pton(AF_INET, z.c_str(), &a) == 1;
}

bool valid_ipv6(std::string_view s) {
  if (s.empty() || s.size() > 45 || !only_chars(s, "0123456789abcdefABCDEF:.")) return false;
  std::string z(s);
  in6_addr a;
  return ::inet_pton(AF_INET6, z.c_str(), &a) == 1;
}

// The inside of "[...]" (RFC 5321 4.1.3).
bool valid_address_literal(std::string_view in) {
  if (valid_ipv4(in)) return true;
  if (istarts_with(in, "IPv6:")) return valid_ipv6(in.substr(5));
  // General-address-literal = Standardized-tag ":" 1*dcontent; Standardized-tag is
  // an Ldh-str registered with IANA. None is registered besides IPv6, so a general
  // literal can name no host we could deliver to, but it is valid syntax.
  size_t colon = in.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 >= in.size()) return false;
  std::string_view tag = in.substr(0, colon), content = in.substr(colon + 1);
  for (char c : tag) {
    if (!is_alpha(c) && !is_digit(c) && c != '-') return false;
  }
  if (tag.back() == '-') return false;
  for (unsigned char c : content) {
    if (c < 33 || c > 126 || c == '[' || c == '\\' || c == ']') return false;  // dcontent
  }
  return true;
}

// Reads a Dot-string local part; stops at '@' or at the first byte that cannot
// continue it.
Result<std::string> read_dot_string(std::string_view in, size_t& i, bool utf8, bool& saw_utf8) {
  std::string out;
  bool atom_empty = true;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (c == '.') {
      if (atom_empty) return bad("empty atom in local part");
      out += '.';
      atom_empty = true;
      ++i;
    } else if (is_atext(c)) {
      out += static_cast<char>(c);
      atom_empty = false;
      ++i;
    } else if (c >= 0x80) {
      if (!utf8) return bad("non-ASCII local part without SMTPUTF8");
      size_t n = utf8_len(in, i);
      if (!n) return bad("invalid UTF-8 in local part");
      out.append(in.substr(i, n));
      saw_utf8 = true;
      atom_empty = false;
      i += n;
    } else {
      break;
    }
  }
  if (out.empty()) return bad("empty local part");
  if (atom_empty) return bad("local part ends with '.'");
  return out;
}

Result<std::string> read_quoted_string(std::string_view in, size_t& i, bool utf8, bool& saw_utf8) {
  // in[i] == '"'
  std::string out;
  ++i;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (c == '"') {
      ++i;
      return out;
    }
    if (c == '\\') {
      // quoted-pairSMTP = %d92 %d32-126
      if (i + 1 >= in.size()) break;
      unsigned char q = static_cast<unsigned char>(in[i + 1]);
      if (q < 32 || q > 126) return bad("bad quoted-pair in local part");
      out += static_cast<char>(q);
      i += 2;
    } else if (c >= 32 && c <= 126) {
      out += static_cast<char>(c);  // qtextSMTP: %d32-33 / %d35-91 / %d93-126
      ++i;
    } else if (c >= 0x80) {
      if (!utf8) return bad("non-ASCII local part without SMTPUTF8");
      size_t n = utf8_len(in, i);
      if (!n) return bad("invalid UTF-8 in local part");
      out.append(in.substr(i, n));
      saw_utf8 = true;
      i += n;
    } else {
      return bad("control character in quoted local part");
    }
  }
  return bad("unterminated quoted local part");
}

// Domain or address literal at in[i], up to a byte that cannot continue it.
Result<std::string> read_domain(std::string_view in, size_t& i, bool utf8, bool& literal, bool& saw_utf8) {
  literal = false;
  if (i < in.size() && in[i] == '[') {
    size_t close = in.find(']', i);
    if (close == std::string_view::npos) return bad("unterminated address literal");
    std::string_view inner = in.substr(i + 1, close - i - 1);
    if (close - i + 1 > kMaxDomain) return bad("address literal too long");
    if (!valid_address_literal(inner)) return bad("bad address literal");
    literal = true;
    std::string out(in.substr(i, close - i + 1));
    i = close + 1;
    return out;
  }
  size_t start = i;
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    if (is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c >= 0x80) {
      ++i;
    } else {
      break;
    }
  }
  std::string_view d = in.substr(start, i - start);
  if (d.empty()) return bad("missing domain");
  if (d.size() > kMaxDomain) return bad("domain too long");
  if (!valid_domain(d, utf8)) return bad("bad domain");
  for (unsigned char c : d) saw_utf8 = saw_utf8 || c >= 0x80;
  return std::string(d);
}

bool dot_string_ok(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '.') {
      if (s[i + 1] == '.') return false;
    } else if (!is_atext(c) && c < 0x80) {
      return false;
    }
  }
  return true;
}

Result<Mailbox> read_mailbox(std::string_view in, size_t& i, bool utf8) {
  Mailbox m;
  m.quoted = i < in.size() && in[i] == '"';
  Result<std::string> lp = m.quoted ? read_quoted_string(in, i, utf8, m.utf8) : read_dot_string(in, i, utf8, m.utf8);
  if (!lp) return lp.take_error();
  m.local_part = std::move(lp).value();
  if (m.local_part.size() > kMaxLocalPart) return bad("local part too long");
  if (i >= in.size() || in[i] != '@') return bad("missing '@domain'");
  ++i;
  Result<std::string> d = read_domain(in, i, utf8, m.domain_is_literal, m.utf8);
  if (!d) return d.take_error();
  m.domain = std::move(d).value();
  return m;
}

}  // namespace

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = utf8_len(s, i);
    if (!n) return false;
    i += n;
  }
  return true;
}

bool valid_domain(std::string_view d, bool smtputf8) {
  if (d.empty() || d.size() > kMaxDomain) return false;
  for (std::string_view label : split(d, '.')) {
    // sub-domain = Let-dig [Ldh-str]: no empty label, no leading or trailing '-'.
    if (label.empty() || label.size() > kMaxLabel) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (size_t i = 0; i < label.size();) {
      unsigned char c = static_cast<unsigned char>(label[i]);
      if (is_alpha(c) || is_digit(c) || c == '-') {
        ++i;
      } else if (c >= 0x80 && smtputf8) {
        size_t n = utf8_len(label, i);
        if (!n) return false;
        i += n;
      } else {
        return false;
      }
    }
  }
  return true;
}

std::string Mailbox::wire_local_part() const {
  if (dot_string_ok(local_part)) return local_part;
  std::string q = "\"";
  for (char c : local_part) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  q += '"';
  return q;
}

std::string Mailbox::address() const {
  if (empty()) return "";
  if (domain.empty()) return wire_local_part();
  return wire_local_part() + "@" + domain;
}

std::string Path::wire() const {
  if (null) return "<>";
  if (postmaster) return "<" + mailbox.local_part + ">";
  return "<" + mailbox.address() + ">";
}

Result<Path> consume_path(std::string_view& in, const PathOptions& opt) {
  Path p;
  if (in.empty() || in[0] != '<') return bad("path must be enclosed in '<' and '>'");
  size_t i = 1;
  if (in.size() > 1 && in[1] == '>') {
    if (!opt.allow_null) return bad("null path not allowed here");
    p.null = true;
    in.remove_prefix(2);
    return p;
  }
  // A-d-l: "@dom,@dom:" (RFC 5321 4.1.2); kept but never used for routing.
  if (i < in.size() && in[i] == '@') {
    while (true) {
      if (i >= in.size() || in[i] != '@') return bad("bad source route");
      ++i;
      bool lit = false, u = false;
      Result<std::string> d = read_domain(in, i, opt.smtputf8, lit, u);
      if (!d || lit) return bad("bad source route");
      if (p.source_route.size() >= kMaxSourceRoute) return bad("source route too long");
      p.source_route.push_back(std::move(d).value());
      if (i < in.size() && in[i] == ',') {
        ++i;
        continue;
      }
      if (i < in.size() && in[i] == ':') {
        ++i;
        break;
      }
      return bad("bad source route");
    }
  }
  // <Postmaster> without a domain (RFC 5321 4.1.1.3, case-insensitive).
  if (opt.allow_postmaster && p.source_route.empty() && in.size() >= i + 11 && iequals(in.substr(i, 10), "postmaster") &&
      in[i + 10] == '>') {
    p.postmaster = true;
    p.mailbox.local_part = std::string(in.substr(i, 10));
    in.remove_prefix(i + 11);
    return p;
  }
  Result<Mailbox> m = read_mailbox(in, i, opt.smtputf8);
  if (!m) return m.take_error();
  if (i >= in.size()) return bad("missing '>'");
  if (in[i] != '>') {
    if (in[i] == '@') return bad("more than one '@' in address");
    return bad("unexpected character in address");
  }
  p.mailbox = std::move(m).value();
  in.remove_prefix(i + 1);
  return p;
}

Result<Path> parse_path(std::string_view text, const PathOptions& options) {
  std::string_view in = text;
  Result<Path> p = consume_path(in, options);
  if (!p) return p;
  if (!in.empty()) return bad("junk after path");
  return p;
}

Result<Mailbox> parse_mailbox(std::string_view text, bool smtputf8) {
  size_t i = 0;
  Result<Mailbox> m = read_mailbox(text, i, smtputf8);
  if (!m) return m;
  if (i != text.size()) return bad(text[i] == '@' ? "more than one '@' in address" : "junk after address");
  return m;
}

}  // namespace tern::common::smtp
