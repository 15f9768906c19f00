// SMTP access restrictions with Postfix's names, order and replies (smtpd_check.c,
// postconf(5) "SMTPD ACCESS RESTRICTIONS", access(5)). The session gathers the facts
// a restriction list needs (client name, DNS answers for the sender and recipient
// domains and the DNS lists, whether a recipient exists) and evaluate() turns a list
// plus facts into a verdict. No network I/O and no clock; the only I/O is reading
// the check_*_access tables (local files, as Postfix's dict lookups) and warning
// about broken table entries in the log, so every rule has a table-driven unit test.
//
// Lists are evaluated left to right; the first permit, reject or defer ends the
// list, and an exhausted list means "dunno" (on to the next list). A reject or
// defer ends the whole check; a permit only its own list. With smtpd_delay_reject
// (the default) the client, HELO and sender lists run at RCPT TO, before
// smtpd_relay_restrictions and smtpd_recipient_restrictions, so a rejection names
// the recipient in the log.
//
// Reply texts are Postfix's, so that what admins and log tools match keeps working:
//   554 5.7.1 <c@example.net>: Relay access denied
//   550 5.1.1 <u@example.org>: Recipient address rejected: User unknown in local recipient table
//   504 5.5.2 <host>: Helo command rejected: need fully-qualified hostname
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/cidr.h"
#include "common/config.h"
#include "common/dns.h"
#include "common/maps.h"
#include "common/result.h"
#include "common/smtp_address.h"
#include "common/smtp_reply.h"
#include "mta/address.h"

namespace tern::mta {

// Which list is being evaluated; decides the reply wording.
enum class CheckStage {
  kClient,     // smtpd_client_restrictions ("Client host rejected")
  kHelo,       // smtpd_helo_restrictions ("Helo command rejected")
  kSender,     // smtpd_sender_restrictions ("Sender address rejected")
  kRelay,      // smtpd_relay_restrictions ("Recipient address rejected")
  kRecipient,  // smtpd_recipient_restrictions
  kData,       // smtpd_data_restrictions ("Data command rejected")
};

// Whether a lookup found something.
enum class Known {
  kUnchecked,  // not looked up (the restriction needing it was not in the list)
  kYes,
  kNo,
  kTempFail,   // the table or server could not answer
};

// The DNS state of a domain for reject_unknown_*_domain (RFC 5321 5.1: MX, else A/AAAA).
struct DomainDns {
  bool looked_up = false;
  common::dns::Status status = common::dns::Status::kTempFail;  // of the MX-then-address lookup
  bool null_mx = false;                                         // RFC 7505
};

// The answer of one DNS list query (reject_rbl_client, reject_rhsbl_*,
// permit_dnswl_client), keyed by the query name ("2.0.0.127.zen.example").
struct DnsxlAnswer {
  common::dns::Status status = common::dns::Status::kTempFail;  // of the A lookup
  std::vector<std::string> addresses;                           // the A records
  std::string txt;  // the TXT records joined with " / ", at most 500 bytes (Postfix)
};
using DnsxlCache = std::map<std::string, DnsxlAnswer>;

// What access-table actions do besides deciding (Postfix's log_whatsup and saved
// flags): HOLD and DISCARD apply to the whole message, WARN only logs, and
// DEFER_IF_PERMIT / DEFER_IF_REJECT change a later decision of the same command.
struct Effects {
  bool hold = false;
  bool discard = false;
  std::vector<std::pair<std::string, std::string>> whatsup;  // ("hold", "<x@y>: Sender address triggers HOLD action")
  std::optional<common::smtp::Reply> defer_if_permit;
  std::optional<common::smtp::Reply> defer_if_reject;
};

struct CheckFacts {
  // The client.
  std::string client_addr;                 // numeric
  std::string client_name = "unknown";     // forward-confirmed name, else "unknown"
  std::string reverse_name = "unknown";    // PTR name, even when not confirmed
  bool name_tempfail = false;              // the hostname lookup failed temporarily
  bool in_mynetworks = false;
  bool sasl_authenticated = false;
  // HELO/EHLO.
  std::optional<std::string> helo;
  // MAIL FROM.
  const common::smtp::Path* sender = nullptr;
  AddressClass sender_class = AddressClass::kDefault;
  DomainDns sender_dns;
  // RCPT TO.
  const common::smtp::Path* recipient = nullptr;
  AddressClass recipient_class = AddressClass::kDefault;
  Known recipient_known = Known::kUnchecked;  // in local_recipient_maps / virtual maps
  DomainDns recipient_dns;
  // DATA.
  size_t recipients_accepted = 0;
  // The client sent commands ahead of time where it may not (reject_unauth_pipelining).
  bool ill_pipelining = false;
  // DNS list answers gathered before evaluation; a query missing here is "not listed".
  const DnsxlCache* dnsxl = nullptr;
};

// Reply codes from the config (Postfix *_reject_code keys).
struct CheckCodes {
  int relay = 554;                // relay_domains_reject_code
  int unknown_local = 550;        // unknown_local_recipient_reject_code
  int unknown_virtual_mailbox = 550;
  int unknown_virtual_alias = 550;
  int unknown_relay = 550;
  int unknown_address = 450;      // unknown_address_reject_code
  int unknown_hostname = 450;     // unknown_hostname_reject_code
  int unknown_client = 450;       // unknown_client_reject_code
  int non_fqdn = 504;
  int invalid_hostname = 501;
  int access_map_reject = 554;    // access_map_reject_code
  int access_map_defer = 450;     // access_map_defer_code
  int maps_rbl = 554;             // maps_rbl_reject_code
  std::string default_rbl_reply = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";
  std::shared_ptr<common::Map> rbl_reply_maps;  // rbl_reply_maps: zone -> template
  std::string null_access_key = "<>";           // smtpd_null_access_lookup_key
  bool parent_matches_subdomains = true;        // smtpd_access_maps in parent_domain_matches_subdomains
  std::string recipient_delimiter = "+";
  // Opens rbl_reply_maps too; errors name the key.
  static common::Result<CheckCodes> load(const common::Config& cfg);
  static CheckCodes from_config(const common::Config& cfg);
};

struct Verdict {
  enum class Kind {
    kDunno,   // no decision: on to the next list
    kPermit,  // accepted by this list
    kReject,  // refused (5xx, or 4xx for a reject with a 4xx code)
    kDefer,   // refused for now (4xx)
  };
  Kind kind = Kind::kDunno;
  common::smtp::Reply reply;  // for kReject and kDefer

