#include "mta/smtpd_check.h"

#include <cstdlib>

#include "common/text.h"

namespace tern::mta {

using common::Result;
using common::smtp::Reply;
using DnsStatus = common::dns::Status;

namespace {

// Every restriction name we implement; anything else is a configuration error.
const char* const kKnown[] = {
    "permit",
    "reject",
    "defer",
    "dunno",
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "permit_auth_destination",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain",
    "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient",
    "reject_non_fqdn_helo_hostname",
    "reject_non_fqdn_hostname",  // the Postfix 2.x name
    "reject_invalid_helo_hostname",
    "reject_invalid_hostname",   // the Postfix 2.x name
    "reject_unlisted_recipient",
    "reject_unknown_client_hostname",
    "reject_unknown_client",     // the Postfix 2.x name
    "reject_unknown_reverse_client_hostname",
    "reject_multi_recipient_bounce",
};

bool known_name(const std::string& n) {
  for (const char* k : kKnown) {
    if (n == k) return true;
  }
  return false;
}

// The enhanced code with the class digit that matches the reply code.
std::string enh(int code, const char* detail) { return std::string(code >= 500 ? "5" : "4") + detail; }

const char* stage_words(CheckStage s) {
  switch (s) {
    case CheckStage::kClient: return "Client host rejected";
    case CheckStage::kHelo: return "Helo command rejected";
    case CheckStage::kSender: return "Sender address rejected";
    case CheckStage::kRelay:
    case CheckStage::kRecipient: return "Recipient address rejected";
    case CheckStage::kData: return "Data command rejected";
  }
  return "Rejected";
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
  return c;
}

Result<Restrictions> Restrictions::parse(const std::vector<std::string>& items, const std::string& key) {
  Restrictions r;
  for (const std::string& raw : items) {
    std::string n = common::to_lower(raw);
    if (!known_name(n)) {
      return common::make_error(common::ErrorKind::kConfig,
                                key + ": unknown restriction '" + common::log_escape(raw, 64) + "'");
    }
    r.items_.push_back(n);
  }
  return r;
}

Needs Restrictions::needs() const {
  Needs n;
  for (const std::string& i : items_) {
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

Verdict Restrictions::evaluate(CheckStage stage, const CheckFacts& f, const CheckCodes& c) const {
  const std::string subj = subject(stage, f);
  const std::string words = stage_words(stage);
  for (const std::string& r : items_) {
    Verdict v;
    if (r == "permit") return permit();
    if (r == "dunno") return Verdict{};
    if (r == "reject") return refuse(554, "5.7.1", subj + ": " + words + ": Access denied");
    if (r == "defer") return refuse(450, "4.7.1", subj + ": " + words + ": Access denied");
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
          return refuse(550, "5.5.3", subj + ": " + words + ": Multi-recipient bounce");
        }
      }
    }
  }
  return Verdict{};
}

}  // namespace tern::mta
