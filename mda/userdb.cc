#include "mda/userdb.h"

#include "common/auth_client.h"
#include "common/text.h"

namespace tern::mda {

struct UserdbLookup::Impl {
  common::auth::UserdbClient client;
  Impl(common::ev::Loop& loop, common::auth::UserdbClient::Options o) : client(loop, std::move(o)) {}
};

UserdbLookup::UserdbLookup(common::ev::Loop& loop, const std::string& socket_path) {
  common::auth::UserdbClient::Options o;
  o.socket_path = socket_path;
  impl_ = std::make_unique<Impl>(loop, o);
}

UserdbLookup::~UserdbLookup() = default;

void UserdbLookup::lookup(const std::string& user, LmtpSession::Host::LookupDone done) {
  impl_->client.user(user, "lmtp", [done = std::move(done)](common::Result<common::auth::UserInfo> r) {
    if (!r) {
      done(r.take_error());
      return;
    }
    MailUser u;
    u.name = r->user;
    if (r->uid) {
      u.has_uid = true;
      u.uid = static_cast<uid_t>(*r->uid);
    }
    if (r->gid) {
      u.has_gid = true;
      u.gid = static_cast<gid_t>(*r->gid);
    }
    u.home = r->home;
    u.mail = r->mail;
    u.quota_rule = r->quota_rule;
    done(u);
  });
}

}  // namespace tern::mda
