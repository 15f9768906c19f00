// The XTERN-DELIVERY-ID memory of tern-mda: pairs survive a reopen, expire.
#include "mda/delivery_ids.h"

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

using namespace tern;

TEST_CASE("delivery ids are remembered across a reopen and expire", "[delivery_ids]") {
  char tmpl[] = "/tmp/tern-ids-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/ids.lmdb";
  {
    auto d = mda::DeliveryIds::open(path, 100);
    REQUIRE(d.ok());
    CHECK_FALSE((*d)->seen("Q1", "a@example.test"));
    REQUIRE((*d)->record("Q1", {"a@example.test", "B@Example.Test"}, 1000).ok());
    CHECK((*d)->seen("Q1", "a@example.test"));
    CHECK((*d)->seen("Q1", "b@example.test"));  // recipients compare without case
    CHECK_FALSE((*d)->seen("Q2", "a@example.test"));
    CHECK_FALSE((*d)->seen("Q", "1a@example.test"));  // the separator keeps keys apart
  }
  auto d = mda::DeliveryIds::open(path, 100);
  REQUIRE(d.ok());
  CHECK((*d)->seen("Q1", "a@example.test"));
  REQUIRE((*d)->record("Q3", {"c@example.test"}, 1090).ok());
  (*d)->prune(1150);
  CHECK_FALSE((*d)->seen("Q1", "a@example.test"));
  CHECK((*d)->seen("Q3", "c@example.test"));
  ::unlink(path.c_str());
  ::unlink((path + "-lock").c_str());
  ::rmdir(tmpl);
}