  bool refused() const { return kind == Kind::kReject || kind == Kind::kDefer; }
};

// What a list needs looked up before evaluate() can decide.
struct Needs {
  bool client_name = false;      // reject_unknown_client_hostname / reverse
  bool sender_dns = false;       // reject_unknown_sender_domain
  bool recipient_dns = false;    // reject_unknown_recipient_domain
  bool recipient_known = false;  // reject_unlisted_recipient
};

// A parsed restriction list. parse() refuses unknown names at start-up, naming the
// config key ("smtpd_recipient_restrictions: unknown restriction 'x'"), and opens
// the tables of check_*_access (before the daemon drops privileges, as Postfix
// opens them before its chroot).
class Restrictions {
 public:
  static common::Result<Restrictions> parse(const std::vector<std::string>& items, const std::string& key);
  Needs needs() const;
  bool empty() const { return items_.empty(); }
  // The DNS list queries this list would make with these facts (names to look up
  // as A, and TXT when listed), so the session can ask them before evaluate().
  std::vector<std::string> dnsxl_queries(const CheckFacts& facts) const;

  // `effects`, when given, collects HOLD/DISCARD/WARN and the DEFER_IF_* state;
  // without it those actions are evaluated but have no effect.
  Verdict evaluate(CheckStage stage, const CheckFacts& facts, const CheckCodes& codes,
                   Effects* effects = nullptr) const;

  // A cidr: table (Postfix cidr_table(5)): "network/prefix value" lines, the first
  // network that contains the address decides; read once at start-up.
  struct CidrTable {
    std::vector<std::pair<common::NetworkList, std::string>> entries;
    std::optional<std::string> lookup(const std::string& key) const;
  };
  struct Item {
    std::string name;                   // lower-cased restriction name
    std::string arg;                    // the table or DNS zone that follows it, if it takes one
    std::shared_ptr<common::Map> map;   // check_*_access with hash:, lmdb:, texthash:
    std::shared_ptr<CidrTable> cidr;    // check_*_access with cidr:
  };

 private:
  std::vector<Item> items_;
};

// Lookup keys, in access(5)'s order. Pure, for unit tests.
// A host name and its parent domains: "a.b.c", then "b.c", "c" (parent style, the
// default) or ".b.c", ".c"; a numeric address is looked up only as itself.
std::vector<std::string> access_domain_keys(const std::string& domain, bool parent_style);
// A network address and its shorter prefixes: "1.2.3.4", "1.2.3", "1.2", "1" (IPv6
// shortened at ':', as Postfix does).
std::vector<std::string> access_address_keys(const std::string& address);
// An email address: user+ext@domain, user@domain, domain and parents, user+ext@, user@.
std::vector<std::string> access_mail_keys(const std::string& local, const std::string& domain,
                                          const std::string& delimiters, bool parent_style);
// The DNSBL query name for a client address: reversed octets (IPv4) or nibbles (IPv6).
std::string dnsxl_reverse(const std::string& address);

// The implicit smtpd_reject_unlisted_recipient check and the explicit
// reject_unlisted_recipient: unknown users of our domains.
Verdict unlisted_recipient(const CheckFacts& facts, const CheckCodes& codes);

// The recipient as Postfix prints it in replies: "<user@example.org>".
std::string bracketed(const common::smtp::Path& p);

}  // namespace tern::mta
