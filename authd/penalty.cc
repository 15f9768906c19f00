#include "authd/penalty.h"

namespace tern::authd {

uint64_t PenaltyTable::delay_for_failures(unsigned n) const {
  if (n == 0) return 0;
  // Dovecot AUTH_PENALTY_INIT_SECS = 2, doubling per failure.
  uint64_t d = 2000;
  for (unsigned i = 1; i < n && d < policy_.max_delay_ms; ++i) d *= 2;
  return d < policy_.max_delay_ms ? d : policy_.max_delay_ms;
}

PenaltyTable::Entry& PenaltyTable::entry(const std::string& ip, uint64_t now_ms) {
  auto it = entries_.find(ip);
  if (it == entries_.end()) {
    if (entries_.size() >= policy_.max_ips) forget_expired(now_ms);
    it = entries_.emplace(ip, Entry{}).first;
  }
  Entry& e = it->second;
  if (e.failures && now_ms >= e.last_failure_ms + policy_.expire_ms) e.failures = 0;
  return e;
}

void PenaltyTable::forget_expired(uint64_t now_ms) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    bool idle = e.in_flight == 0 && e.queue.empty();
    if (idle && (e.failures == 0 || now_ms >= e.last_failure_ms + policy_.expire_ms)) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  // Still full: drop the idle entries with the fewest failures first would need a
  // sort; dropping all idle ones keeps the bound with O(n) work once per overflow.
  if (entries_.size() >= policy_.max_ips) {
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.in_flight == 0 && it->second.queue.empty()) it = entries_.erase(it);
      else ++it;
    }
  }
}

void PenaltyTable::maybe_erase(const std::string& ip) {
  auto it = entries_.find(ip);
  if (it == entries_.end()) return;
  const Entry& e = it->second;
  if (e.failures == 0 && e.in_flight == 0 && e.queue.empty()) entries_.erase(it);
}

unsigned PenaltyTable::failures(const std::string& ip, uint64_t now_ms) {
  auto it = entries_.find(ip);
  if (it == entries_.end()) return 0;
  Entry& e = it->second;
  if (e.failures && now_ms >= e.last_failure_ms + policy_.expire_ms) e.failures = 0;
  return e.failures;
}

uint64_t PenaltyTable::delay_ms(const std::string& ip, uint64_t now_ms) {
  return delay_for_failures(failures(ip, now_ms));
}

void PenaltyTable::record_failure(const std::string& ip, uint64_t now_ms) {
  Entry& e = entry(ip, now_ms);
  if (e.failures < 1000) ++e.failures;
  e.last_failure_ms = now_ms;
}

void PenaltyTable::record_success(const std::string& ip) {
  auto it = entries_.find(ip);
  if (it == entries_.end()) return;
  it->second.failures = 0;
  maybe_erase(ip);
}

bool PenaltyTable::admit(const std::string& ip, uint64_t now_ms, std::function<void()> start) {
  Entry& e = entry(ip, now_ms);
  if (e.failures > 0 && e.in_flight >= policy_.concurrency) {
    e.queue.push_back(std::move(start));
    return false;
  }
  ++e.in_flight;
  start();
  return true;
}

void PenaltyTable::release(const std::string& ip, uint64_t now_ms) {
  auto it = entries_.find(ip);
  if (it == entries_.end()) return;
  if (it->second.in_flight) --it->second.in_flight;
  if (it->second.failures && now_ms >= it->second.last_failure_ms + policy_.expire_ms) it->second.failures = 0;
  // Start queued checks while the IP is allowed more. `start` only schedules work
  // (a timer, the threadpool), so it never re-enters release() inline.
  for (;;) {
    it = entries_.find(ip);
    if (it == entries_.end()) return;
    Entry& e = it->second;
    if (e.queue.empty() || (e.failures > 0 && e.in_flight >= policy_.concurrency)) break;
    std::function<void()> next = std::move(e.queue.front());
    e.queue.pop_front();
    ++e.in_flight;
    next();
  }
  maybe_erase(ip);
}

size_t PenaltyTable::waiting(const std::string& ip) const {
  auto it = entries_.find(ip);
  return it == entries_.end() ? 0 : it->second.queue.size();
}

}  // namespace tern::authd
