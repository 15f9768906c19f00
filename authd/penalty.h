// Per-remote-IP penalties for failed authentications (Dovecot's auth_penalty / anvil).
//
// Every failure from an IP raises its count; a new request from an IP with failures
// waits before it is looked at: 2 s after one failure, doubling per failure, at most
// `max_delay_ms` (Dovecot: 2 s, 4 s, 8 s, 15 s). A success from the IP clears it, and
// a count not raised for `expire_ms` is forgotten. While an IP has failures, at most
// `concurrency` of its requests are being checked at once and the rest wait in line,
// so an attacker pipelining guesses cannot keep every crypt thread busy; an IP with
// no failures is never held back.
//
// The IP is the one a trusted login process reports (rip=); requests without one share
// the empty key, and an untrusted peer's are keyed by its uid (client_trust.h). Pure
// bookkeeping: time is passed in, nothing here sleeps.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>

namespace tern::authd {

struct PenaltyPolicy {
  uint64_t max_delay_ms = 15000;
  uint64_t expire_ms = 3600000;
  unsigned concurrency = 4;
  size_t max_ips = 100000;  // bounds the table under a distributed attack
};

class PenaltyTable {
 public:
  explicit PenaltyTable(PenaltyPolicy policy) : policy_(policy) {}

  // Failures counted for ip now (0 once expired).
  unsigned failures(const std::string& ip, uint64_t now_ms);
  // How long a new request from ip waits before its credentials are checked.
  uint64_t delay_ms(const std::string& ip, uint64_t now_ms);
  void record_failure(const std::string& ip, uint64_t now_ms);
  void record_success(const std::string& ip);

  // Admission of a credential check. Runs `start` now (returns true) or queues it
  // (false) until a check from the same IP finishes and calls release().
  bool admit(const std::string& ip, uint64_t now_ms, std::function<void()> start);
  void release(const std::string& ip, uint64_t now_ms);
  size_t waiting(const std::string& ip) const;
  size_t size() const { return entries_.size(); }

  // The delay for n failures under this policy.
  uint64_t delay_for_failures(unsigned n) const;

 private:
  struct Entry {
    unsigned failures = 0;
    uint64_t last_failure_ms = 0;
    unsigned in_flight = 0;
    std::deque<std::function<void()>> queue;
  };
  Entry& entry(const std::string& ip, uint64_t now_ms);
  void forget_expired(uint64_t now_ms);
  void maybe_erase(const std::string& ip);

  PenaltyPolicy policy_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace tern::authd
