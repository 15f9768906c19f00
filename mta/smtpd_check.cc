#include "mta/smtpd_check.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cerrno>
#include <fstream>
#include <functional>

#include "common/cidr.h"
#include "common/log.h"
#include "common/text.h"

namespace tern::mta {

using common::Result;
using common::smtp::Reply;
using DnsStatus = common::dns::Status;

namespace {

enum class Arg { kNone, kTable, kZone };

struct KnownName {
  const char* name;
  Arg arg;
};

// Every restriction name we implement; anything else is a configuration error.
const KnownName kKnown[] = {
    {"permit", Arg::kNone},
    {"reject", Arg::kNone},
    {"defer", Arg::kNone},
    {"dunno", Arg::kNone},
    {"permit_mynetworks", Arg::kNone},
    {"permit_sasl_authenticated", Arg::kNone},
    {"permit_auth_destination", Arg::kNone},
    {"reject_unauth_destination", Arg::kNone},
    {"defer_unauth_destination", Arg::kNone},
    {"reject_unknown_sender_domain", Arg::kNone},
    {"reject_unknown_recipient_domain", Arg::kNone},
    {"reject_non_fqdn_sender", Arg::kNone},
    {"reject_non_fqdn_recipient", Arg::kNone},
    {"reject_non_fqdn_helo_hostname", Arg::kNone},
    {"reject_non_fqdn_hostname", Arg::kNone},  // the Postfix 2.x name
    {"reject_invalid_helo_hostname", Arg::kNone},
    {"reject_invalid_hostname", Arg::kNone},   // the Postfix 2.x name
    {"reject_unlisted_recipient", Arg::kNone},
    {"reject_unknown_client_hostname", Arg::kNone},
    {"reject_unknown_client", Arg::kNone},     // the Postfix 2.x name
    {"reject_unknown_reverse_client_hostname", Arg::kNone},
    {"reject_multi_recipient_bounce", Arg::kNone},
    {"reject_unauth_pipelining", Arg::kNone},
    {"check_client_access", Arg::kTable},
    {"check_reverse_client_hostname_access", Arg::kTable},
    {"check_helo_access", Arg::kTable},
    {"check_sender_access", Arg::kTable},
    {"check_recipient_access", Arg::kTable},
    {"reject_rbl_client", Arg::kZone},
    {"reject_rhsbl_client", Arg::kZone},
    {"reject_rhsbl_reverse_client", Arg::kZone},
    {"reject_rhsbl_helo", Arg::kZone},
    {"reject_rhsbl_sender", Arg::kZone},
    {"reject_rhsbl_recipient", Arg::kZone},
    {"permit_dnswl_client", Arg::kZone},
};

const KnownName* find_name(const std::string& n) {
  for (const KnownName& k : kKnown) {
    if (n == k.name) return &k;
  }
  return nullptr;
}

// The enhanced code with the class digit that matches the reply code.
std::string enh(int code, const char* detail) { return std::string(code >= 500 ? "5" : "4") + detail; }

// Postfix's reply class of a list (SMTPD_NAME_*): "<name>: Class rejected: text".
const char* stage_class(CheckStage s) {
  switch (s) {
    case CheckStage::kClient: return "Client host";
    case CheckStage::kHelo: return "Helo command";
    case CheckStage::kSender: return "Sender address";
    case CheckStage::kRelay:
    case CheckStage::kRecipient: return "Recipient address";
    case CheckStage::kData: return "Data command";
  }
  return "Request";
}

// What the reply is about, as Postfix writes it in front of the text.
std::string subject(CheckStage s, const CheckFacts& f) {
  switch (s) {
    case CheckStage::kClient: return "<" + f.client_name + "[" + f.client_addr + "]>";
    case CheckStage::kHelo: return "<" + f.helo.value_or("") + ">";
    case CheckStage::kSender: return f.sender ? bracketed(*f.sender) : "<>";
    case CheckStage::kRelay:
    case CheckStage::kRecipient: return f.recipient ? bracketed(*f.recipient) : "<>";
    case CheckStage::kData: return "<DATA>";
  }
  return "";
}

Verdict refuse(int code, std::string enhanced, std::string text) {
  Verdict v;
  v.kind = code >= 500 ? Verdict::Kind::kReject : Verdict::Kind::kDefer;
  v.reply = Reply(code, std::move(enhanced), std::move(text));
  return v;
}

Verdict permit() {
  Verdict v;
  v.kind = Verdict::Kind::kPermit;
  return v;
}

bool authorised_destination(const CheckFacts& f) {
  if (!f.recipient) return false;
  if (f.recipient->mailbox.domain_is_literal) return false;
  if (is_routed(f.recipient->mailbox)) return false;
  return f.recipient_class != AddressClass::kDefault;
}

bool fqdn(std::string_view d) { return d.find('.') != std::string_view::npos; }

// reject_unknown_{sender,recipient}_domain on a DNS answer.
Verdict unknown_domain(const DomainDns& dns, bool recipient, const std::string& subj, const CheckCodes& c) {
  const char* words = recipient ? "Recipient address rejected" : "Sender address rejected";
  if (!dns.looked_up) return Verdict{};
  if (dns.null_mx) {
    // RFC 7505 3: a null MX domain sends and receives no mail.
    return recipient ? refuse(556, "5.1.10", subj + ": " + words + ": Domain does not accept mail")
                     : refuse(550, "5.7.27", subj + ": " + words + ": Domain does not accept mail");
  }
  switch (dns.status) {
    case DnsStatus::kOk: return Verdict{};
    case DnsStatus::kNxDomain:
    case DnsStatus::kNoData:
    case DnsStatus::kBadName:
      return refuse(c.unknown_address, enh(c.unknown_address, recipient ? ".1.2" : ".1.8"),
                    subj + ": " + words + ": Domain not found");
    case DnsStatus::kTempFail:
      return refuse(450, "4.4.3", subj + ": " + words + ": Domain not found");
  }
  return Verdict{};
}

}  // namespace

std::string bracketed(const common::smtp::Path& p) {
  if (p.null) return "<>";
  if (p.postmaster) return "<Postmaster>";
  return "<" + p.mailbox.address() + ">";
}

CheckCodes CheckCodes::from_config(const common::Config& cfg) {
  CheckCodes c;
  auto code = [&](const char* key, int def) {
    std::optional<uint64_t> v = common::parse_u64(cfg.str(key));
    return v && *v >= 400 && *v <= 599 ? static_cast<int>(*v) : def;
  };
  c.relay = static_cast<int>(cfg.integer("relay_domains_reject_code"));
  c.unknown_local = code("unknown_local_recipient_reject_code", 550);
  c.unknown_virtual_mailbox = static_cast<int>(cfg.integer("unknown_virtual_mailbox_reject_code"));
  c.unknown_virtual_alias = static_cast<int>(cfg.integer("unknown_virtual_alias_reject_code"));
  c.unknown_relay = static_cast<int>(cfg.integer("unknown_relay_recipient_reject_code"));
  c.unknown_address = code("unknown_address_reject_code", 450);
  c.unknown_hostname = static_cast<int>(cfg.integer("unknown_hostname_reject_code"));
  c.unknown_client = static_cast<int>(cfg.integer("unknown_client_reject_code"));
  c.non_fqdn = static_cast<int>(cfg.integer("non_fqdn_reject_code"));
  c.invalid_hostname = static_cast<int>(cfg.integer("invalid_hostname_reject_code"));
  c.access_map_reject = static_cast<int>(cfg.integer("access_map_reject_code"));
  c.access_map_defer = static_cast<int>(cfg.integer("access_map_defer_code"));
  c.maps_rbl = static_cast<int>(cfg.integer("maps_rbl_reject_code"));
  c.default_rbl_reply = cfg.str("default_rbl_reply");
  c.null_access_key = cfg.str("smtpd_null_access_lookup_key");
  c.parent_matches_subdomains = false;
  for (const std::string& k : cfg.list("parent_domain_matches_subdomains")) {
    if (common::iequals(k, "smtpd_access_maps")) c.parent_matches_subdomains = true;
  }
  c.recipient_delimiter = cfg.str("recipient_delimiter");
  return c;
}

Result<CheckCodes> CheckCodes::load(const common::Config& cfg) {
  CheckCodes c = from_config(cfg);
  const std::string spec = cfg.str("rbl_reply_maps");
  if (!spec.empty()) {
    Result<std::unique_ptr<common::Map>> m = common::Map::open(spec, common::MapSyntax::kPostmap);
    if (!m) {
      return common::make_error(common::ErrorKind::kConfig,
                                cfg.origin("rbl_reply_maps") + ": rbl_reply_maps: " + m.error().message);
    }
    c.rbl_reply_maps = std::shared_ptr<common::Map>(std::move(m).value());
  }
  return c;
}

// --- lookup keys -------------------------------------------------------------------

namespace {

bool numeric_host(const std::string& s) {
  uint8_t a[16];
  return !s.empty() && s.front() != '[' && common::parse_ip(s, a);
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return false;
  }
  return true;
}

}  // namespace

