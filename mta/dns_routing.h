// Where SMTP delivery goes: the next hop of a recipient domain or of relayhost, and
// the hosts and addresses to try for it, in order (RFC 5321 5.1).
//
//   example.org            MX lookup; no MX records: the domain's own address
//                          ("implicit MX"); a null MX (RFC 7505): no mail at all
//   [smtp.example.com]:587 no MX lookup: the host's addresses (relayhost syntax)
//   [192.0.2.7]            that address (also a recipient's domain literal)
//
// MX hosts are tried by preference, equal preferences in random order (RFC 5321
// 5.1). An MX list that names this host (myhostname) is cut before that entry, as
// Postfix does: mail must only go to better MX hosts than ourselves, or it loops.
//
// DNS answers are classified here into what delivery does with them, in Postfix's
// words so admins recognise the log:
//   NXDOMAIN, a name with no address     permanent, 5.4.4 (the message bounces)
//   SERVFAIL, REFUSED, timeout            temporary, 4.4.3 (deferred, retried)
//   null MX                               permanent, 5.1.10 (RFC 7505 section 4.3)
//
// The planning steps are pure functions of DNS answers (unit-tested); Router asks
// the resolver and feeds them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/dns.h"
#include "common/loop.h"
#include "common/result.h"

namespace tern::mta {

struct NextHop {
  std::string host;      // domain or host name (lower case, no trailing dot), or an IP address
  uint16_t port = 25;
  bool no_mx = false;    // "[host]": look up addresses only
  bool numeric = false;  // `host` is an IP address: no lookup at all
  // The destination name: what concurrency limits, connection reuse and logs use.
  std::string key() const;
};

// relayhost syntax: "host", "host:port", "[host]", "[host]:port", "[192.0.2.7]:25",
// "[IPv6:2001:db8::1]:25". Errors are kConfig and say what is wrong.
common::Result<NextHop> parse_nexthop(std::string_view spec);

// The next hop for a recipient domain: the domain itself (MX lookup), or for a
// domain literal ("[192.0.2.7]", "[IPv6:...]") that address.
common::Result<NextHop> nexthop_for_domain(std::string_view domain);

// One address to connect to.
struct Target {
  std::string host;     // the MX host name (for logs, TLS SNI and verification)
  std::string address;  // numeric
  uint16_t port = 25;
};

struct Route {
  // What the lookups came to.
  enum class Kind {
    kOk,    // targets to try
    kTemp,  // try again later (DNS trouble)
    kPerm,  // mail for this destination cannot be delivered
  };
  Kind kind = Kind::kTemp;
  std::vector<Target> targets;
  std::string dsn;   // failures: the RFC 3463 code
  std::string text;  // failures: the reason, for the log and the bounce
};

// The MX step: which hosts to look up (or the failure that ends the route).
struct MxPlan {
  Route::Kind kind = Route::Kind::kOk;
  std::vector<common::dns::Mx> hosts;  // in the order to try them
  bool implicit = false;               // no MX records: the domain is its own mail host
  std::string dsn, text;               // when kind is not kOk
};

// Applies RFC 5321 5.1 and RFC 7505 to an MX answer for `domain`. `rng` shuffles
// hosts of equal preference.
MxPlan plan_mx(const std::string& domain, const common::dns::Answer& mx, const std::string& myhostname,
               std::mt19937& rng);

// Puts the address answers (one per plan host, same order) together into targets,
// at most `address_limit` of them (0: no limit). A host that does not resolve is
// skipped; when none resolves, the route fails, temporarily if any lookup did.
Route assemble_route(const MxPlan& plan, const std::vector<common::dns::Answer>& addresses, uint16_t port,
                     size_t address_limit);

class Router {
 public:
  struct Options {
    std::string myhostname;
    bool ipv4 = true;
    bool ipv6 = true;
    size_t address_limit = 5;  // smtp_mx_address_limit
  };
  // Without a resolver (it failed to start) every lookup fails temporarily.
  Router(common::ev::Loop& loop, common::dns::Resolver* resolver, Options options);

  // `done` runs on the loop thread, never inside route().
  void route(const NextHop& hop, std::function<void(Route)> done);

 private:
  void lookup_hosts(MxPlan plan, uint16_t port, std::function<void(Route)> done);

  common::ev::Loop& loop_;
  common::dns::Resolver* resolver_;
  Options opt_;
  std::mt19937 rng_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // callbacks check it
};

}  // namespace tern::mta
