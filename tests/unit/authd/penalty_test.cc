#include <catch2/catch.hpp>

#include "authd/penalty.h"

using namespace tern::authd;

TEST_CASE("penalty doubles from 2 s up to the maximum") {
  PenaltyTable t(PenaltyPolicy{15000, 3600000, 4, 1000});
  CHECK(t.delay_for_failures(0) == 0);
  CHECK(t.delay_for_failures(1) == 2000);
  CHECK(t.delay_for_failures(2) == 4000);
  CHECK(t.delay_for_failures(3) == 8000);
  CHECK(t.delay_for_failures(4) == 15000);
  CHECK(t.delay_for_failures(100) == 15000);
  PenaltyTable small(PenaltyPolicy{1000, 3600000, 4, 1000});
  CHECK(small.delay_for_failures(1) == 1000);
}

TEST_CASE("failures are per IP, cleared by success, forgotten after expiry") {
  PenaltyTable t(PenaltyPolicy{15000, 60000, 4, 1000});
  t.record_failure("192.0.2.1", 1000);
  t.record_failure("192.0.2.1", 2000);
  CHECK(t.failures("192.0.2.1", 2000) == 2);
  CHECK(t.delay_ms("192.0.2.1", 2000) == 4000);
  CHECK(t.delay_ms("192.0.2.2", 2000) == 0);
  CHECK(t.failures("192.0.2.1", 2000 + 60000) == 0);
  t.record_failure("192.0.2.1", 100000);
  t.record_success("192.0.2.1");
  CHECK(t.failures("192.0.2.1", 100001) == 0);
  CHECK(t.size() == 0);
}

TEST_CASE("an IP with failures gets limited concurrency; a clean IP does not") {
  PenaltyTable t(PenaltyPolicy{15000, 3600000, 2, 1000});
  int started = 0;
  for (int i = 0; i < 5; ++i) t.admit("clean", 0, [&] { ++started; });
  CHECK(started == 5);
  t.record_failure("bad", 0);
  int bad = 0;
  for (int i = 0; i < 5; ++i) t.admit("bad", 0, [&] { ++bad; });
  CHECK(bad == 2);
  CHECK(t.waiting("bad") == 3);
  t.release("bad", 1);
  CHECK(bad == 3);
  // A success clears the penalty: everything waiting may go.
  t.record_success("bad");
  t.release("bad", 2);
  CHECK(bad == 5);
  CHECK(t.waiting("bad") == 0);
}

TEST_CASE("the table stays bounded") {
  PenaltyTable t(PenaltyPolicy{15000, 10, 2, 100});
  for (int i = 0; i < 1000; ++i) t.record_failure("ip" + std::to_string(i), static_cast<uint64_t>(i) * 100);
  CHECK(t.size() <= 100);
}
