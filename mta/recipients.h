// The recipient tables of one tern-mta process, built from the config: domain
// classes, virtual_alias_maps, alias_maps, local_recipient_maps and
// virtual_mailbox_maps, and the user database of tern-authd ("userdb" in a map
// list). Answers the two questions the SMTP server asks at RCPT TO: does this
// recipient exist (smtpd_reject_unlisted_recipient), and what does it expand to.
//
// Map lookups are LMDB reads on the loop thread (microseconds, no locks held by
// writers: tables are replaced by rename). The userdb question goes to tern-authd
// asynchronously.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/result.h"
#include "common/smtp_address.h"
#include "mta/address.h"
#include "mta/rewrite.h"
#include "mta/smtpd_check.h"

namespace tern::mta {

class RecipientTables {
 public:
  // Asks the user database whether `user` exists: kYes, kNo or kTempFail.
  using UserdbFn = std::function<void(const std::string& user, std::function<void(Known)> done)>;

  static common::Result<std::unique_ptr<RecipientTables>> from_config(const common::Config& cfg);

  void set_userdb(UserdbFn fn) { userdb_ = std::move(fn); }
  const DomainTables& domains() const { return domains_; }
  common::Result<AddressClass> classify(const common::smtp::Mailbox& m) const;

  // Whether the recipient exists in the tables of its class (callback may run
  // before verify() returns when no asynchronous lookup is needed).
  void verify(const common::smtp::Mailbox& m, AddressClass cls, std::function<void(Known)> done);
  // Expands aliases; kTemp when a table cannot be read.
  common::Result<std::vector<Destination>> expand(const std::string& address);
  const std::string& delimiters() const { return tables_.delimiters; }

 private:
  RecipientTables() = default;
  // The synchronous part of verify over a map list; wants_userdb when "userdb" is in it.
  Known lookup_maps(const std::vector<std::string>& maps, const std::vector<std::string>& keys,
                    bool& wants_userdb);
  void ask_userdb(std::vector<std::string> users, std::function<void(Known)> done);
  bool alias_table_missing(const std::string& spec);

  DomainTables domains_;
  MapCache maps_;
  ExpandTables tables_;
  std::unique_ptr<Expander> expander_;
  std::vector<std::string> alias_maps_;
  std::vector<std::string> local_recipient_maps_;
  std::vector<std::string> virtual_mailbox_maps_;
  std::vector<std::string> virtual_alias_maps_;
  UserdbFn userdb_;
  time_t missing_warned_ = 0;
};

}  // namespace tern::mta
