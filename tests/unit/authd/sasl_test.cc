// authd/sasl.h: the pure part of handing a request to Cyrus SASL.
#include <catch2/catch.hpp>

#include "authd/sasl.h"

using tern::authd::sasl_endpoint;

TEST_CASE("sasl_endpoint: only numeric addresses and ports reach Cyrus", "[sasl]") {
  CHECK(sasl_endpoint("192.0.2.7", "") == "192.0.2.7;0");
  CHECK(sasl_endpoint("192.0.2.7", "25") == "192.0.2.7;25");
  CHECK(sasl_endpoint("2001:db8::1", "587") == "2001:db8::1;587");
  CHECK(sasl_endpoint("::ffff:192.0.2.7", "65535") == "::ffff:192.0.2.7;65535");
  CHECK(sasl_endpoint("", "25") == "");
  // Found by tests/fuzz/auth_client_session (corpus/auth_client_session/bad_rip):
  // Cyrus refuses these, and its sasl_server_new() leaked on that error path.
  for (const char* ip : {"096.0.2.7", "192.0.2", "host.example", "fe80::1%eth0", "1.2.3.4;25", "[::1]", " 1.2.3.4"}) {
    INFO(ip);
    CHECK(sasl_endpoint(ip, "25") == "");
  }
  for (const char* port : {"65536", "-1", "x", "25 ", "99999999999999999999"}) {
    INFO(port);
    CHECK(sasl_endpoint("192.0.2.7", port) == "");
  }
}
