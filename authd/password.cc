#include "authd/password.h"

#include <crypt.h>
#include <nettle/hmac.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "common/text.h"

namespace tern::authd {

using common::ErrorKind;
using common::make_error;

namespace {

// The part after a Dovecot "{SCHEME}" prefix, and the scheme (upper case).
std::string_view strip_scheme(std::string_view stored, std::string* scheme) {
  if (stored.size() > 2 && stored[0] == '{') {
    size_t close = stored.find('}');
    if (close != std::string_view::npos && close < 32) {
      if (scheme) *scheme = common::to_lower(stored.substr(1, close - 1));
      return stored.substr(close + 1);
    }
  }
  if (scheme) scheme->clear();
  return stored;
}

bool is_crypt_hash(std::string_view h) {
  // The crypt(3) families libxcrypt verifies and we accept: yescrypt, bcrypt,
  // SHA-512, SHA-256, MD5 (imported only). DES crypt is refused: 8-character limit.
  static const char* const kPrefixes[] = {"$y$", "$7$", "$2b$", "$2y$", "$2a$", "$6$", "$5$", "$1$"};
  for (const char* p : kPrefixes) {
    if (h.rfind(p, 0) == 0) return true;
  }
  return false;
}

std::string upper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::optional<Scheme> parse_scheme(std::string_view name) {
  std::string n = common::to_lower(name);
  if (n == "yescrypt") return Scheme::kYescrypt;
  if (n == "bcrypt" || n == "blf-crypt") return Scheme::kBcrypt;
  if (n == "sha512-crypt" || n == "sha512crypt") return Scheme::kSha512Crypt;
  return std::nullopt;
}

const char* scheme_name(Scheme s) {
  switch (s) {
    case Scheme::kYescrypt: return "yescrypt";
    case Scheme::kBcrypt: return "BLF-CRYPT";
    case Scheme::kSha512Crypt: return "SHA512-CRYPT";
  }
  return "?";
}

common::Result<std::string> random_bytes(size_t n) {
  std::string out(n, '\0');
  size_t off = 0;
  while (off < n) {
    ssize_t r = ::getrandom(out.data() + off, n - off, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return common::errno_error("getrandom", errno);
    }
    off += static_cast<size_t>(r);
  }
  return out;
}

common::Result<std::string> hash_password(std::string_view password, Scheme scheme) {
  if (password.find('\0') != std::string_view::npos) {
    return make_error(ErrorKind::kPerm, "a password cannot contain a NUL byte");
  }
  const char* prefix = "$y$";
  if (scheme == Scheme::kBcrypt) prefix = "$2b$";
  if (scheme == Scheme::kSha512Crypt) prefix = "$6$";
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  // rbytes = NULL: libxcrypt takes the salt from the system's random source.
  if (!crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting)) {
    return common::errno_error(std::string("crypt_gensalt ") + prefix, errno);
  }
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  const char* h = crypt_rn(pw.c_str(), setting, data.get(), sizeof *data);
  std::memset(pw.data(), 0, pw.size());
  if (!h || h[0] == '*') return make_error(ErrorKind::kTemp, std::string("crypt ") + prefix + " failed");
  std::string out = h;
  std::memset(data.get(), 0, sizeof *data);
  return out;
}

Verify verify_password(std::string_view password, std::string_view stored) {
  std::string scheme;
  std::string_view hash = strip_scheme(stored, &scheme);
  if (!is_crypt_hash(hash) || password.find('\0') != std::string_view::npos) return Verify::kUnsupported;
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  std::string setting(hash);
  const char* out = crypt_rn(pw.c_str(), setting.c_str(), data.get(), sizeof *data);
  std::memset(pw.data(), 0, pw.size());
  Verify v = Verify::kUnsupported;
  if (out && out[0] != '*') v = constant_time_equal(out, hash) ? Verify::kMatch : Verify::kMismatch;
  std::memset(data.get(), 0, sizeof *data);
  return v;
}

std::string check_importable_hash(std::string_view stored) {
  std::string scheme;
  std::string_view hash = strip_scheme(stored, &scheme);
  if (!scheme.empty()) {
    static const char* const kCryptSchemes[] = {"crypt", "md5-crypt", "sha256-crypt", "sha512-crypt", "blf-crypt"};
    bool known = false;
    for (const char* s : kCryptSchemes) known = known || scheme == s;
    if (!known) {
      return "password scheme {" + upper(scheme) +
             "} is not supported (supported: SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, MD5-CRYPT, yescrypt)";
    }
  }
  if (!is_crypt_hash(hash)) return "not a crypt(3) hash ($y$, $2b$, $6$, $5$ or $1$)";
  if (hash.find_first_of("\t\n\r: ") != std::string_view::npos) return "hash contains a separator character";
  // A setting with no hash after it ("$6$salt$") would make crypt() compute a new
  // hash rather than compare against one.
  size_t last = hash.rfind('$');
  if (std::count(hash.begin(), hash.end(), '$') < 3 || hash.size() - last - 1 < 10) return "incomplete crypt(3) hash";
  // libxcrypt must accept it as a setting.
  if (crypt_checksalt(std::string(hash).c_str()) == CRYPT_SALT_INVALID) return "malformed crypt(3) hash";
  return "";
}

const std::string& dummy_hash() {
  static const std::string h = [] {
    common::Result<std::string> r = hash_password("tern-dummy-password", Scheme::kYescrypt);
    return r ? r.value() : std::string("$y$j9T$dummydummydummydummy$0000000000000000000000000000000000000000000");
  }();
  return h;
}

common::Result<std::string> scram_secret(std::string_view password, ScramHash hash, unsigned iterations,
                                         std::string salt) {
  if (salt.empty()) {
    common::Result<std::string> r = random_bytes(16);
    if (!r) return r.take_error();
    salt = std::move(r).value();
  }
  const size_t len = hash == ScramHash::kSha256 ? SHA256_DIGEST_SIZE : SHA1_DIGEST_SIZE;
  uint8_t salted[SHA256_DIGEST_SIZE], client_key[SHA256_DIGEST_SIZE], stored_key[SHA256_DIGEST_SIZE],
      server_key[SHA256_DIGEST_SIZE];
  const auto* pw = reinterpret_cast<const uint8_t*>(password.data());
  const auto* s = reinterpret_cast<const uint8_t*>(salt.data());
  // SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key");
  // StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key").
  if (hash == ScramHash::kSha256) {
    pbkdf2_hmac_sha256(password.size(), pw, iterations, salt.size(), s, len, salted);
    hmac_sha256_ctx h;
    hmac_sha256_set_key(&h, len, salted);
    hmac_sha256_update(&h, 10, reinterpret_cast<const uint8_t*>("Client Key"));
    hmac_sha256_digest(&h, len, client_key);
    hmac_sha256_set_key(&h, len, salted);
    hmac_sha256_update(&h, 10, reinterpret_cast<const uint8_t*>("Server Key"));
    hmac_sha256_digest(&h, len, server_key);
    sha256_ctx d;
    sha256_init(&d);
    sha256_update(&d, len, client_key);
    sha256_digest(&d, len, stored_key);
  } else {
    pbkdf2_hmac_sha1(password.size(), pw, iterations, salt.size(), s, len, salted);
    hmac_sha1_ctx h;
    hmac_sha1_set_key(&h, len, salted);
    hmac_sha1_update(&h, 10, reinterpret_cast<const uint8_t*>("Client Key"));
    hmac_sha1_digest(&h, len, client_key);
    hmac_sha1_set_key(&h, len, salted);
    hmac_sha1_update(&h, 10, reinterpret_cast<const uint8_t*>("Server Key"));
    hmac_sha1_digest(&h, len, server_key);
    sha1_ctx d;
    sha1_init(&d);
    sha1_update(&d, len, client_key);
    sha1_digest(&d, len, stored_key);
  }
  auto b64 = [](const uint8_t* p, size_t n) { return common::base64_encode(std::string_view(reinterpret_cast<const char*>(p), n)); };
  std::string out = hash == ScramHash::kSha256 ? "SCRAM-SHA-256$" : "SCRAM-SHA-1$";
  out += std::to_string(iterations) + ":" + common::base64_encode(salt) + "$" + b64(stored_key, len) + ":" +
         b64(server_key, len);
  std::memset(salted, 0, sizeof salted);
  std::memset(client_key, 0, sizeof client_key);
  return out;
}

}  // namespace tern::authd
