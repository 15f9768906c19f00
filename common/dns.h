// Asynchronous DNS on the event loop (c-ares driven by libuv polls and a timer).
//
// Answers are classified the way mail routing needs them (RFC 5321 §5.1): a name that
// does not exist (NXDOMAIN) is permanent, a name with no records of that type (NODATA)
// falls back to its address for MX, and SERVFAIL, timeouts and refusals are temporary.
// The servers are configurable ("127.0.0.1:5353"), so tests point the resolver at a
// DNS server of their own; the default is /etc/resolv.conf.
//
// Not a parser of our own: c-ares parses the wire format.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/loop.h"
#include "common/result.h"

namespace tern::common::dns {

// How a lookup ended.
enum class Status {
  kOk,        // records found
  kNxDomain,  // the name does not exist (permanent)
  kNoData,    // the name exists but has no records of this type
  kTempFail,  // SERVFAIL, REFUSED, timeout, network trouble: try again later
  kBadName,   // the name cannot be looked up (empty, too long, bad syntax)
};
const char* status_name(Status s);

struct Mx {
  uint16_t preference;
  std::string host;  // "" for the null MX "." (RFC 7505)
};

struct Answer {
  Status status = Status::kTempFail;
  std::string error;                   // for logs, when not kOk
  std::vector<std::string> addresses;  // A/AAAA results, numeric
  std::vector<Mx> mx;                  // MX results, sorted by preference
  std::vector<std::string> texts;      // TXT results, each record's strings joined
  std::vector<std::string> names;      // PTR results
  bool null_mx() const { return mx.size() == 1 && mx[0].host.empty(); }
};

class Resolver {
 public:
  struct Options {
    std::string servers;       // "127.0.0.1:5353,[::1]:53"; empty: /etc/resolv.conf
    uint64_t timeout_ms = 5000;
    int tries = 2;
  };
  static Result<std::unique_ptr<Resolver>> create(ev::Loop& loop, Options options);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  using Callback = std::function<void(const Answer&)>;
  // Callbacks run on the loop thread, never inside the call that starts the lookup.
  void mx(const std::string& domain, Callback cb);
  // A and AAAA together (IPv4 first); kOk if either has records.
  void addresses(const std::string& host, bool ipv4, bool ipv6, Callback cb);
  void txt(const std::string& name, Callback cb);
  void ptr(const std::string& ip, Callback cb);

  // Cancels every lookup in flight; their callbacks run with kTempFail.
  void cancel_all();

 private:
  struct Impl;
  explicit Resolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether a string is a syntactically valid domain name for lookups (LDH labels or
// A-labels, 1..63 per label, 253 total, optional trailing dot).
bool valid_hostname(const std::string& name);

}  // namespace tern::common::dns