std::vector<std::string> access_domain_keys(const std::string& domain, bool parent_style) {
  // Postfix check_domain_access(): the name, then from each '.' on (".b.c") or just
  // after it ("b.c"); a numeric address gets no subdomain treatment.
  std::vector<std::string> out;
  if (domain.empty()) return out;
  size_t name = 0;
  for (;;) {
    out.push_back(domain.substr(name));
    if (name == 0 && numeric_host(domain)) break;
    size_t next = domain.find('.', name + 1);
    if (next == std::string::npos) break;
    if (parent_style) next += 1;
    if (next >= domain.size()) break;
    name = next;
  }
  return out;
}

namespace {

// An IPv4-mapped IPv6 address as the IPv4 address it is (Postfix logs and looks
// up "1.2.3.4", never "::ffff:1.2.3.4").
std::string unmapped(const std::string& address) {
  if (address.size() > 7 && common::iequals(address.substr(0, 7), "::ffff:") &&
      address.find(':', 7) == std::string::npos) {
    return address.substr(7);
  }
  return address;
}

}  // namespace

std::vector<std::string> access_address_keys(const std::string& address_in) {
  // Postfix check_addr_access(): cut at the last '.' (IPv4) or ':' (IPv6) until none is left.
  std::vector<std::string> out;
  const std::string address = unmapped(address_in);
  const char delim = address.find(':') != std::string::npos ? ':' : '.';
  std::string a = address;
  while (!a.empty()) {
    out.push_back(a);
    size_t p = a.rfind(delim);
    if (p == std::string::npos) break;
    a.resize(p);
  }
  return out;
}

std::vector<std::string> access_mail_keys(const std::string& local, const std::string& domain,
                                          const std::string& delimiters, bool parent_style) {
  // Postfix check_mail_access(): user+ext@domain, user@domain, the domain and its
  // parents, user+ext@, user@.
  std::vector<std::string> out;
  std::string bare;
  if (!delimiters.empty()) {
    size_t d = local.find_first_of(delimiters);
    if (d != std::string::npos && d > 0) bare = local.substr(0, d);
  }
  out.push_back(local + "@" + domain);
  if (!bare.empty()) out.push_back(bare + "@" + domain);
  for (std::string& k : access_domain_keys(domain, parent_style)) out.push_back(std::move(k));
  out.push_back(local + "@");
  if (!bare.empty()) out.push_back(bare + "@");
  return out;
}

