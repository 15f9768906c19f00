// The SMTP client's SASL mechanisms (PLAIN, LOGIN) and the choice between them.
#include "mta/smtp_client_sasl.h"

#include <catch2/catch.hpp>

#include "common/text.h"

using namespace tern;
using mta::SaslClient;

TEST_CASE("PLAIN sends everything in the initial response") {
  auto c = SaslClient::start("plain", "user@example.org", "s3cret pass");
  REQUIRE(c);
  CHECK(c->mechanism() == "PLAIN");
  CHECK(c->command() == "AUTH PLAIN " + common::base64_encode(std::string("\0user@example.org\0s3cret pass", 29)));
  // Nothing more to say: a challenge is a broken server.
  CHECK_FALSE(c->respond(""));
}

TEST_CASE("LOGIN answers the two challenges in order, whatever they say") {
  auto c = SaslClient::start("LOGIN", "user", "pw");
  REQUIRE(c);
  CHECK(c->command() == "AUTH LOGIN");
  CHECK(*c->respond("VXNlcm5hbWU6") == common::base64_encode("user"));
  CHECK(*c->respond(common::base64_encode("Password please")) == common::base64_encode("pw"));
  CHECK_FALSE(c->respond("VXNlcm5hbWU6"));  // a third challenge
  auto d = SaslClient::start("LOGIN", "user", "pw");
  CHECK_FALSE(d->respond("not base64!"));
}

TEST_CASE("credentials and mechanisms that are refused") {
  CHECK_FALSE(SaslClient::start("CRAM-MD5", "u", "p"));
  CHECK_FALSE(SaslClient::start("", "u", "p"));
  // A NUL would let a user name carry an authorization identity (RFC 4616 2).
  CHECK_FALSE(SaslClient::start("PLAIN", std::string("u\0admin", 7), "p"));
  CHECK_FALSE(SaslClient::start("PLAIN", "u", "p\r\nQUIT"));
}

TEST_CASE("choose_mechanism") {
  using mta::choose_mechanism;
  CHECK(*choose_mechanism({"LOGIN", "PLAIN"}, {}, true) == "PLAIN");
  CHECK(*choose_mechanism({"login"}, {}, true) == "LOGIN");
  CHECK(*choose_mechanism({"LOGIN", "PLAIN"}, {"LOGIN"}, true) == "LOGIN");
  CHECK_FALSE(choose_mechanism({"CRAM-MD5", "XOAUTH2"}, {}, true));
  CHECK_FALSE(choose_mechanism({"PLAIN"}, {"LOGIN"}, true));
  CHECK_FALSE(choose_mechanism({"PLAIN", "LOGIN"}, {}, false));  // both send the password as it is
  CHECK_FALSE(choose_mechanism({}, {}, true));
}
