// The SASL client of tern-mta's SMTP client (RFC 4954 AUTH), for a relayhost that
// wants a login: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login), the two
// mechanisms mail providers offer. In-house on purpose: tern-mta links BoringSSL
// and must not load Cyrus SASL, which links OpenSSL (DESIGN.md 6).
//
// Pure: the mechanism's steps as strings, no I/O. The password never appears in
// anything this module returns for logging.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::mta {

class SaslClient {
 public:
  // Mechanisms we can do, in order of preference.
  static const std::vector<std::string>& supported();

  // `mechanism` is upper case ("PLAIN", "LOGIN").
  static common::Result<SaslClient> start(std::string_view mechanism, std::string user, std::string password);

  const std::string& mechanism() const { return mech_; }
  // The AUTH command line without CRLF: "AUTH PLAIN <base64>" or "AUTH LOGIN".
  std::string command() const;
  // The answer to a 334 challenge (its base64 text), without CRLF. An error for a
  // challenge the mechanism does not expect (the caller then cancels with "*").
  common::Result<std::string> respond(std::string_view challenge_base64);

 private:
  SaslClient() = default;
  std::string mech_;
  std::string user_;
  std::string password_;
  int step_ = 0;
};

// Picks the mechanism to use: the first of ours the server offers and the filter
// (smtp_sasl_mechanism_filter, upper case; empty allows all) allows. Plaintext
// mechanisms (both of ours) only when `plaintext_ok`. nullopt: none usable.
std::optional<std::string> choose_mechanism(const std::vector<std::string>& offered,
                                            const std::vector<std::string>& filter, bool plaintext_ok);

}  // namespace tern::mta