std::string dnsxl_reverse(const std::string& address) {
  std::string a = unmapped(address);
  if (a.size() > 2 && a.front() == '[' && a.back() == ']') a = a.substr(1, a.size() - 2);
  unsigned char b[16];
  if (::inet_pton(AF_INET, a.c_str(), b) == 1) {
    return std::to_string(b[3]) + "." + std::to_string(b[2]) + "." + std::to_string(b[1]) + "." +
           std::to_string(b[0]);
  }
  if (::inet_pton(AF_INET6, a.c_str(), b) == 1) {
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    for (int i = 15; i >= 0; --i) {
      if (!out.empty()) out += '.';
      out += kHex[b[i] & 0xf];
      out += '.';
      out += kHex[b[i] >> 4];
    }
    return out;
  }
  return "";
}

// --- evaluation --------------------------------------------------------------------

namespace {

using Item = Restrictions::Item;

struct Ctx {
  CheckStage stage;
  const CheckFacts& f;
  const CheckCodes& c;
  Effects* e;
  int depth;
};

Verdict server_error() { return refuse(451, "4.3.5", "Server configuration error"); }

// RFC 3463 "D.D.D" at the start of an access or RBL text (Postfix dsn_split()).
std::string split_dsn(std::string_view& text, const std::string& def) {
  size_t i = 0;
  auto digits = [&](size_t max) {
    size_t st = i;
    while (i < text.size() && i - st < max && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    return i > st;
  };
  if (!text.empty() && (text[0] == '2' || text[0] == '4' || text[0] == '5')) {
    i = 1;
    if (i < text.size() && text[i] == '.' && (++i, digits(3)) && i < text.size() && text[i] == '.' && (++i, digits(3)) &&
        (i == text.size() || text[i] == ' ' || text[i] == '\t')) {
      std::string dsn(text.substr(0, i));
      text.remove_prefix(i);
      while (!text.empty() && (text[0] == ' ' || text[0] == '\t')) text.remove_prefix(1);
      return dsn;
    }
  }
  return def;
}

// Postfix smtpd_dsn_fix(): an address status (X.1.Y) must fit what is rejected, and
// the class digit follows the reply code (smtpd_check_reject()).
std::string fix_dsn(std::string dsn, const std::string& cls, int code) {
  if (dsn.size() >= 5 && dsn.compare(1, 3, ".1.") == 0) {
    const std::string detail = dsn.substr(4);
    if (cls == "Sender address") {
      if (detail == "1" || detail == "3" || detail == "4" || detail == "6") dsn = dsn.substr(0, 4) + "7";
      else if (detail == "2") dsn = dsn.substr(0, 4) + "8";
    } else if (cls == "Recipient address") {
      if (detail == "7") dsn = dsn.substr(0, 4) + "1";
      else if (detail == "8") dsn = dsn.substr(0, 4) + "2";
    } else {
      dsn = dsn.substr(0, 1) + ".7.1";
    }
  }
  dsn[0] = code >= 500 ? '5' : '4';
  return dsn;
}

Verdict refuse_text(int code, const std::string& def_dsn, std::string_view text, const std::string& subj,
                    const std::string& cls, const char* def_text) {
  std::string dsn = split_dsn(text, def_dsn);
  return refuse(code, fix_dsn(dsn, cls, code),
                subj + ": " + cls + " rejected: " + (text.empty() ? std::string(def_text) : std::string(text)));
}

// A 4XX deferral that waits for a later decision (Postfix defer_if()); the first one wins.
void defer_if(std::optional<Reply>& slot, int code, std::string_view text, const std::string& subj,
              const std::string& cls) {
  if (slot) return;
  Verdict v = refuse_text(code, "4.7.1", text, subj, cls, "Service unavailable");
  slot = v.reply;
}

Verdict eval_items(const std::vector<Item>& items, const std::string& subj, const std::string& cls, Ctx& x);

// Parses a nested restriction list from an access table's right-hand side.
// Unknown names stay in the list: they fail when reached, as in Postfix.
std::vector<Item> nested_items(const std::string& value) {
  std::vector<Item> out;
  std::vector<std::string> words = common::split_any(value, ", \t\r\n");
  for (size_t i = 0; i < words.size(); ++i) {
    Item it;
    it.name = common::to_lower(words[i]);
    const KnownName* k = find_name(it.name);
    if (k && k->arg == Arg::kZone && i + 1 < words.size()) it.arg = words[++i];
    out.push_back(std::move(it));
  }
  return out;
}

// Postfix check_table_result(): what an access table's value means.
Verdict table_result(const std::string& table, const std::string& value, const std::string& key,
                     const std::string& subj, const std::string& cls, Ctx& x) {
  size_t sp = value.find_first_of(" \t");
  const std::string cmd = value.substr(0, sp);
  std::string_view text;
  if (sp != std::string::npos) {
    text = std::string_view(value).substr(sp);
    while (!text.empty() && (text[0] == ' ' || text[0] == '\t')) text.remove_prefix(1);
  }
  auto is = [&](const char* w) { return common::iequals(cmd, w); };
  auto whatsup = [&](const char* action, const std::string& t) {
    if (x.e) x.e->whatsup.emplace_back(action, t);
  };
  if (is("DUNNO")) return Verdict{};
  if (is("REJECT")) return refuse_text(x.c.access_map_reject, "5.7.1", text, subj, cls, "Access denied");
  if (is("DEFER")) return refuse_text(x.c.access_map_defer, "4.7.1", text, subj, cls, "Access denied");
  if (is("WARN")) {
    whatsup("warn", std::string(text));
    return Verdict{};
  }
  if (is("INFO")) {
    whatsup("info", std::string(text));
    return Verdict{};
  }
  if (is("HOLD") || is("DISCARD")) {
    const bool hold = is("HOLD");
    // Postfix not_in_client_helo(): outside a mail transaction there is no message to act on.
    if (!x.f.sender) {
      common::log::warning("access table %s: with smtpd_delay_reject=no, action %s is always skipped in %s or %s "
                           "restrictions", table.c_str(), hold ? "HOLD" : "DISCARD", "Client host", "Helo command");
      return Verdict{};
    }
    const std::string t = subj + ": " + cls + " " +
                          (text.empty() ? std::string("triggers ") + (hold ? "HOLD" : "DISCARD") + " action"
                                        : std::string(text));
    if (hold) {
      if (x.e && x.e->hold) return Verdict{};
      whatsup("hold", t);
      if (x.e) x.e->hold = true;
      return Verdict{};
    }
    whatsup("discard", t);
    if (x.e) x.e->discard = true;
    return permit();
  }
  if (is("FILTER") || is("REDIRECT") || is("BCC") || is("PREPEND") || is("DELAY")) {
    common::log::warning("access table %s entry \"%s\": action %s is not supported by Tern", table.c_str(),
                         common::log_escape(key, 100).c_str(), cmd.c_str());
    return server_error();
  }
  if (is("DEFER_IF_PERMIT")) {
    if (x.e) defer_if(x.e->defer_if_permit, x.c.access_map_defer, text, subj, cls);
    return Verdict{};
  }
  if (is("DEFER_IF_REJECT")) {
    if (x.e) defer_if(x.e->defer_if_reject, x.c.access_map_defer, text, subj, cls);
    return Verdict{};
  }
  // All-numeric means OK: some out-of-band authentication writes time stamps here.
  if (all_digits(value)) return permit();
  if (cmd.size() == 3 && !text.empty() && (cmd[0] == '4' || cmd[0] == '5') && all_digits(cmd)) {
    const int code = std::atoi(cmd.c_str());
    return refuse_text(code, std::string(1, cmd[0]) + ".7.1", text, subj, cls, "Access denied");
  }
  if (is("OK") || is("RELAY")) return permit();
  if (value.find(':') != std::string::npos) {
    common::log::warning("access table %s has entry with lookup table: %s", table.c_str(),
                         common::log_escape(value, 200).c_str());
    return server_error();
  }
  if (x.depth > 100) {
    common::log::warning("access table %s entry %s causes unreasonable recursion", table.c_str(),
                         common::log_escape(value, 200).c_str());
    return server_error();
  }
  std::vector<Item> nested = nested_items(value);
  if (nested.empty()) {
    common::log::warning("access table %s entry %s has empty value", table.c_str(), common::log_escape(key, 100).c_str());
    return permit();
  }
  Ctx inner{x.stage, x.f, x.c, x.e, x.depth + 1};
  // A nested list names the table's key in its warnings.
  Verdict v = eval_items(nested, subj, cls, inner);
  if (v.refused() && v.reply.code == 451 && v.reply.enhanced == "4.3.5") {
    common::log::warning("access table %s entry \"%s\" has value \"%s\"", table.c_str(),
                         common::log_escape(key, 100).c_str(), common::log_escape(value, 200).c_str());
  }
  return v;
}

// The first key found decides (even DUNNO stops the search), as in access(5).
Verdict lookup_keys(const Item& it, const std::vector<std::string>& keys, const std::string& subj,
                    const std::string& cls, Ctx& x, bool* found) {
  *found = false;
  for (const std::string& k : keys) {
    if (k.empty()) continue;
    if (it.cidr) {
      if (std::optional<std::string> c = it.cidr->lookup(k)) {
        *found = true;
        return table_result(it.arg, *c, k, subj, cls, x);
      }
      continue;
    }
    Result<std::optional<std::string>> v = it.map->lookup(k);
    if (!v) {
      common::log::warning("%s: table lookup problem: %s", it.arg.c_str(), v.error().message.c_str());
      *found = true;
      return server_error();
    }
    if (*v) {
      *found = true;
      return table_result(it.arg, **v, k, subj, cls, x);
    }
  }
  return Verdict{};
}

// The zone without its "=reply-pattern".
std::string zone_of(const std::string& arg) { return arg.substr(0, arg.find('=')); }

// Postfix ip_match: "127.0.0.2", "127.0.0.[2..11]", "127.0.[0;1].2".
bool ip_pattern(std::string_view p, const std::string* addr, bool* matched) {
  uint8_t a[4] = {0, 0, 0, 0};
  if (addr) {
    unsigned char b[4];
    if (::inet_pton(AF_INET, addr->c_str(), b) != 1) return false;
    for (int k = 0; k < 4; ++k) a[k] = b[k];
  }
  size_t i = 0;
  auto number = [&](int& out) {
    size_t st = i;
    int v = 0;
    while (i < p.size() && i - st < 3 && std::isdigit(static_cast<unsigned char>(p[i]))) v = v * 10 + (p[i++] - '0');
    out = v;
    return i > st && v <= 255;
  };
  bool all = true;
  for (int o = 0; o < 4; ++o) {
    if (o > 0) {
      if (i >= p.size() || p[i] != '.') return false;
      ++i;
    }
    bool hit = false;
    if (i < p.size() && p[i] == '[') {
      ++i;
      for (;;) {
        int lo, hi;
        if (!number(lo)) return false;
        hi = lo;
        if (p.substr(i, 2) == "..") {
          i += 2;
          if (!number(hi) || hi < lo) return false;
        }
        hit = hit || (a[o] >= lo && a[o] <= hi);
        if (i < p.size() && p[i] == ';') {
          ++i;
          continue;
        }
        if (i < p.size() && p[i] == ']') {
          ++i;
          break;
        }
        return false;
      }
    } else {
      int v;
      if (!number(v)) return false;
      hit = a[o] == v;
    }
    all = all && hit;
  }
  if (i != p.size()) return false;
  if (matched) *matched = all;
  return true;
}

bool valid_zone_arg(const std::string& arg) {
  const std::string zone = zone_of(arg);
  if (zone.empty() || !common::dns::valid_hostname(zone)) return false;
  size_t eq = arg.find('=');
  return eq == std::string::npos || ip_pattern(std::string_view(arg).substr(eq + 1), nullptr, nullptr);
}

// For a DNS list item: the query name ("" when there is nothing to look up), what
// is looked up as Postfix prints it, and its reply class.
struct DnsxlQuery {
  std::string name;
  std::string what;
  std::string cls;
};

DnsxlQuery dnsxl_query(const Item& it, const CheckFacts& f) {
  DnsxlQuery q;
  const std::string zone = zone_of(it.arg);
  if (it.name == "reject_rbl_client" || it.name == "permit_dnswl_client") {
    std::string rev = dnsxl_reverse(f.client_addr);
    if (rev.empty()) return q;
    q.name = rev + "." + zone;
    q.what = f.client_addr;
    q.cls = "Client host";
    return q;
  }
  std::string domain;
  if (it.name == "reject_rhsbl_client") {
    if (f.client_name == "unknown") return q;
    domain = q.what = f.client_name;
    q.cls = "Client host";
  } else if (it.name == "reject_rhsbl_reverse_client") {
    if (f.reverse_name == "unknown") return q;
    domain = q.what = f.reverse_name;
    q.cls = "Unverified Client host";
  } else if (it.name == "reject_rhsbl_helo") {
    if (!f.helo) return q;
    domain = q.what = *f.helo;
    q.cls = "Helo command";
  } else if (it.name == "reject_rhsbl_sender" || it.name == "reject_rhsbl_recipient") {
    const common::smtp::Path* p = it.name == "reject_rhsbl_sender" ? f.sender : f.recipient;
    if (!p || p->null || p->mailbox.domain_is_literal) return q;
    domain = p->mailbox.domain;
    q.what = p->mailbox.address();
    q.cls = it.name == "reject_rhsbl_sender" ? "Sender address" : "Recipient address";
  } else {
    return q;
  }
  // Postfix find_dnsxl_domain(): valid names only, and none ending in a numeric label.
  if (domain.empty() || !common::dns::valid_hostname(domain)) return q;
  size_t dot = domain.rfind('.');
  if (all_digits(dot == std::string::npos ? domain : domain.substr(dot + 1))) return q;
  q.name = common::to_lower(domain) + "." + zone;
  return q;
}

// Whether the cache says listed (with an A record that fits the =pattern).
const DnsxlAnswer* dnsxl_listed(const Item& it, const std::string& name, const CheckFacts& f) {
  if (name.empty() || !f.dnsxl) return nullptr;
  auto found = f.dnsxl->find(name);
  if (found == f.dnsxl->end() || found->second.status != DnsStatus::kOk) return nullptr;
  size_t eq = it.arg.find('=');
  if (eq == std::string::npos) return &found->second;
  for (const std::string& a : found->second.addresses) {
    bool m = false;
    if (ip_pattern(std::string_view(it.arg).substr(eq + 1), &a, &m) && m) return &found->second;
  }
  return nullptr;
}

// Postfix mac_expand() for RBL reply templates: $name, ${name}, ${name?text}, ${name:text}.
bool expand(std::string_view t, const std::function<std::optional<std::string>(const std::string&)>& look,
            std::string& out, int depth = 0) {
  if (depth > 10) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] != '$') {
      out += t[i];
      continue;
    }
    if (i + 1 >= t.size()) return false;
    char c = t[i + 1];
    if (c == '$') {
      out += '$';
      ++i;
      continue;
    }
    if (c == '{' || c == '(') {
      const char close = c == '{' ? '}' : ')';
      size_t j = i + 2;
      int level = 1;
      for (; j < t.size(); ++j) {
        if (t[j] == c) ++level;
        if (t[j] == close && --level == 0) break;
      }
      if (j >= t.size()) return false;
      std::string_view inner = t.substr(i + 2, j - i - 2);
      size_t op = inner.find_first_of("?:");
      std::string name(inner.substr(0, op));
      std::optional<std::string> v = look(name);
      if (!v) return false;
      if (op == std::string::npos) {
        out += *v;
      } else if ((inner[op] == '?') == !v->empty()) {
        if (!expand(inner.substr(op + 1), look, out, depth + 1)) return false;
      }
      i = j;
      continue;
    }
    size_t j = i + 1;
    while (j < t.size() && (std::isalnum(static_cast<unsigned char>(t[j])) || t[j] == '_')) ++j;
    if (j == i + 1) return false;
    std::optional<std::string> v = look(std::string(t.substr(i + 1, j - i - 1)));
    if (!v) return false;
    out += *v;
    i = j - 1;
  }
  return true;
}

