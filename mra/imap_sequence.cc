#include "mra/imap_sequence.h"

#include <algorithm>

namespace tern::mra::imap {

namespace {

// nz-number (RFC 3501 9): a non-zero 32-bit number without leading zeros is the
// grammar; leading zeros are accepted ("007") as every server does, overflow is not.
std::optional<uint32_t> parse_seq_number(std::string_view s) {
  if (s == "*") return kStar;
  if (s.empty() || s.size() > 10) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v >= kStar) return std::nullopt;  // 4294967295 is not a valid UID (RFC 3501 2.3.1.1)
  return static_cast<uint32_t>(v);
}

}  // namespace

std::optional<SequenceSet> SequenceSet::parse(std::string_view s) {
  if (s == "$") return saved();
  if (s.empty()) return std::nullopt;
  std::vector<SeqRange> ranges;
  size_t i = 0;
  while (i <= s.size()) {
    size_t comma = s.find(',', i);
    if (comma == std::string_view::npos) comma = s.size();
    std::string_view item = s.substr(i, comma - i);
    if (item.empty()) return std::nullopt;
    size_t colon = item.find(':');
    std::optional<uint32_t> a, b;
    if (colon == std::string_view::npos) {
      a = b = parse_seq_number(item);
    } else {
      a = parse_seq_number(item.substr(0, colon));
      b = parse_seq_number(item.substr(colon + 1));
    }
    if (!a || !b) return std::nullopt;
    if (ranges.size() >= kMaxRanges) return std::nullopt;
    ranges.push_back(SeqRange{*a, *b});
    if (comma == s.size()) break;
    i = comma + 1;
  }
  return SequenceSet(std::move(ranges));
}

bool SequenceSet::contains(uint32_t n, uint32_t max) const {
  for (const SeqRange& r : ranges_) {
    uint32_t a = r.first == kStar ? max : r.first;
    uint32_t b = r.last == kStar ? max : r.last;
    if (a > b) std::swap(a, b);
    if (n >= a && n <= b) return true;
  }
  return false;
}

std::string SequenceSet::to_string() const {
  if (saved_) return "$";
  std::string out;
  auto num = [](uint32_t n) { return n == kStar ? std::string("*") : std::to_string(n); };
  for (const SeqRange& r : ranges_) {
    if (!out.empty()) out += ',';
    out += num(r.first);
    if (r.last != r.first) out += ":" + num(r.last);
  }
  return out;
}

void NumberSet::add_range(uint32_t a, uint32_t b) {
  if (a > b) std::swap(a, b);
  // Find the first range that could touch [a, b] (ends at or after a-1).
  auto it = std::lower_bound(r_.begin(), r_.end(), a, [](const std::pair<uint32_t, uint32_t>& r, uint32_t v) {
    return static_cast<uint64_t>(r.second) + 1 < v;
  });
  uint32_t lo = a, hi = b;
  auto first = it;
  while (it != r_.end() && static_cast<uint64_t>(it->first) <= static_cast<uint64_t>(hi) + 1) {
    lo = std::min(lo, it->first);
    hi = std::max(hi, it->second);
    ++it;
  }
  it = r_.erase(first, it);
  r_.insert(it, {lo, hi});
}

void NumberSet::add(const NumberSet& other) {
  for (auto& [a, b] : other.r_) add_range(a, b);
}

void NumberSet::remove(uint32_t n) {
  auto it = std::lower_bound(r_.begin(), r_.end(), n,
                             [](const std::pair<uint32_t, uint32_t>& r, uint32_t v) { return r.second < v; });
  if (it == r_.end() || it->first > n) return;
  auto [a, b] = *it;
  if (a == b) {
    r_.erase(it);
  } else if (n == a) {
    it->first = a + 1;
  } else if (n == b) {
    it->second = b - 1;
  } else {
    it->second = n - 1;
    r_.insert(it + 1, {n + 1, b});
  }
}

bool NumberSet::contains(uint32_t n) const {
  auto it = std::lower_bound(r_.begin(), r_.end(), n,
                             [](const std::pair<uint32_t, uint32_t>& r, uint32_t v) { return r.second < v; });
  return it != r_.end() && it->first <= n;
}

uint64_t NumberSet::count() const {
  uint64_t c = 0;
  for (auto& [a, b] : r_) c += static_cast<uint64_t>(b) - a + 1;
  return c;
}

std::optional<uint32_t> NumberSet::min() const {
  if (r_.empty()) return std::nullopt;
  return r_.front().first;
}

std::optional<uint32_t> NumberSet::max() const {
  if (r_.empty()) return std::nullopt;
  return r_.back().second;
}

std::vector<uint32_t> NumberSet::to_vector() const {
  std::vector<uint32_t> out;
  for (auto& [a, b] : r_) {
    for (uint64_t n = a; n <= b; ++n) out.push_back(static_cast<uint32_t>(n));
  }
  return out;
}

std::string NumberSet::to_string() const {
  std::string out;
  for (auto& [a, b] : r_) {
    if (!out.empty()) out += ',';
    out += std::to_string(a);
    if (b != a) out += ":" + std::to_string(b);
  }
  return out;
}

NumberSet NumberSet::from_ranges(std::vector<std::pair<uint32_t, uint32_t>> ranges) {
  for (auto& r : ranges) {
    if (r.first > r.second) std::swap(r.first, r.second);
  }
  std::sort(ranges.begin(), ranges.end());
  NumberSet out;
  for (auto& r : ranges) {
    if (!out.r_.empty() && static_cast<uint64_t>(out.r_.back().second) + 1 >= r.first) {
      out.r_.back().second = std::max(out.r_.back().second, r.second);
    } else {
      out.r_.push_back(r);
    }
  }
  return out;
}

NumberSet NumberSet::resolve(const SequenceSet& set, const std::vector<uint32_t>& existing) {
  NumberSet out;
  if (existing.empty()) return out;
  uint32_t max = existing.back();
  // Merge the client's ranges first (O(k log k)), so overlapping ranges such as
  // "1:*,1:*,..." cost nothing extra, then walk each part of `existing` once.
  std::vector<std::pair<uint32_t, uint32_t>> raw;
  raw.reserve(set.ranges().size());
  for (const SeqRange& r : set.ranges()) {
    raw.emplace_back(r.first == kStar ? max : r.first, r.last == kStar ? max : r.last);
  }
  NumberSet wanted = from_ranges(std::move(raw));
  std::vector<std::pair<uint32_t, uint32_t>> found;
  for (auto& [a, b] : wanted.r_) {
    auto lo = std::lower_bound(existing.begin(), existing.end(), a);
    auto hi = std::upper_bound(existing.begin(), existing.end(), b);
    for (auto it = lo; it < hi;) {
      auto run_end = it + 1;
      while (run_end != hi && *run_end == *(run_end - 1) + 1) ++run_end;
      found.emplace_back(*it, *(run_end - 1));
      it = run_end;
    }
  }
  return from_ranges(std::move(found));
}

}  // namespace tern::mra::imap
