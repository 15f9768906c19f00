// The virtual-user database: users and domains in one LMDB environment,
// $data_directory/auth/users.lmdb, owned by authd_user (mode 0600 in a 0700
// directory the master creates). tern-authd reads it; `ternctl user|domain` writes it
// (as authd_user). LMDB lets the writer commit while the daemon reads, so a user
// added by ternctl can log in at once, with no reload.
//
// Records are TAB-separated key=value text (Dovecot's escaping), so new fields can be
// added without a migration and `mdb_dump -p` shows them readably:
//   users   "demo@example.test" -> password=$y$... scram=SCRAM-SHA-256$... uid= ...
//   domains "example.test"      -> uid= gid= home= mail= quota_rule= enabled=yes
//
// The library links neither Cyrus SASL nor any TLS library (only LMDB, libcrypt and
// Nettle), so both tern-authd and ternctl can use it. It does no protocol work.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config.h"
#include "common/lmdb.h"
#include "common/result.h"

namespace tern::authd {

struct UserRecord {
  std::string name;                  // canonical: lower-case "local@domain"
  std::string password;              // crypt(3) hash, maybe with a Dovecot {SCHEME} prefix
  std::vector<std::string> scram;    // Cyrus authPassword values (SCRAM-SHA-1/-256)
  std::string cram;                  // plaintext-equivalent secret; only with auth_plaintext_equivalent
  // Per-user userdb overrides; empty means the domain's value, then the default.
  std::string uid, gid, home, mail, quota_rule;
  bool enabled = true;
};

struct DomainRecord {
  std::string name;                  // lower-case
  std::string uid, gid, home, mail, quota_rule;
  bool enabled = true;
};

// Encoding of records (pure; exposed for tests and the fuzzer).
std::string encode_user(const UserRecord& u);
common::Result<UserRecord> decode_user(std::string_view name, std::string_view data);
std::string encode_domain(const DomainRecord& d);
common::Result<DomainRecord> decode_domain(std::string_view name, std::string_view data);

// "Demo@Example.TEST" -> "demo@example.test" (Dovecot's auth_username_format = %Lu);
// a bare "demo" gets "@<default_realm>" when default_realm is set. kPerm with a
// reason for names that cannot be users.
common::Result<std::string> canonical_user(std::string_view name, std::string_view default_realm);
// The domain part ("" when there is none).
std::string_view domain_of(std::string_view user);
std::string_view local_part(std::string_view user);
// Dovecot variables in a template: %u user, %n local part, %d domain, %% a '%';
// also the long forms %{user}, %{username}, %{domain}.
std::string expand_template(std::string_view tmpl, std::string_view user);

// Userdb defaults from the config: mail_uid, mail_gid (numeric), mail_home and
// mail_location.
struct UserdbDefaults {
  std::string uid, gid, home, mail, quota_rule;
};
// The userdb fields of a virtual user, in Dovecot's order: user's own value, then the
// domain's, then the default; home and mail templates expanded.
std::vector<std::pair<std::string, std::string>> userdb_fields(const UserRecord& u, const DomainRecord* d,
                                                               const UserdbDefaults& defaults);

// Shell-style glob with * and ?, as doveadm user masks.
bool glob_match(std::string_view pattern, std::string_view s);

class UserDb {
 public:
  // The database path for a config.
  static std::string path_for(const common::Config& cfg);
  // Opens (and with create, creates) the environment.
  static common::Result<std::unique_ptr<UserDb>> open(const std::string& path, bool create);

  // kNotFound when absent.
  common::Result<UserRecord> get_user(std::string_view name);
  common::Result<DomainRecord> get_domain(std::string_view name);
  // must_be_new: kExists if present; otherwise it replaces.
  common::Status put_user(const UserRecord& u, bool must_be_new);
  common::Status del_user(std::string_view name);
  common::Status put_domain(const DomainRecord& d, bool must_be_new);
  // Refuses (kInUse) while users of the domain exist, unless `with_users`.
  common::Status del_domain(std::string_view name, bool with_users);
  // Users matching a glob mask, sorted, at most `limit`.
  common::Result<std::vector<std::string>> list_users(std::string_view mask, size_t limit);
  common::Result<std::vector<DomainRecord>> list_domains();
  // Whether any user record holds a SCRAM secret; stops at the first one.
  common::Result<bool> any_scram();

  common::lmdb::Env& env() { return *env_; }

 private:
  std::unique_ptr<common::lmdb::Env> env_;
  MDB_dbi users_ = 0;
  MDB_dbi domains_ = 0;
};

}  // namespace tern::authd