// Postfix rbl_reject_reply(): rbl_reply_maps or default_rbl_reply, expanded.
Verdict rbl_reply(const Item& it, const DnsxlAnswer& a, const DnsxlQuery& q, Ctx& x) {
  std::string tmpl;
  if (x.c.rbl_reply_maps) {
    Result<std::optional<std::string>> v = x.c.rbl_reply_maps->lookup(it.arg);
    if (!v) {
      common::log::warning("%s: table lookup problem: %s", x.c.rbl_reply_maps->spec().c_str(),
                           v.error().message.c_str());
      return server_error();
    }
    if (*v) tmpl = **v;
  }
  auto look = [&](const std::string& n) -> std::optional<std::string> {
    if (n == "rbl_code") return std::to_string(x.c.maps_rbl);
    if (n == "rbl_domain") return zone_of(it.arg);
    if (n == "rbl_reason" || n == "rbl_txt") return a.txt;
    if (n == "rbl_what") return q.what;
    if (n == "rbl_class") return q.cls;
    if (n == "client_address") return x.f.client_addr;
    if (n == "client_name") return x.f.client_name;
    if (n == "reverse_client_name") return x.f.reverse_name;
    if (n == "helo_name") return x.f.helo.value_or("");
    return std::nullopt;
  };
  std::string why;
  if (tmpl.empty() || !expand(tmpl, look, why)) {
    if (!tmpl.empty()) {
      common::log::warning("rbl_reject_reply: bad rbl reply template for domain %s: %s", it.arg.c_str(), tmpl.c_str());
    }
    why.clear();
    if (!expand(x.c.default_rbl_reply, look, why)) {
      common::log::warning("bad default_rbl_reply template: %s", x.c.default_rbl_reply.c_str());
      return server_error();
    }
  }
  // The reply must start with a 4XX or 5XX code and a space.
  if (why.size() < 4 || (why[0] != '4' && why[0] != '5') || !std::isdigit(static_cast<unsigned char>(why[1])) ||
      !std::isdigit(static_cast<unsigned char>(why[2])) || why[3] != ' ') {
    common::log::warning("rbl response code configuration error: %s", common::log_escape(why, 200).c_str());
    return refuse(450, "4.7.1", "Service unavailable");
  }
  const int code = std::atoi(why.substr(0, 3).c_str());
  std::string_view text = std::string_view(why).substr(4);
  std::string dsn = split_dsn(text, "4.7.1");
  return refuse(code, fix_dsn(dsn, q.cls, code), text.empty() ? std::string("Service unavailable") : std::string(text));
}

