// Recipient lookups for tern-mda and tern-deliver: tern-authd's USER reply (through
// common/auth_client.h's UserdbClient) turned into a MailUser.
#pragma once

#include <memory>
#include <string>

#include "common/loop.h"
#include "common/result.h"
#include "mda/delivery.h"
#include "mda/lmtp_session.h"

namespace tern::mda {

class UserdbLookup {
 public:
  UserdbLookup(common::ev::Loop& loop, const std::string& socket_path);
  ~UserdbLookup();
  // kNotFound for an unknown user; kTemp when tern-authd is down or slow.
  void lookup(const std::string& user, LmtpSession::Host::LookupDone done);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::mda
