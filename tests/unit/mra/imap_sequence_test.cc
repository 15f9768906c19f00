#include "mra/imap_sequence.h"

#include <catch2/catch.hpp>

using namespace tern::mra::imap;

TEST_CASE("SequenceSet::parse accepts RFC 3501 sequence sets", "[imap][sequence]") {
  struct Case {
    const char* text;
    const char* canonical;
  };
  const Case good[] = {
      {"1", "1"},       {"1:5", "1:5"},       {"5:1", "5:1"},         {"*", "*"},
      {"1:*", "1:*"},   {"*:4", "*:4"},       {"1,3,5:7", "1,3,5:7"}, {"4294967294", "4294967294"},
      {"$", "$"},       {"007", "7"},
  };
  for (const Case& c : good) {
    INFO(c.text);
    std::optional<SequenceSet> s = SequenceSet::parse(c.text);
    REQUIRE(s);
    CHECK(s->to_string() == c.canonical);
  }
  const char* bad[] = {"",   "0",     "1:0",        "4294967295", "4294967296", "99999999999", ",1", "1,",
                       "1,,2", "1::2", "1:2:3",     "a",          "1 2",        "-1",          "*:", ":5",
                       "$,1", "1,$",  "**"};
  for (const char* b : bad) {
    INFO(b);
    CHECK_FALSE(SequenceSet::parse(b));
  }
}

TEST_CASE("SequenceSet::parse bounds the number of ranges", "[imap][sequence]") {
  std::string many;
  for (size_t i = 1; i <= SequenceSet::kMaxRanges + 1; ++i) {
    if (i > 1) many += ',';
    many += std::to_string(i);
  }
  CHECK_FALSE(SequenceSet::parse(many));
}

TEST_CASE("SequenceSet::contains resolves * against the maximum", "[imap][sequence]") {
  SequenceSet s = *SequenceSet::parse("2:4,*");
  CHECK_FALSE(s.contains(1, 10));
  CHECK(s.contains(3, 10));
  CHECK(s.contains(10, 10));
  CHECK_FALSE(s.contains(9, 10));
  SequenceSet rev = *SequenceSet::parse("*:8");  // 8..max
  CHECK(rev.contains(9, 10));
  CHECK(rev.contains(8, 10));
  CHECK_FALSE(rev.contains(7, 10));
}

TEST_CASE("NumberSet merges, removes and renders", "[imap][sequence]") {
  NumberSet n;
  n.add(5);
  n.add(3);
  n.add(4);
  n.add_range(10, 8);
  n.add(20);
  CHECK(n.to_string() == "3:5,8:10,20");
  CHECK(n.count() == 7);
  CHECK(n.contains(9));
  CHECK_FALSE(n.contains(7));
  n.add(6);
  n.add(7);
  CHECK(n.to_string() == "3:10,20");
  n.remove(5);
  CHECK(n.to_string() == "3:4,6:10,20");
  n.remove(3);
  n.remove(10);
  n.remove(20);
  CHECK(n.to_string() == "4,6:9");
  CHECK(*n.min() == 4);
  CHECK(*n.max() == 9);
  n.add_range(0xFFFFFFF0u, 0xFFFFFFFEu);  // adjacency arithmetic near the top does not overflow
  n.add(0xFFFFFFFFu);
  CHECK(n.max() == 0xFFFFFFFFu);
  CHECK(NumberSet().to_string().empty());
}

TEST_CASE("NumberSet::resolve maps a client's set onto existing UIDs", "[imap][sequence]") {
  std::vector<uint32_t> uids = {2, 3, 4, 10, 11, 30};
  CHECK(NumberSet::resolve(*SequenceSet::parse("1:*"), uids).to_string() == "2:4,10:11,30");
  CHECK(NumberSet::resolve(*SequenceSet::parse("*"), uids).to_string() == "30");
  CHECK(NumberSet::resolve(*SequenceSet::parse("5:9"), uids).to_string() == "");
  CHECK(NumberSet::resolve(*SequenceSet::parse("31:*"), uids).to_string() == "30");  // RFC 3501 6.4.8: "*:31" is 30
  CHECK(NumberSet::resolve(*SequenceSet::parse("11,3,3,1:3"), uids).to_string() == "2:3,11");
  CHECK(NumberSet::resolve(*SequenceSet::parse("1:*"), {}).empty());
  // Overlapping ranges cost one pass.
  std::string dup;
  for (int i = 0; i < 10000; ++i) dup += (i ? ",1:*" : "1:*");
  std::vector<uint32_t> big;
  for (uint32_t i = 1; i <= 100000; ++i) big.push_back(i * 2);
  NumberSet r = NumberSet::resolve(*SequenceSet::parse(dup), big);
  CHECK(r.count() == 100000);
}
