// Password hashing and verification for the virtual-user database.
//
// crypt(3) from libxcrypt: yescrypt by default, bcrypt and SHA512-CRYPT accepted (and
// SHA256-CRYPT and MD5-CRYPT, for hashes imported from older installs). A stored
// hash may carry a Dovecot "{SCHEME}" prefix ({SHA512-CRYPT}$6$..., {BLF-CRYPT}$2y$...)
// and is verified as it is, so a Dovecot passwd-file imports unchanged.
//
// SCRAM secrets (RFC 5802, RFC 7677) are derived here without Cyrus SASL (which
// ternctl must not link, since it links BoringSSL) using Nettle's PBKDF2 and HMAC,
// in the text form Cyrus' SCRAM plugin reads from the authPassword property:
//   SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
// The password is used as given (no SASLprep), as Cyrus SASL does. They are stored only
// with auth_scram_secrets = yes: PBKDF2 is far cheaper to guess at than yescrypt.
//
// Not here: who a user is (userdb.h), or any protocol.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::authd {

// Hash families `ternctl` can create.
enum class Scheme {
  kYescrypt,     // $y$ (libxcrypt default cost)
  kBcrypt,       // $2b$ (Dovecot BLF-CRYPT)
  kSha512Crypt,  // $6$ (Dovecot SHA512-CRYPT)
};
// "yescrypt", "bcrypt"/"BLF-CRYPT", "SHA512-CRYPT" (case-insensitive).
std::optional<Scheme> parse_scheme(std::string_view name);
const char* scheme_name(Scheme s);

// A new salted hash of `password`. kTemp only when the system has no randomness.
common::Result<std::string> hash_password(std::string_view password, Scheme scheme);

// What verify_password() found.
enum class Verify {
  kMatch,        // the password is right
  kMismatch,     // the password is wrong
  kUnsupported,  // the stored value is not a hash this build can check
};
// Checks `password` against a stored hash (with or without a {SCHEME} prefix), in
// time that does not depend on where the hashes differ.
Verify verify_password(std::string_view password, std::string_view stored);

// Checks a hash someone wants to store as it is (ternctl user add --hash, passwd-file
// import): "" when it is a crypt hash this build verifies, else why not.
std::string check_importable_hash(std::string_view stored);

// A throw-away hash with the default scheme, verified against when a user does not
// exist so that "no such user" costs what "wrong password" costs.
const std::string& dummy_hash();

enum class ScramHash { kSha1, kSha256 };
// The authPassword value for SCRAM-SHA-1 / SCRAM-SHA-256; `salt` random when empty.
common::Result<std::string> scram_secret(std::string_view password, ScramHash hash, unsigned iterations,
                                         std::string salt = "");

// n random bytes from getrandom(2).
common::Result<std::string> random_bytes(size_t n);

}  // namespace tern::authd
