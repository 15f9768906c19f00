#include <nettle/hmac.h>

#include <catch2/catch.hpp>

#include "authd/password.h"
#include "common/config.h"
#include "common/text.h"

using namespace tern::authd;

TEST_CASE("each scheme hashes and verifies") {
  for (Scheme s : {Scheme::kYescrypt, Scheme::kBcrypt, Scheme::kSha512Crypt}) {
    auto h = hash_password("correct horse", s);
    REQUIRE(h);
    CHECK(verify_password("correct horse", *h) == Verify::kMatch);
    CHECK(verify_password("correct hors", *h) == Verify::kMismatch);
    CHECK(verify_password("", *h) == Verify::kMismatch);
    CHECK(check_importable_hash(*h).empty());
  }
  CHECK(hash_password("x", Scheme::kYescrypt)->rfind("$y$", 0) == 0);
  CHECK(hash_password("x", Scheme::kBcrypt)->rfind("$2b$", 0) == 0);
  CHECK(hash_password("x", Scheme::kSha512Crypt)->rfind("$6$", 0) == 0);
  // Two hashes of one password differ (random salt).
  CHECK(hash_password("x", Scheme::kYescrypt).value() != hash_password("x", Scheme::kYescrypt).value());
  CHECK_FALSE(hash_password(std::string("a\0b", 3), Scheme::kYescrypt));
}

TEST_CASE("Dovecot {SCHEME} prefixes verify as they are") {
  // doveadm pw -s SHA512-CRYPT -p pencil
  auto h = hash_password("pencil", Scheme::kSha512Crypt);
  REQUIRE(h);
  CHECK(verify_password("pencil", "{SHA512-CRYPT}" + *h) == Verify::kMatch);
  CHECK(verify_password("pencil!", "{SHA512-CRYPT}" + *h) == Verify::kMismatch);
  auto b = hash_password("pencil", Scheme::kBcrypt);
  CHECK(verify_password("pencil", "{BLF-CRYPT}" + *b) == Verify::kMatch);
  CHECK(check_importable_hash("{SHA512-CRYPT}" + *h).empty());
  CHECK(check_importable_hash("{CRYPT}" + *h).empty());
}

TEST_CASE("things that are not supported hashes are refused, never compared as plaintext") {
  CHECK(verify_password("secret", "secret") == Verify::kUnsupported);
  CHECK(verify_password("secret", "{PLAIN}secret") == Verify::kUnsupported);
  CHECK(verify_password("x", "") == Verify::kUnsupported);
  CHECK_FALSE(check_importable_hash("{SSHA512}abc").empty());
  CHECK_FALSE(check_importable_hash("{PLAIN}secret").empty());
  CHECK_FALSE(check_importable_hash("abXYZ").empty());  // DES crypt
  CHECK_FALSE(check_importable_hash("$6$").empty());
  CHECK_FALSE(check_importable_hash("$6$salt$has:colon").empty());
}

TEST_CASE("scheme names") {
  CHECK(parse_scheme("yescrypt") == Scheme::kYescrypt);
  CHECK(parse_scheme("BLF-CRYPT") == Scheme::kBcrypt);
  CHECK(parse_scheme("bcrypt") == Scheme::kBcrypt);
  CHECK(parse_scheme("sha512-crypt") == Scheme::kSha512Crypt);
  CHECK_FALSE(parse_scheme("md5"));
}

// RFC 5802 section 5: user "user", password "pencil", salt QSXCR+Q6sek8bf92,
// 4096 iterations; the server's signature for that conversation is
// rmF9pqV8S7suAoZWja4dJRkFsKQ=. It is HMAC(ServerKey, AuthMessage), so a wrong
// ServerKey in our stored secret cannot produce it.
TEST_CASE("SCRAM-SHA-1 secret matches RFC 5802's example") {
  std::string salt = *tern::common::base64_decode("QSXCR+Q6sek8bf92");
  auto s = scram_secret("pencil", ScramHash::kSha1, 4096, salt);
  REQUIRE(s);
  REQUIRE(s->rfind("SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$", 0) == 0);
  std::string server_key = *tern::common::base64_decode(s->substr(s->rfind(':') + 1));
  const std::string auth_message =
      "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
      "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
  hmac_sha1_ctx h;
  hmac_sha1_set_key(&h, server_key.size(), reinterpret_cast<const uint8_t*>(server_key.data()));
  hmac_sha1_update(&h, auth_message.size(), reinterpret_cast<const uint8_t*>(auth_message.data()));
  uint8_t sig[20];
  hmac_sha1_digest(&h, 20, sig);
  CHECK(tern::common::base64_encode(std::string(reinterpret_cast<char*>(sig), 20)) == "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

// RFC 7677 section 3: the same for SCRAM-SHA-256 (salt W22ZaJ0SNY7soEsUEjb6gQ==,
// server signature 6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=).
TEST_CASE("SCRAM-SHA-256 secret matches RFC 7677's example") {
  std::string salt = *tern::common::base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==");
  auto s = scram_secret("pencil", ScramHash::kSha256, 4096, salt);
  REQUIRE(s);
  std::string server_key = *tern::common::base64_decode(s->substr(s->rfind(':') + 1));
  const std::string auth_message =
      "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
      "i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
  hmac_sha256_ctx h;
  hmac_sha256_set_key(&h, server_key.size(), reinterpret_cast<const uint8_t*>(server_key.data()));
  hmac_sha256_update(&h, auth_message.size(), reinterpret_cast<const uint8_t*>(auth_message.data()));
  uint8_t sig[32];
  hmac_sha256_digest(&h, 32, sig);
  CHECK(tern::common::base64_encode(std::string(reinterpret_cast<char*>(sig), 32)) ==
        "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

// A SCRAM secret is PBKDF2: stored only when asked for, and then at RFC 7677
// section 4's suggested cost for SHA-256 rather than its 4096 floor.
TEST_CASE("SCRAM secrets are off by default, and costly when on") {
  tern::common::Result<tern::common::Config> c = tern::common::Config::parse("", "t.conf");
  REQUIRE(c);
  CHECK_FALSE(c->boolean("auth_scram_secrets"));
  CHECK(c->integer("auth_scram_iterations") >= 10000);
  CHECK_FALSE(tern::common::Config::parse("auth_scram_iterations = 4095\n", "t.conf"));
  auto s = scram_secret("pencil", ScramHash::kSha256, static_cast<unsigned>(c->integer("auth_scram_iterations")));
  REQUIRE(s);
  CHECK(s->rfind("SCRAM-SHA-256$10000:", 0) == 0);
}
