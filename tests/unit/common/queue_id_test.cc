#include "common/queue_id.h"

#include <catch2/catch.hpp>
#include <set>

using tern::common::make_queue_id;

TEST_CASE("queue ids are time-ordered, vowel-free and unique") {
  std::string a = make_queue_id(1700000000, 5, 0);
  std::string b = make_queue_id(1700000000, 6, 0);
  std::string c = make_queue_id(1700000001, 0, 0);
  CHECK(a < b);
  CHECK(b < c);
  CHECK(a.size() == 13);
  for (char ch : a + b + c) CHECK(std::string("AEIOUaeiou").find(ch) == std::string::npos);
  std::set<std::string> seen;
  for (int i = 0; i < 10000; ++i) seen.insert(tern::common::new_queue_id());
  CHECK(seen.size() == 10000);
  CHECK(tern::common::valid_queue_id(a));
  CHECK_FALSE(tern::common::valid_queue_id("abc"));
  CHECK_FALSE(tern::common::valid_queue_id("../../etc/passwd"));
  CHECK_FALSE(tern::common::valid_queue_id("AEIOUAEIOU"));
}
