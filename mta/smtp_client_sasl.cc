#include "mta/smtp_client_sasl.h"

#include <algorithm>

#include "common/text.h"

namespace tern::mta {

using common::Result;

const std::vector<std::string>& SaslClient::supported() {
  static const std::vector<std::string> kMechs = {"PLAIN", "LOGIN"};
  return kMechs;
}

Result<SaslClient> SaslClient::start(std::string_view mechanism, std::string user, std::string password) {
  std::string m(mechanism);
  for (char& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (m != "PLAIN" && m != "LOGIN") {
    return common::make_error(common::ErrorKind::kConfig, "SASL mechanism " + common::log_escape(mechanism, 40) +
                                                              " is not supported (PLAIN, LOGIN)");
  }
  // A NUL would cut the PLAIN message short and let a user name smuggle an
  // authorization identity (RFC 4616 2); CR/LF are not credentials either.
  for (const std::string* s : {&user, &password}) {
    if (s->find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
      return common::make_error(common::ErrorKind::kConfig, "SASL credentials contain NUL, CR or LF");
    }
  }
  SaslClient c;
  c.mech_ = m;
  c.user_ = std::move(user);
  c.password_ = std::move(password);
  return c;
}

std::string SaslClient::command() const {
  if (mech_ == "PLAIN") {
    // RFC 4616: [authzid] NUL authcid NUL passwd; the initial response (RFC 4954
    // 4) saves a round trip. An empty authzid: act as the user we log in as.
    std::string msg;
    msg += '\0';
    msg += user_;
    msg += '\0';
    msg += password_;
    return "AUTH PLAIN " + common::base64_encode(msg);
  }
  return "AUTH LOGIN";
}

Result<std::string> SaslClient::respond(std::string_view challenge) {
  if (mech_ == "PLAIN") {
    // Everything was in the initial response; a server asking for more is broken.
    return common::make_error(common::ErrorKind::kProtocol, "unexpected challenge for PLAIN");
  }
  std::optional<std::string> text = common::base64_decode(common::trim(challenge));
  if (!text) return common::make_error(common::ErrorKind::kProtocol, "challenge is not base64");
  // LOGIN asks "Username:" then "Password:"; servers word these differently
  // ("User Name", "username:"), so the order decides, not the text.
  switch (step_++) {
    case 0: return common::base64_encode(user_);
    case 1: return common::base64_encode(password_);
    default: return common::make_error(common::ErrorKind::kProtocol, "too many challenges for LOGIN");
  }
}

std::optional<std::string> choose_mechanism(const std::vector<std::string>& offered,
                                            const std::vector<std::string>& filter, bool plaintext_ok) {
  if (!plaintext_ok) return std::nullopt;  // PLAIN and LOGIN both send the password as it is
  for (const std::string& m : SaslClient::supported()) {
    bool on_offer = std::any_of(offered.begin(), offered.end(), [&](const std::string& o) { return common::iequals(o, m); });
    bool allowed = filter.empty() ||
                   std::any_of(filter.begin(), filter.end(), [&](const std::string& f) { return common::iequals(f, m); });
    if (on_offer && allowed) return m;
  }
  return std::nullopt;
}

}  // namespace tern::mta
