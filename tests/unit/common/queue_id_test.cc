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

// tern-mda names keyed Maildir deliveries by the time in the queue id (issue 11).
TEST_CASE("queue ids give back their seconds", "[queue_id]") {
  using tern::common::make_queue_id;
  using tern::common::queue_id_seconds;
  CHECK(queue_id_seconds(make_queue_id(1765000000, 999999, 140607)) == 1765000000u);
  CHECK(queue_id_seconds(make_queue_id(0, 0, 0)) == 0u);
  CHECK(queue_id_seconds(tern::common::new_queue_id()).has_value());
  CHECK_FALSE(queue_id_seconds("short").has_value());
  CHECK_FALSE(queue_id_seconds("4jjcLR6m2S00/").has_value());
  CHECK_FALSE(queue_id_seconds(std::string(33, 'B')).has_value());
  CHECK_FALSE(queue_id_seconds(std::string("4jjcLR6m2S0\0" "0", 13)).has_value());
}