Verdict eval_items(const std::vector<Item>& items, const std::string& subj, const std::string& cls, Ctx& x) {
  const CheckFacts& f = x.f;
  const CheckCodes& c = x.c;
  const CheckStage stage = x.stage;
  for (const Item& item : items) {
    const std::string& r = item.name;
    Verdict v;
    if (r == "permit") return permit();
    if (r == "dunno") return Verdict{};
    if (r == "reject") return refuse(554, "5.7.1", subj + ": " + cls + " rejected: Access denied");
    if (r == "defer") return refuse(450, "4.7.1", subj + ": " + cls + " rejected: Access denied");
    if (!find_name(r)) {
      common::log::warning("unknown smtpd restriction: \"%s\"", common::log_escape(r, 64).c_str());
      return server_error();
    }
    if (r == "permit_mynetworks") {
      if (f.in_mynetworks) return permit();
    } else if (r == "permit_sasl_authenticated") {
      if (f.sasl_authenticated) return permit();
    } else if (r == "permit_auth_destination") {
      if (authorised_destination(f)) return permit();
    } else if (r == "reject_unauth_destination" || r == "defer_unauth_destination") {
      if (f.recipient && !authorised_destination(f)) {
        int code = r == "defer_unauth_destination" ? 454 : c.relay;
        return refuse(code, enh(code, ".7.1"), bracketed(*f.recipient) + ": Relay access denied");
      }
    } else if (r == "reject_unauth_pipelining") {
      if (f.ill_pipelining) {
        return refuse(503, "5.5.0", subj + ": " + cls + " rejected: Improper use of SMTP command pipelining");
      }
    } else if (r == "check_client_access" || r == "check_reverse_client_hostname_access" ||
               r == "check_helo_access" || r == "check_sender_access" || r == "check_recipient_access") {
      if (!item.map && !item.cidr) {
        common::log::warning("restriction %s without a table", r.c_str());
        return server_error();
      }
      std::vector<std::string> keys;
      std::string s2, cls2;
      bool applies = true;
      if (r == "check_client_access" || r == "check_reverse_client_hostname_access") {
        const bool rev = r == "check_reverse_client_hostname_access";
        const std::string& name = rev ? f.reverse_name : f.client_name;
        keys = access_domain_keys(name, c.parent_matches_subdomains);
        for (std::string& k : access_address_keys(f.client_addr)) keys.push_back(std::move(k));
        s2 = rev ? "<" + f.reverse_name + ">" : "<" + f.client_name + "[" + f.client_addr + "]>";
        cls2 = rev ? "Unverified Client host" : "Client host";
      } else if (r == "check_helo_access") {
        applies = f.helo.has_value() && !f.helo->empty();
        if (applies) keys = access_domain_keys(*f.helo, c.parent_matches_subdomains);
        s2 = "<" + f.helo.value_or("") + ">";
        cls2 = "Helo command";
      } else {
        const bool sender = r == "check_sender_access";
        const common::smtp::Path* p = sender ? f.sender : f.recipient;
        applies = p != nullptr;
        if (applies) {
          if (p->null) {
            keys.push_back(c.null_access_key);
          } else {
            keys = access_mail_keys(p->mailbox.local_part, p->mailbox.domain, c.recipient_delimiter,
                                    c.parent_matches_subdomains);
          }
          s2 = bracketed(*p);
        }
        cls2 = sender ? "Sender address" : "Recipient address";
      }
      if (applies) {
        bool found = false;
        v = lookup_keys(item, keys, s2, cls2, x, &found);
        // Postfix: an OK for a source-routed recipient is too suspicious to relay on.
        if (v.kind == Verdict::Kind::kPermit && r == "check_recipient_access" && is_routed(f.recipient->mailbox)) {
          v = Verdict{};
        }
        if (v.kind != Verdict::Kind::kDunno) return v;
      }
    } else if (r == "reject_rbl_client" || r == "reject_rhsbl_client" || r == "reject_rhsbl_reverse_client" ||
               r == "reject_rhsbl_helo" || r == "reject_rhsbl_sender" || r == "reject_rhsbl_recipient") {
      DnsxlQuery q = dnsxl_query(item, f);
      if (const DnsxlAnswer* a = dnsxl_listed(item, q.name, f)) return rbl_reply(item, *a, q, x);
    } else if (r == "permit_dnswl_client") {
      // Postfix: never whitelist an unauthorised recipient (no open relay by DNSWL).
      if ((stage == CheckStage::kRelay || stage == CheckStage::kRecipient) && f.recipient &&
          !authorised_destination(f)) {
        continue;
      }
      DnsxlQuery q = dnsxl_query(item, f);
      if (dnsxl_listed(item, q.name, f)) return permit();
    } else if (r == "reject_non_fqdn_sender") {
      if (f.sender && !f.sender->null && !f.sender->mailbox.domain_is_literal && !fqdn(f.sender->mailbox.domain)) {
        return refuse(c.non_fqdn, enh(c.non_fqdn, ".5.2"),
                      bracketed(*f.sender) + ": Sender address rejected: need fully-qualified address");
      }
    } else if (r == "reject_non_fqdn_recipient") {
      if (f.recipient && !f.recipient->postmaster && !f.recipient->mailbox.domain_is_literal &&
          !fqdn(f.recipient->mailbox.domain)) {
        return refuse(c.non_fqdn, enh(c.non_fqdn, ".5.2"),
                      bracketed(*f.recipient) + ": Recipient address rejected: need fully-qualified address");
      }
    } else if (r == "reject_non_fqdn_helo_hostname" || r == "reject_non_fqdn_hostname") {
      if (f.helo) {
        const std::string& h = *f.helo;
        bool literal = h.size() > 2 && h.front() == '[' && h.back() == ']';
        if (!literal && !fqdn(h)) {
          return refuse(c.non_fqdn, enh(c.non_fqdn, ".5.2"),
                        "<" + h + ">: Helo command rejected: need fully-qualified hostname");
        }
      }
    } else if (r == "reject_invalid_helo_hostname" || r == "reject_invalid_hostname") {
      if (f.helo) {
        const std::string& h = *f.helo;
        bool ok;
        if (h.size() > 2 && h.front() == '[' && h.back() == ']') {
          Result<common::smtp::Mailbox> m = common::smtp::parse_mailbox("x@" + h, false);
          ok = m.ok();
        } else {
          std::string d = h;
          if (!d.empty() && d.back() == '.') d.pop_back();  // Postfix allows one trailing dot here
          ok = common::smtp::valid_domain(d, true);
        }
        if (!ok) {
          return refuse(c.invalid_hostname, enh(c.invalid_hostname, ".5.2"),
                        "<" + h + ">: Helo command rejected: Invalid name");
        }
      }
    } else if (r == "reject_unknown_sender_domain") {
      if (f.sender && !f.sender->null && !f.sender->mailbox.domain_is_literal &&
          f.sender_class == AddressClass::kDefault) {
        v = unknown_domain(f.sender_dns, false, bracketed(*f.sender), c);
        if (v.refused()) return v;
      }
    } else if (r == "reject_unknown_recipient_domain") {
      if (f.recipient && !f.recipient->postmaster && !f.recipient->mailbox.domain_is_literal &&
          f.recipient_class == AddressClass::kDefault) {
        v = unknown_domain(f.recipient_dns, true, bracketed(*f.recipient), c);
        if (v.refused()) return v;
      }
    } else if (r == "reject_unlisted_recipient") {
      v = unlisted_recipient(f, c);
      if (v.refused()) return v;
    } else if (r == "reject_unknown_client_hostname" || r == "reject_unknown_client") {
      if (f.client_name == "unknown") {
        int code = f.name_tempfail ? 450 : c.unknown_hostname;
        return refuse(code, enh(code, ".7.25"),
                      "Client host rejected: cannot find your hostname, [" + f.client_addr + "]");
      }
    } else if (r == "reject_unknown_reverse_client_hostname") {
      if (f.reverse_name == "unknown") {
        int code = f.name_tempfail ? 450 : c.unknown_client;
        return refuse(code, enh(code, ".7.25"),
                      "Client host rejected: cannot find your reverse hostname, [" + f.client_addr + "]");
      }
    } else if (r == "reject_multi_recipient_bounce") {
      if (f.sender && f.sender->null) {
        bool multi = stage == CheckStage::kData ? f.recipients_accepted > 1 : f.recipients_accepted >= 1;
        if (multi && (stage == CheckStage::kData || f.recipient)) {
          return refuse(550, "5.5.3", subj + ": " + cls + " rejected: Multi-recipient bounce");
        }
      }
    }
  }
  return Verdict{};
}

}  // namespace

