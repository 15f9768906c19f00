// What the SMTP server needs from an authentication service: the mechanisms on
// offer and an exchange of challenges and responses per AUTH command. tern-authd's
// auth-client socket (common/auth_client.h) is the one implementation; the session
// sees only this interface, so it never holds a credential and never links SASL.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace tern::mta {

class SaslServer {
 public:
  struct Mechanism {
    std::string name;        // "PLAIN", "LOGIN", "SCRAM-SHA-256"
    bool plaintext = false;  // sends the password in the clear
    bool anonymous = false;
  };
  struct Params {
    std::string mech;
    std::string local_ip, remote_ip;
    uint16_t local_port = 0, remote_port = 0;
    bool secured = false;                         // TLS is on
    std::optional<std::string> initial_response;  // raw bytes
  };
  using Id = uint64_t;
  // The challenge (raw bytes) to send as "334 base64".
  using ChallengeFn = std::function<void(const std::string& challenge)>;
  // The authenticated user, or kPerm (bad credentials, message: reason), kTemp.
  using DoneFn = std::function<void(common::Result<std::string> user)>;

  virtual ~SaslServer() = default;
  // Empty until the service has told us (connecting lazily).
  virtual std::vector<Mechanism> mechanisms() = 0;
  virtual Id start(const Params& params, ChallengeFn on_challenge, DoneFn on_done) = 0;
  virtual void respond(Id id, const std::string& response) = 0;
  virtual void cancel(Id id) = 0;
};

}  // namespace tern::mta
