#include "mta/dns_routing.h"

#include <arpa/inet.h>

#include <algorithm>

#include "common/text.h"

namespace tern::mta {

using common::Result;
namespace dns = common::dns;

namespace {

bool is_ipv4(const std::string& s) {
  in_addr a;
  return ::inet_pton(AF_INET, s.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr a;
  return ::inet_pton(AF_INET6, s.c_str(), &a) == 1;
}

std::string normal_name(std::string_view s) {
  std::string h = common::to_lower(s);
  if (!h.empty() && h.back() == '.') h.pop_back();
  return h;
}

common::Error config_error(std::string_view spec, const std::string& why) {
  return common::make_error(common::ErrorKind::kConfig,
                            "next hop '" + common::log_escape(spec, 100) + "': " + why);
}

// "Host or domain name not found. Name service error for name=x type=MX: Host not
// found, try again" is how Postfix words every DNS failure; admins grep for it.
std::string dns_error_text(const std::string& name, const char* type, const dns::Answer& a) {
  const char* what = a.status == dns::Status::kNoData ? "Host found but no data record of requested type"
                     : a.status == dns::Status::kNxDomain ? "Host not found"
                     : a.status == dns::Status::kBadName  ? "Malformed or unexpected name server reply"
                                                          : "Host not found, try again";
  return "Host or domain name not found. Name service error for name=" + name + " type=" + type + ": " + what;
}

}  // namespace

std::string NextHop::key() const {
  if (!no_mx && !numeric) return port == 25 ? host : host + ":" + std::to_string(port);
  std::string h = host.find(':') != std::string::npos ? "[IPv6:" + host + "]" : "[" + host + "]";
  return h + ":" + std::to_string(port);
}

Result<NextHop> parse_nexthop(std::string_view spec_in) {
  std::string_view spec = common::trim(spec_in);
  NextHop hop;
  std::string host;
  std::string_view rest;
  if (spec.empty()) return config_error(spec_in, "empty");
  if (spec.front() == '[') {
    size_t close = spec.find(']');
    if (close == std::string_view::npos) return config_error(spec_in, "'[' without ']'");
    host = std::string(spec.substr(1, close - 1));
    rest = spec.substr(close + 1);
    hop.no_mx = true;
    if (common::istarts_with(host, "ipv6:")) {
      host = host.substr(5);
      if (!is_ipv6(host)) return config_error(spec_in, "not an IPv6 address");
      hop.numeric = true;
    } else if (is_ipv4(host)) {
      hop.numeric = true;
    }
  } else {
    size_t colon = spec.rfind(':');
    host = std::string(spec.substr(0, colon));
    if (colon != std::string_view::npos) rest = spec.substr(colon);
  }
  if (!rest.empty()) {
    if (rest.front() != ':') return config_error(spec_in, "expected ':port' after the host");
    std::optional<uint64_t> p = common::parse_u64(rest.substr(1));
    if (!p || *p == 0 || *p > 65535) return config_error(spec_in, "bad port");
    hop.port = static_cast<uint16_t>(*p);
  }
  if (!hop.numeric) {
    host = normal_name(host);
    if (!dns::valid_hostname(host)) return config_error(spec_in, "not a valid host name");
  }
  hop.host = host;
  return hop;
}

Result<NextHop> nexthop_for_domain(std::string_view domain) {
  if (!domain.empty() && domain.front() == '[') {
    Result<NextHop> h = parse_nexthop(domain);
    if (!h || !h->numeric || h->port != 25) {
      return common::make_error(common::ErrorKind::kPerm, "unusable address literal " + common::log_escape(domain, 100));
    }
    return h;
  }
  NextHop hop;
  hop.host = normal_name(domain);
  if (!dns::valid_hostname(hop.host)) {
    // A U-label (SMTPUTF8) domain would need IDNA to become an A-label; Tern has no
    // IDNA library, so such a domain is reported rather than looked up wrongly.
    return common::make_error(common::ErrorKind::kPerm, "bad domain name syntax: " + common::log_escape(domain, 100));
  }
  return hop;
}

MxPlan plan_mx(const std::string& domain, const dns::Answer& mx, const std::string& myhostname, std::mt19937& rng) {
  MxPlan plan;
  switch (mx.status) {
    case dns::Status::kOk: break;
    case dns::Status::kNoData:
      // RFC 5321 5.1: no MX records: the domain itself is the mail exchanger.
      plan.implicit = true;
      plan.hosts.push_back({0, domain});
      return plan;
    case dns::Status::kNxDomain:
    case dns::Status::kBadName:
      plan.kind = Route::Kind::kPerm;
      plan.dsn = "5.4.4";
      plan.text = dns_error_text(domain, "MX", mx);
      return plan;
    case dns::Status::kTempFail:
      plan.kind = Route::Kind::kTemp;
      plan.dsn = "4.4.3";
      plan.text = dns_error_text(domain, "MX", mx);
      return plan;
  }
  // RFC 7505 3: a single MX "." says the domain takes no mail. A "." among other
  // records is meaningless and is skipped.
  if (mx.null_mx()) {
    plan.kind = Route::Kind::kPerm;
    plan.dsn = "5.1.10";
    plan.text = "Domain " + domain + " does not accept mail (nullMX)";
    return plan;
  }
  std::vector<dns::Mx> hosts;
  for (const dns::Mx& m : mx.mx) {
    if (m.host.empty()) continue;
    hosts.push_back({m.preference, normal_name(m.host)});
  }
  std::stable_sort(hosts.begin(), hosts.end(),
                   [](const dns::Mx& a, const dns::Mx& b) { return a.preference < b.preference; });
  // Equal preferences in random order (RFC 5321 5.1), so load spreads.
  for (size_t i = 0; i < hosts.size();) {
    size_t j = i;
    while (j < hosts.size() && hosts[j].preference == hosts[i].preference) ++j;
    std::shuffle(hosts.begin() + static_cast<std::ptrdiff_t>(i), hosts.begin() + static_cast<std::ptrdiff_t>(j), rng);
    i = j;
  }
  // Ourselves in the list: only better (lower preference) hosts are candidates.
  const std::string me = normal_name(myhostname);
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (!me.empty() && hosts[i].host == me) {
      const uint16_t ours = hosts[i].preference;
      hosts.erase(std::remove_if(hosts.begin(), hosts.end(), [ours](const dns::Mx& m) { return m.preference >= ours; }),
                  hosts.end());
      if (hosts.empty()) {
        plan.kind = Route::Kind::kPerm;
        plan.dsn = "5.4.6";
        plan.text = "mail for " + domain + " loops back to myself";
        return plan;
      }
      break;
    }
  }
  if (hosts.empty()) {
    plan.kind = Route::Kind::kPerm;
    plan.dsn = "5.4.4";
    plan.text = "Host or domain name not found. Name service error for name=" + domain + " type=MX: no usable MX host";
    return plan;
  }
  plan.hosts = std::move(hosts);
  return plan;
}

Route assemble_route(const MxPlan& plan, const std::vector<dns::Answer>& addresses, uint16_t port,
                     size_t address_limit) {
  Route r;
  if (plan.kind != Route::Kind::kOk) {
    r.kind = plan.kind;
    r.dsn = plan.dsn;
    r.text = plan.text;
    return r;
  }
  bool temp = false;
  std::string last_error;
  const char* type = "A";
  for (size_t i = 0; i < plan.hosts.size() && i < addresses.size(); ++i) {
    const dns::Answer& a = addresses[i];
    if (a.status != dns::Status::kOk) {
      temp = temp || a.status == dns::Status::kTempFail;
      last_error = dns_error_text(plan.hosts[i].host, type, a);
      continue;
    }
    for (const std::string& addr : a.addresses) {
      if (address_limit > 0 && r.targets.size() >= address_limit) break;
      // The same address twice (two MX names for one host) is tried once.
      bool seen = std::any_of(r.targets.begin(), r.targets.end(), [&](const Target& t) { return t.address == addr; });
      if (!seen) r.targets.push_back({plan.hosts[i].host, addr, port});
    }
  }
  if (!r.targets.empty()) {
    r.kind = Route::Kind::kOk;
    return r;
  }
  r.kind = temp ? Route::Kind::kTemp : Route::Kind::kPerm;
  r.dsn = temp ? "4.4.3" : "5.4.4";
  r.text = last_error.empty() ? "no address for any mail host" : last_error;
  return r;
}

Router::Router(common::ev::Loop& loop, dns::Resolver* resolver, Options options)
    : loop_(loop), resolver_(resolver), opt_(std::move(options)), rng_(std::random_device{}()) {}

void Router::route(const NextHop& hop, std::function<void(Route)> done) {
  if (hop.numeric) {
    Route r;
    r.kind = Route::Kind::kOk;
    r.targets.push_back({hop.host, hop.host, hop.port});
    loop_.post([done, r] { done(r); });
    return;
  }
  if (!resolver_) {
    Route r;
    r.kind = Route::Kind::kTemp;
    r.dsn = "4.4.3";
    r.text = "the DNS resolver is not available";
    loop_.post([done, r] { done(r); });
    return;
  }
  if (hop.no_mx) {
    MxPlan plan;
    plan.hosts.push_back({0, hop.host});
    lookup_hosts(std::move(plan), hop.port, std::move(done));
    return;
  }
  const std::string domain = hop.host;
  const uint16_t port = hop.port;
  std::weak_ptr<bool> alive = alive_;
  resolver_->mx(domain, [this, alive, domain, port, done](const dns::Answer& a) {
    if (alive.expired()) return;
    MxPlan plan = plan_mx(domain, a, opt_.myhostname, rng_);
    if (plan.kind != Route::Kind::kOk) {
      done(assemble_route(plan, {}, port, opt_.address_limit));
      return;
    }
    lookup_hosts(std::move(plan), port, done);
  });
}

void Router::lookup_hosts(MxPlan plan, uint16_t port, std::function<void(Route)> done) {
  // Each host gives at least one address, so more hosts than the address limit
  // are never needed; the fixed cap bounds the lookups a hostile MX list can cause.
  constexpr size_t kMaxHosts = 20;
  size_t n = std::min(plan.hosts.size(), opt_.address_limit > 0 ? std::min(opt_.address_limit, kMaxHosts) : kMaxHosts);
  plan.hosts.resize(n);
  struct State {
    MxPlan plan;
    std::vector<dns::Answer> answers;
    size_t left = 0;
  };
  auto st = std::make_shared<State>();
  st->plan = std::move(plan);
  st->answers.resize(n);
  st->left = n;
  const size_t limit = opt_.address_limit;
  for (size_t i = 0; i < n; ++i) {
    resolver_->addresses(st->plan.hosts[i].host, opt_.ipv4, opt_.ipv6, [st, i, port, limit, done](const dns::Answer& a) {
      st->answers[i] = a;
      if (--st->left == 0) done(assemble_route(st->plan, st->answers, port, limit));
    });
  }
}

}  // namespace tern::mta