std::optional<std::string> Restrictions::CidrTable::lookup(const std::string& key) const {
  uint8_t a[16];
  if (!common::parse_ip(key, a)) return std::nullopt;  // names and partial addresses never match
  for (const auto& [nets, value] : entries) {
    if (nets.contains(key)) return value;
  }
  return std::nullopt;
}

namespace {

// Reads a cidr: table; errors name "path:line".
Result<std::shared_ptr<Restrictions::CidrTable>> load_cidr(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return common::make_error(common::ErrorKind::kConfig, "cidr:" + path + ": the path must be absolute");
  }
  std::ifstream in(path);
  if (!in) return common::errno_error("cidr:" + path, errno);
  auto t = std::make_shared<Restrictions::CidrTable>();
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string_view v = common::trim(line);
    if (v.empty() || v[0] == '#') continue;
    size_t sp = v.find_first_of(" \t");
    std::string net(v.substr(0, sp));
    std::string value = sp == std::string_view::npos ? "" : std::string(common::trim(v.substr(sp)));
    const std::string where = path + ":" + std::to_string(n);
    if (net[0] == '!' || common::iequals(net, "if") || common::iequals(net, "endif")) {
      return common::make_error(common::ErrorKind::kConfig, where + ": negation and if/endif are not supported");
    }
    if (value.empty()) return common::make_error(common::ErrorKind::kConfig, where + ": no value for '" + net + "'");
    Result<common::NetworkList> nl = common::NetworkList::parse({net});
    if (!nl) return common::make_error(common::ErrorKind::kConfig, where + ": " + nl.error().message);
    t->entries.emplace_back(std::move(nl).value(), value);
  }
  return t;
}

}  // namespace

