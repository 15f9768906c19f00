#include "mta/recipients.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/privilege.h"
#include "common/text.h"

namespace tern::mta {

using common::ErrorKind;
using common::Result;

namespace {

bool is_passwd_map(const std::string& s) { return s == "unix:passwd.byname" || s == "proxy:unix:passwd.byname"; }

// getpwnam without blocking the loop for long: /etc/passwd is a local file (NSS
// modules that go to the network are the admin's choice, as with Postfix's local).
Known passwd_has(const std::string& user) {
  struct passwd pw, *res = nullptr;
  char buf[4096];
  int rc = ::getpwnam_r(user.c_str(), &pw, buf, sizeof buf, &res);
  if (rc != 0) return Known::kTempFail;
  return res ? Known::kYes : Known::kNo;
}

}  // namespace

Result<std::unique_ptr<RecipientTables>> RecipientTables::from_config(const common::Config& cfg) {
  std::unique_ptr<RecipientTables> t(new RecipientTables);
  t->domains_ = DomainTables::from_config(cfg);
  t->alias_maps_ = cfg.list("alias_maps");
  t->local_recipient_maps_ = cfg.list("local_recipient_maps");
  t->virtual_mailbox_maps_ = cfg.list("virtual_mailbox_maps");
  t->virtual_alias_maps_ = cfg.list("virtual_alias_maps");
  for (const auto* list : {&t->local_recipient_maps_, &t->virtual_mailbox_maps_}) {
    for (const std::string& m : *list) {
      if (m == "userdb" || is_passwd_map(m)) continue;
      if (m.find(':') == std::string::npos) {
        return common::make_error(ErrorKind::kConfig, "recipient map '" + common::log_escape(m, 64) +
                                                          "': expected type:table, userdb or unix:passwd.byname");
      }
    }
  }
  ExpandTables& x = t->tables_;
  RecipientTables* self = t.get();
  if (!t->virtual_alias_maps_.empty()) {
    x.virtual_alias = [self](const std::string& key) -> Result<std::optional<std::string>> {
      for (const std::string& spec : self->virtual_alias_maps_) {
        Result<common::Map*> m = self->maps_.get(spec, common::MapSyntax::kPostmap);
        if (!m) return m.take_error();
        Result<std::optional<std::string>> v = (*m)->lookup(key);
        if (!v) return common::make_error(ErrorKind::kTemp, v.error().message);
        if (v->has_value()) return v;
      }
      return std::optional<std::string>();
    };
  }
  if (!t->alias_maps_.empty()) {
    x.alias = [self](const std::string& key) -> Result<std::optional<AliasHit>> {
      for (const std::string& spec : self->alias_maps_) {
        if (self->alias_table_missing(spec)) continue;
        Result<common::Map*> m = self->maps_.get(spec, common::MapSyntax::kAliases);
        if (!m) return m.take_error();
        Result<std::optional<std::string>> v = (*m)->lookup(key);
        if (!v) return common::make_error(ErrorKind::kTemp, v.error().message);
        // Commands and files of this entry run as the owner of this table (the
        // file just read), as in Postfix local(8).
        if (v->has_value()) return std::optional<AliasHit>(AliasHit{std::move(**v), (*m)->owner()});
      }
      return std::optional<AliasHit>();
    };
  }
  x.classify = [self](const std::string& domain) { return self->domains_.classify(domain, false); };
  // Who opens an include file named by root's table: default_privs (Postfix).
  uid_t default_privs = static_cast<uid_t>(-1);
  if (Result<common::UserIds> dp = common::lookup_user(cfg.str("default_privs"))) default_privs = dp->uid;
  x.read_include = [default_privs](const std::string& path, uid_t parent) -> Result<std::pair<std::string, uid_t>> {
    // As the parent's owner (root's tables: default_privs); a process that is not
    // root opens it as itself (open_as). O_NONBLOCK: a FIFO never blocks the open.
    const uid_t as = parent == 0 ? default_privs : parent;
    if (::geteuid() == 0 && (as == static_cast<uid_t>(-1) || as == 0)) {
      return common::make_error(ErrorKind::kTemp, "open " + path + ": default_privs is unknown or root");
    }
    Result<common::UniqueFd> fd = common::open_as(path, O_RDONLY | O_NOCTTY | O_NONBLOCK, as);
    if (!fd) return fd.take_error();
    // Bound: an include file is a list of addresses, not a mailbox.
    struct stat st;
    Result<std::string> text = common::read_table_fd(fd->get(), path, st, 1 << 20);
    if (!text) return text.take_error();
    return std::make_pair(std::move(text).value(), st.st_uid);
  };
  x.delimiters = cfg.str("recipient_delimiter");
  x.myorigin = common::to_lower(cfg.str("myorigin"));
  x.expansion_limit = static_cast<size_t>(cfg.integer("expansion_limit"));
  x.recursion_limit = static_cast<int>(cfg.integer("recursion_limit"));
  x.propagate_unmatched_extensions = cfg.boolean("propagate_unmatched_extensions");
  x.commands_from_alias = false;
  x.commands_from_include = false;
  for (const std::string& w : cfg.list("allow_mail_to_commands")) {
    if (w == "alias") x.commands_from_alias = true;
    if (w == "include") x.commands_from_include = true;
  }
  x.files_from_alias = false;
  x.files_from_include = false;
  for (const std::string& w : cfg.list("allow_mail_to_files")) {
    if (w == "alias") x.files_from_alias = true;
    if (w == "include") x.files_from_include = true;
  }
  t->expander_ = std::make_unique<Expander>(t->tables_);
  return t;
}

bool RecipientTables::alias_table_missing(const std::string& spec) {
  // A fresh install has /etc/aliases but no compiled /etc/aliases.lmdb until
  // newaliases runs. Postfix defers all local mail then; Tern delivers without
  // aliases and says so in the log (every few minutes), so that mail to existing
  // users is not held hostage by a missing table.
  size_t colon = spec.find(':');
  std::string type = colon == std::string::npos ? "lmdb" : spec.substr(0, colon);
  std::string path = colon == std::string::npos ? spec : spec.substr(colon + 1);
  if (type == "hash" || type == "btree" || type == "lmdb") path += ".lmdb";
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return false;
  if (errno != ENOENT) return false;  // let the lookup report the real error
  const time_t now = ::time(nullptr);
  if (now - missing_warned_ >= 300) {
    missing_warned_ = now;
    common::log::warning("alias_maps %s: %s does not exist (run newaliases); delivering without it", spec.c_str(),
                         path.c_str());
  }
  return true;
}

Result<AddressClass> RecipientTables::classify(const common::smtp::Mailbox& m) const {
  return domains_.classify(m.domain, m.domain_is_literal);
}

Known RecipientTables::lookup_maps(const std::vector<std::string>& maps, const std::vector<std::string>& keys,
                                   bool& wants_userdb) {
  wants_userdb = false;
  bool temp = false;
  for (const std::string& spec : maps) {
    if (spec == "userdb") {
      wants_userdb = true;
      continue;
    }
    if (is_passwd_map(spec)) {
      // passwd keys are bare user names: the last key is the bare local part.
      Known k = passwd_has(keys.back());
      if (k == Known::kYes) return k;
      if (k == Known::kTempFail) temp = true;
      continue;
    }
    bool is_alias = std::find(alias_maps_.begin(), alias_maps_.end(), spec) != alias_maps_.end();
    if (is_alias && alias_table_missing(spec)) continue;
    Result<common::Map*> m = maps_.get(spec, is_alias ? common::MapSyntax::kAliases : common::MapSyntax::kPostmap);
    if (!m) {
      common::log::warning("%s", m.error().message.c_str());
      temp = true;
      continue;
    }
    for (const std::string& k : keys) {
      Result<std::optional<std::string>> v = (*m)->lookup(k);
      if (!v) {
        common::log::warning("%s", v.error().message.c_str());
        temp = true;
        break;
      }
      if (v->has_value()) return Known::kYes;
    }
  }
  return temp ? Known::kTempFail : Known::kNo;
}

void RecipientTables::ask_userdb(std::vector<std::string> users, std::function<void(Known)> done) {
  if (!userdb_) {
    common::log::warning("recipient lookup needs tern-authd's userdb, which this tern-mta cannot reach");
    done(Known::kTempFail);
    return;
  }
  if (users.empty()) {
    done(Known::kNo);
    return;
  }
  std::string first = users.front();
  users.erase(users.begin());
  userdb_(first, [this, users = std::move(users), done = std::move(done)](Known k) mutable {
    if (k == Known::kNo && !users.empty()) {
      ask_userdb(std::move(users), std::move(done));
      return;
    }
    done(k);
  });
}

void RecipientTables::verify(const common::smtp::Mailbox& m, AddressClass cls, std::function<void(Known)> done) {
  const std::string domain = common::to_lower(m.domain);
  const std::string full_lp = common::to_lower(m.local_part);
  auto [user, ext] = split_extension(full_lp, tables_.delimiters);
  const std::string address = full_lp + "@" + domain;
  if (cls == AddressClass::kRelay || cls == AddressClass::kDefault) {
    done(Known::kYes);
    return;
  }
  Result<bool> va = expander_->has_virtual_alias(address);
  if (!va) {
    common::log::warning("%s", va.error().message.c_str());
    done(Known::kTempFail);
    return;
  }
  if (*va) {
    done(Known::kYes);
    return;
  }
  bool wants_userdb = false;
  Known k = Known::kNo;
  std::vector<std::string> userdb_keys;
  switch (cls) {
    case AddressClass::kVirtualAlias:
      done(Known::kNo);
      return;
    case AddressClass::kLocal: {
      if (local_recipient_maps_.empty()) {
        done(Known::kYes);  // the check is off, as in Postfix with an empty local_recipient_maps
        return;
      }
      Result<bool> al = expander_->has_alias(full_lp);
      if (!al) {
        done(Known::kTempFail);
        return;
      }
      if (*al) {
        done(Known::kYes);
        return;
      }
      k = lookup_maps(local_recipient_maps_, {user + "@" + domain, user}, wants_userdb);
      userdb_keys = {user + "@" + domain, user};
      break;
    }
    case AddressClass::kVirtualMailbox:
      k = lookup_maps(virtual_mailbox_maps_, {user + "@" + domain, "@" + domain}, wants_userdb);
      userdb_keys = {user + "@" + domain};
      break;
    default:
      break;
  }
  if (k == Known::kYes || !wants_userdb) {
    done(k);
    return;
  }
  const bool temp = k == Known::kTempFail;
  ask_userdb(std::move(userdb_keys), [temp, done = std::move(done)](Known u) {
    if (u == Known::kNo && temp) u = Known::kTempFail;
    done(u);
  });
}

Result<std::vector<Destination>> RecipientTables::expand(const std::string& address) {
  return expander_->expand(address);
}

}  // namespace tern::mta
