#include "mta/authd_glue.h"

#include "common/log.h"
#include "common/text.h"

namespace tern::mta {

namespace {

common::auth::AuthClient::Options client_options(const std::string& path) {
  common::auth::AuthClient::Options o;
  o.socket_path = path;
  return o;
}

}  // namespace

AuthdSasl::AuthdSasl(common::ev::Loop& loop, const std::string& socket_path)
    : client_(loop, client_options(socket_path)) {
  connect_soon();
}

void AuthdSasl::connect_soon() {
  if (connecting_ || client_.connected()) return;
  connecting_ = true;
  client_.connect([this](common::Status st) {
    connecting_ = false;
    if (!st) common::log::warning("SASL: cannot connect to tern-authd: %s", st.error().message.c_str());
  });
}

std::vector<SaslServer::Mechanism> AuthdSasl::mechanisms() {
  std::vector<Mechanism> out;
  if (!client_.connected()) {
    // Reconnect in the background; until then AUTH is not offered (as Postfix
    // does when its SASL server is unavailable).
    connect_soon();
    return out;
  }
  for (const common::auth::Mechanism& m : client_.mechanisms()) {
    if (m.private_) continue;
    Mechanism x;
    x.name = m.name;
    x.plaintext = m.plaintext;
    x.anonymous = common::iequals(m.name, "ANONYMOUS");
    out.push_back(x);
  }
  return out;
}

SaslServer::Id AuthdSasl::start(const Params& p, ChallengeFn on_challenge, DoneFn on_done) {
  common::auth::AuthParams a;
  a.mech = p.mech;
  a.service = "smtp";
  a.local_ip = p.local_ip;
  a.remote_ip = p.remote_ip;
  a.local_port = p.local_port;
  a.remote_port = p.remote_port;
  a.secured = p.secured;
  a.initial_response = p.initial_response;
  return client_.start(
      a, [on_challenge](common::auth::RequestId, const std::string& challenge) { on_challenge(challenge); },
      [on_done](common::Result<common::auth::AuthSuccess> r) {
        if (!r) {
          on_done(r.take_error());
          return;
        }
        on_done(r->user);
      });
}

void AuthdSasl::respond(Id id, const std::string& response) {
  client_.respond(static_cast<common::auth::RequestId>(id), response);
}

void AuthdSasl::cancel(Id id) { client_.cancel(static_cast<common::auth::RequestId>(id)); }

RecipientTables::UserdbFn authd_userdb(common::ev::Loop& loop, const std::string& socket_path) {
  common::auth::UserdbClient::Options o;
  o.socket_path = socket_path;
  auto client = std::make_shared<common::auth::UserdbClient>(loop, o);
  return [client](const std::string& user, std::function<void(Known)> done) {
    client->user(user, "smtp", [done](common::Result<common::auth::UserInfo> r) {
      if (r) {
        done(Known::kYes);
      } else if (r.error().kind == common::ErrorKind::kNotFound) {
        done(Known::kNo);
      } else {
        common::log::warning("userdb lookup: %s", r.error().message.c_str());
        done(Known::kTempFail);
      }
    });
  };
}

}  // namespace tern::mta