Result<Restrictions> Restrictions::parse(const std::vector<std::string>& items, const std::string& key) {
  Restrictions r;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& raw = items[i];
    Item it;
    it.name = common::to_lower(raw);
    const KnownName* k = find_name(it.name);
    if (!k) {
      return common::make_error(common::ErrorKind::kConfig,
                                key + ": unknown restriction '" + common::log_escape(raw, 64) + "'");
    }
    if (k->arg != Arg::kNone) {
      if (i + 1 >= items.size()) {
        return common::make_error(common::ErrorKind::kConfig, key + ": " + it.name + " needs " +
                                                                  (k->arg == Arg::kTable ? "a type:table" : "a DNS domain") +
                                                                  " argument");
      }
      it.arg = items[++i];
      if (k->arg == Arg::kTable) {
        if (it.arg.find(':') == std::string::npos) {
          return common::make_error(common::ErrorKind::kConfig, key + ": " + it.name + " " +
                                                                    common::log_escape(it.arg, 100) +
                                                                    ": expected type:table (hash:, lmdb:, texthash:, cidr:)");
        }
        if (common::to_lower(it.arg.substr(0, 5)) == "cidr:") {
          Result<std::shared_ptr<CidrTable>> t = load_cidr(it.arg.substr(5));
          if (!t) return common::make_error(common::ErrorKind::kConfig, key + ": " + it.name + ": " + t.error().message);
          it.cidr = std::move(t).value();
          r.items_.push_back(std::move(it));
          continue;
        }
        Result<std::unique_ptr<common::Map>> m = common::Map::open(it.arg, common::MapSyntax::kPostmap);
        if (!m) return common::make_error(common::ErrorKind::kConfig, key + ": " + it.name + ": " + m.error().message);
        it.map = std::shared_ptr<common::Map>(std::move(m).value());
      } else if (!valid_zone_arg(it.arg)) {
        return common::make_error(common::ErrorKind::kConfig, key + ": " + it.name + " " +
                                                                  common::log_escape(it.arg, 100) +
                                                                  ": expected a DNS domain[=d.d.d.d pattern]");
      }
    }
    r.items_.push_back(std::move(it));
  }
  return r;
}

