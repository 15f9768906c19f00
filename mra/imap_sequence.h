// IMAP sequence sets (RFC 3501 9 "sequence-set", RFC 9051 with SEARCHRES "$") and the
// set arithmetic the session does on UIDs and message sequence numbers.
//
// A SequenceSet is what the client wrote: ranges whose ends may be "*" (the largest
// number in use), kept in the client's order, before it is resolved against a
// mailbox. A NumberSet is a resolved, normalised set (sorted disjoint ranges) that
// the session computes with and renders back ("1:3,7,9:12"), as UIDPLUS's COPYUID
// and ESEARCH need. Parsing is strict (no 0, no empty elements, no trailing commas,
// numbers fit in 32 bits) and bounded (kMaxRanges), because a client controls it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tern::mra::imap {

// "*" in a sequence set: the largest number in use (RFC 3501 9).
constexpr uint32_t kStar = 0xFFFFFFFFu;

struct SeqRange {
  uint32_t first = 0;  // may be kStar
  uint32_t last = 0;   // may be kStar; first > last is allowed ("5:2" means 2:5)
};

class SequenceSet {
 public:
  // Parses "1,3:5,7:*" or "$". nullopt when malformed. kMaxRanges bounds a client's
  // set ("1,2,3,...") to what a 64 KiB command line can carry anyway.
  static std::optional<SequenceSet> parse(std::string_view s);
  static constexpr size_t kMaxRanges = 100000;

  static SequenceSet single(uint32_t n) { return SequenceSet({SeqRange{n, n}}); }
  static SequenceSet range(uint32_t a, uint32_t b) { return SequenceSet({SeqRange{a, b}}); }
  static SequenceSet saved() {  // "$": the result of the last SEARCH ... SAVE (RFC 5182)
    SequenceSet s;
    s.saved_ = true;
    return s;
  }

  SequenceSet() = default;
  explicit SequenceSet(std::vector<SeqRange> r) : ranges_(std::move(r)) {}

  const std::vector<SeqRange>& ranges() const { return ranges_; }
  bool is_saved() const { return saved_; }
  bool empty() const { return ranges_.empty() && !saved_; }

  // True when n is in the set, "*" standing for `max` (for 0 messages "*" matches
  // nothing, except that a set of only "*" ... callers check emptiness first).
  bool contains(uint32_t n, uint32_t max) const;

  // As the client would write it (for logs and tests).
  std::string to_string() const;

 private:
  std::vector<SeqRange> ranges_;
  bool saved_ = false;
};

// A normalised set of 32-bit numbers as sorted, disjoint, non-adjacent ranges.
class NumberSet {
 public:
  NumberSet() = default;

  void add(uint32_t n) { add_range(n, n); }
  void add_range(uint32_t a, uint32_t b);  // inclusive; order of a, b does not matter
  void add(const NumberSet& other);
  void remove(uint32_t n);
  bool contains(uint32_t n) const;
  bool empty() const { return r_.empty(); }
  uint64_t count() const;
  std::optional<uint32_t> min() const;
  std::optional<uint32_t> max() const;
  // Every member, ascending. Callers bound the set first (it may hold 2^32 numbers).
  std::vector<uint32_t> to_vector() const;
  const std::vector<std::pair<uint32_t, uint32_t>>& ranges() const { return r_; }

  // "1:3,7,9:12" (RFC 3501 sequence-set; RFC 4315 uid-set); "" when empty.
  std::string to_string() const;

  // Resolves a client's set against the numbers that exist: `existing` sorted
  // ascending; "*" is its last element. Only existing numbers are kept.
  static NumberSet resolve(const SequenceSet& set, const std::vector<uint32_t>& existing);
  // A set from any ranges (unsorted, overlapping, reversed), in O(k log k).
  static NumberSet from_ranges(std::vector<std::pair<uint32_t, uint32_t>> ranges);

  bool operator==(const NumberSet& o) const { return r_ == o.r_; }

 private:
  std::vector<std::pair<uint32_t, uint32_t>> r_;
};

}  // namespace tern::mra::imap
