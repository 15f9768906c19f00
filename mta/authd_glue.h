// tern-authd behind the SMTP server's interfaces: SaslServer over the auth-client
// socket (common/auth_client.h), and the userdb question of the recipient tables
// ("does this user exist?") over auth-userdb.
#pragma once

#include <memory>
#include <string>

#include "common/auth_client.h"
#include "common/loop.h"
#include "mta/recipients.h"
#include "mta/sasl.h"

namespace tern::mta {

class AuthdSasl : public SaslServer {
 public:
  AuthdSasl(common::ev::Loop& loop, const std::string& socket_path);
  std::vector<Mechanism> mechanisms() override;
  Id start(const Params& params, ChallengeFn on_challenge, DoneFn on_done) override;
  void respond(Id id, const std::string& response) override;
  void cancel(Id id) override;

 private:
  void connect_soon();
  common::auth::AuthClient client_;
  bool connecting_ = false;
};

// A RecipientTables::UserdbFn asking auth-userdb with USER.
RecipientTables::UserdbFn authd_userdb(common::ev::Loop& loop, const std::string& socket_path);

}  // namespace tern::mta