Needs Restrictions::needs() const {
  Needs n;
  for (const Item& it : items_) {
    const std::string& i = it.name;
    if (i == "reject_unknown_client_hostname" || i == "reject_unknown_client" ||
        i == "reject_unknown_reverse_client_hostname") {
      n.client_name = true;
    }
    if (i == "reject_unknown_sender_domain") n.sender_dns = true;
    if (i == "reject_unknown_recipient_domain") n.recipient_dns = true;
    if (i == "reject_unlisted_recipient") n.recipient_known = true;
  }
  return n;
}

std::vector<std::string> Restrictions::dnsxl_queries(const CheckFacts& facts) const {
  std::vector<std::string> out;
  for (const Item& it : items_) {
    const KnownName* k = find_name(it.name);
    if (!k || k->arg != Arg::kZone) continue;
    DnsxlQuery q = dnsxl_query(it, facts);
    if (!q.name.empty() && std::find(out.begin(), out.end(), q.name) == out.end()) out.push_back(q.name);
  }
  return out;
}

Verdict unlisted_recipient(const CheckFacts& f, const CheckCodes& c) {
  if (!f.recipient || f.recipient->postmaster) return Verdict{};
  const std::string subj = bracketed(*f.recipient);
  int code = 0;
  const char* table = nullptr;
  switch (f.recipient_class) {
    case AddressClass::kLocal: code = c.unknown_local; table = "local recipient table"; break;
    case AddressClass::kVirtualMailbox: code = c.unknown_virtual_mailbox; table = "virtual mailbox table"; break;
    case AddressClass::kVirtualAlias: code = c.unknown_virtual_alias; table = "virtual alias table"; break;
    case AddressClass::kRelay: code = c.unknown_relay; table = "relay recipient table"; break;
    case AddressClass::kDefault: return Verdict{};
  }
  switch (f.recipient_known) {
    case Known::kYes:
    case Known::kUnchecked: return Verdict{};
    case Known::kTempFail: return refuse(451, "4.3.0", subj + ": Temporary lookup failure");
    case Known::kNo:
      return refuse(code, enh(code, ".1.1"), subj + ": Recipient address rejected: User unknown in " + table);
  }
  return Verdict{};
}

Verdict Restrictions::evaluate(CheckStage stage, const CheckFacts& f, const CheckCodes& c, Effects* e) const {
  Ctx x{stage, f, c, e, 0};
  Verdict v = eval_items(items_, subject(stage, f), stage_class(stage), x);
  // Postfix DEFER_IF_REJECT: a later 5XX becomes the deferral it announced.
  if (e && e->defer_if_reject && v.kind == Verdict::Kind::kReject && v.reply.code >= 500) {
    v.kind = Verdict::Kind::kDefer;
    v.reply = *e->defer_if_reject;
  }
  return v;
}

}  // namespace tern::mta
