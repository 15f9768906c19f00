#include "authd/auth_core.h"

#include <unistd.h>

#include "authd/password.h"
#include "authd/worker.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/services.h"
#include "common/text.h"

namespace tern::authd {

using common::ErrorKind;
using common::make_error;

common::Result<AuthSettings> AuthSettings::from_config(const common::Config& cfg) {
  AuthSettings s;
  static const char* const kKnownMechs[] = {"PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"};
  for (const std::string& m : cfg.list("auth_mechanisms")) {
    std::string up;
    for (char c : m) up += (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
    bool known = false;
    for (const char* k : kKnownMechs) known = known || up == k;
    if (!known) {
      return make_error(ErrorKind::kConfig, cfg.origin("auth_mechanisms") + ": parameter 'auth_mechanisms': unknown mechanism '" +
                                                common::log_escape(m, 32) + "' (known: plain login scram-sha-256 scram-sha-1 cram-md5)");
    }
    s.mechanisms.push_back(up);
  }
  s.disable_plaintext_auth = cfg.boolean("disable_plaintext_auth");
  s.failure_delay_ms = static_cast<uint64_t>(cfg.seconds("auth_failure_delay")) * 1000;
  s.penalty.max_delay_ms = static_cast<uint64_t>(cfg.seconds("auth_penalty_max")) * 1000;
  s.penalty.expire_ms = static_cast<uint64_t>(cfg.seconds("auth_penalty_expire")) * 1000;
  s.penalty.concurrency = static_cast<unsigned>(cfg.integer("auth_penalty_concurrency"));
  s.default_realm = cfg.str("auth_default_realm");
  s.passdb_lmdb = s.passdb_pam = s.userdb_lmdb = s.userdb_passwd = false;
  for (const std::string& p : cfg.list("auth_passdb")) {
    if (p == "lmdb") s.passdb_lmdb = true;
    else if (p == "pam") s.passdb_pam = true;
    else return make_error(ErrorKind::kConfig, cfg.origin("auth_passdb") + ": parameter 'auth_passdb': unknown database '" +
                                                   common::log_escape(p, 32) + "' (known: lmdb, pam)");
  }
  for (const std::string& p : cfg.list("auth_userdb")) {
    if (p == "lmdb") s.userdb_lmdb = true;
    else if (p == "passwd") s.userdb_passwd = true;
    else return make_error(ErrorKind::kConfig, cfg.origin("auth_userdb") + ": parameter 'auth_userdb': unknown database '" +
                                                   common::log_escape(p, 32) + "' (known: lmdb, passwd)");
  }
  s.ids = common::ValidIds::from_config(cfg);
  s.plaintext_equivalent = cfg.boolean("auth_plaintext_equivalent");
  s.scram_secrets = cfg.boolean("auth_scram_secrets");
  s.pam_service = cfg.str("auth_pam_service");
  s.db_path = UserDb::path_for(cfg);

  common::Result<common::UserIds> mail_uid = common::lookup_user(cfg.str("mail_uid"));
  if (!mail_uid) return make_error(ErrorKind::kConfig, cfg.origin("mail_uid") + ": parameter 'mail_uid': " + mail_uid.error().message);
  common::Result<gid_t> mail_gid = common::lookup_group(cfg.str("mail_gid"));
  if (!mail_gid) return make_error(ErrorKind::kConfig, cfg.origin("mail_gid") + ": parameter 'mail_gid': " + mail_gid.error().message);
  s.defaults.uid = std::to_string(mail_uid->uid);
  s.defaults.gid = std::to_string(*mail_gid);
  s.defaults.home = cfg.str("mail_home");
  s.defaults.mail = cfg.str("mail_location");

  s.userdb_allowed_uids.push_back(mail_uid->uid);
  std::vector<std::string> allowed = cfg.list("auth_userdb_allow_users");
  allowed.push_back(cfg.str("mail_owner"));
  for (const std::string& name : allowed) {
    common::Result<common::UserIds> u = common::lookup_user(name);
    if (!u) {
      return make_error(ErrorKind::kConfig, "auth_userdb_allow_users/mail_owner: user '" + common::log_escape(name, 64) +
                                                "': " + u.error().message);
    }
    s.userdb_allowed_uids.push_back(u->uid);
  }

  // tern-authd's own uid runs nothing that talks to clients, but a peer with it could
  // read the databases anyway.
  s.client_trusted_uids.push_back(::geteuid());
  common::Result<std::vector<uid_t>> trusted = common::configured_uids(cfg, "auth_client_trusted_users");
  if (!trusted) return trusted.take_error();
  s.client_trusted_uids.insert(s.client_trusted_uids.end(), trusted->begin(), trusted->end());
  return s;
}

AuthCore::AuthCore(common::ev::Loop& loop, AuthSettings settings, std::unique_ptr<UserDb> db, WorkerClient* worker)
    : loop_(loop), settings_(std::move(settings)), db_(std::move(db)), worker_(worker), penalty_(settings_.penalty) {}

AuthCore::~AuthCore() = default;

common::Result<std::string> AuthCore::canonical(const std::string& name) const {
  return canonical_user(name, settings_.default_realm);
}

void AuthCore::userdb_lookup(const std::string& name, std::function<void(common::Result<UserdbResult>)> cb) {
  common::Result<std::string> user = canonical(name);
  if (!user) {
    cb(make_error(ErrorKind::kNotFound, user.error().message));
    return;
  }
  if (settings_.userdb_lmdb && db_) {
    common::Result<UserRecord> u = db_->get_user(*user);
    if (u) {
      if (!u->enabled) {
        cb(make_error(ErrorKind::kNotFound, "user is disabled"));
        return;
      }
      common::Result<DomainRecord> d = db_->get_domain(std::string(domain_of(*user)));
      if (d && !d->enabled) {
        cb(make_error(ErrorKind::kNotFound, "domain is disabled"));
        return;
      }
      UserdbResult r;
      r.user = u->name;
      r.fields = userdb_fields(*u, d ? &d.value() : nullptr, settings_.defaults);
      cb(std::move(r));
      return;
    }
    if (u.error().kind != ErrorKind::kNotFound) {
      cb(u.take_error());
      return;
    }
  }
  if (settings_.userdb_passwd && worker_ && user->find('@') == std::string::npos) {
    // getpwnam may block (NSS over the network): the worker does it on the threadpool.
    auto reply = std::make_shared<WorkerReply>();
    WorkerClient* w = worker_;
    std::string n = *user;
    queue_work([w, n, reply] { *reply = w->passwd(n); },
                     [this, reply, cb = std::move(cb)] {
                       if (reply->status == WorkerReply::Status::kOk) {
                         if (std::string why = settings_.ids.refuse(reply->uid, reply->gid); !why.empty()) {
                           cb(make_error(ErrorKind::kNotFound, why));
                           return;
                         }
                         UserdbResult r;
                         r.user = reply->user;
                         r.fields = {{"uid", std::to_string(reply->uid)},
                                     {"gid", std::to_string(reply->gid)},
                                     {"home", reply->home},
                                     {"mail", expand_template(settings_.defaults.mail, reply->user)}};
                         cb(std::move(r));
                       } else if (reply->status == WorkerReply::Status::kTemp) {
                         cb(make_error(ErrorKind::kTemp, reply->detail));
                       } else {
                         cb(make_error(ErrorKind::kNotFound, "no such user"));
                       }
                     });
    return;
  }
  cb(make_error(ErrorKind::kNotFound, "no such user"));
}

void AuthCore::passdb_lookup(const std::string& name, std::function<void(common::Result<std::string>)> cb) {
  common::Result<std::string> user = canonical(name);
  if (!user) {
    cb(make_error(ErrorKind::kNotFound, user.error().message));
    return;
  }
  if (settings_.passdb_lmdb && db_) {
    common::Result<UserRecord> u = db_->get_user(*user);
    if (u) {
      if (!u->enabled) cb(make_error(ErrorKind::kNotFound, "user is disabled"));
      else cb(u->name);
      return;
    }
    if (u.error().kind != ErrorKind::kNotFound) {
      cb(u.take_error());
      return;
    }
  }
  if (settings_.passdb_pam) {
    // PAM cannot say whether a user exists without a conversation; the passwd entry
    // is what Dovecot's pam passdb lookups report too.
    userdb_lookup(*user, [cb = std::move(cb)](common::Result<UserdbResult> r) {
      if (r) cb(r->user);
      else cb(r.take_error());
    });
    return;
  }
  cb(make_error(ErrorKind::kNotFound, "no such user"));
}

common::Result<std::vector<std::string>> AuthCore::list_users(const std::string& mask, size_t limit) {
  if (!db_) return std::vector<std::string>{};
  return db_->list_users(mask, limit);
}

PassCheck AuthCore::verify_plain(const std::string& name, const std::string& password, const std::string& service,
                                 const std::string& rip) {
  PassCheck r;
  common::Result<std::string> user = canonical(name);
  if (!user) {
    r.status = PassCheck::Status::kUnknown;
    r.user = name;
    r.passdb = settings_.passdb_lmdb ? "lmdb" : "pam";
    r.detail = user.error().message;
    return r;
  }
  r.user = *user;
  if (settings_.passdb_lmdb && db_) {
    r.passdb = "lmdb";
    common::Result<UserRecord> u = db_->get_user(*user);
    if (u) {
      Verify v = verify_password(password, u->password);
      if (v == Verify::kUnsupported) {
        r.status = PassCheck::Status::kTemp;
        r.detail = "stored password hash has an unsupported scheme";
        return r;
      }
      if (v == Verify::kMismatch) {
        r.status = PassCheck::Status::kMismatch;
        return r;
      }
      common::Result<DomainRecord> d = db_->get_domain(std::string(domain_of(*user)));
      if (!u->enabled || (d && !d->enabled)) {
        r.status = PassCheck::Status::kDisabled;
        r.detail = u->enabled ? "domain is disabled" : "user is disabled";
        return r;
      }
      r.status = PassCheck::Status::kOk;
      return r;
    }
    if (u.error().kind != ErrorKind::kNotFound) {
      r.status = PassCheck::Status::kTemp;
      r.detail = u.error().message;
      return r;
    }
  }
  if (settings_.passdb_pam && worker_ && user->find('@') == std::string::npos) {
    r.passdb = "pam";
    WorkerReply w = worker_->pam(*user, password, service, rip);
    r.detail = w.detail;
    switch (w.status) {
      case WorkerReply::Status::kOk: r.status = PassCheck::Status::kOk; r.user = w.user; break;
      case WorkerReply::Status::kFail: r.status = PassCheck::Status::kMismatch; break;
      case WorkerReply::Status::kNotFound: r.status = PassCheck::Status::kUnknown; break;
      case WorkerReply::Status::kTemp: r.status = PassCheck::Status::kTemp; break;
    }
    return r;
  }
  // Unknown user: spend what a wrong password costs, so timing does not tell.
  (void)verify_password(password, dummy_hash());
  if (r.passdb.empty()) r.passdb = "lmdb";
  r.status = PassCheck::Status::kUnknown;
  return r;
}

std::optional<AuthCore::Secrets> AuthCore::secrets(const std::string& name) {
  if (!settings_.passdb_lmdb || !db_) return std::nullopt;
  common::Result<std::string> user = canonical(name);
  if (!user) return std::nullopt;
  common::Result<UserRecord> u = db_->get_user(*user);
  if (!u || !u->enabled) return std::nullopt;
  common::Result<DomainRecord> d = db_->get_domain(std::string(domain_of(*user)));
  if (d && !d->enabled) return std::nullopt;
  Secrets s;
  s.user = u->name;
  s.scram = u->scram;
  if (settings_.plaintext_equivalent) s.cram = u->cram;
  return s;
}

bool AuthCore::any_scram_secrets() {
  if (!settings_.passdb_lmdb || !db_) return false;
  common::Result<bool> r = db_->any_scram();
  if (!r) {
    common::log::warning("user database: %s", r.error().message.c_str());
    return false;
  }
  return *r;
}

void AuthCore::remember_success(const std::string& cookie, uint32_t cpid, common::auth_protocol::RequestId id,
                                const std::string& user) {
  expire_remembered();
  if (remembered_.size() >= kMaxRemembered) {
    // Nobody is asking: forget the oldest.
    remembered_.erase(expiry_.front().second);
    expiry_.pop_front();
  }
  const uint64_t until = loop_.now_ms() + kRequestTtlMs;
  Key k{cookie, cpid, id};
  remembered_[k] = {user, until};
  expiry_.emplace_back(until, std::move(k));
}

std::optional<std::string> AuthCore::take_success(const std::string& cookie, uint32_t cpid,
                                                  common::auth_protocol::RequestId id) {
  expire_remembered();
  auto it = remembered_.find(Key{cookie, cpid, id});
  if (it == remembered_.end()) return std::nullopt;
  std::string user = std::move(it->second.first);
  remembered_.erase(it);
  return user;
}

void AuthCore::expire_remembered() {
  // expiry_ is in time order (one TTL for all); an entry taken or replaced earlier
  // is erased only if its expiry still matches.
  const uint64_t now = loop_.now_ms();
  while (!expiry_.empty() && expiry_.front().first <= now) {
    auto it = remembered_.find(expiry_.front().second);
    if (it != remembered_.end() && it->second.second == expiry_.front().first) remembered_.erase(it);
    expiry_.pop_front();
  }
}

void AuthCore::queue_work(std::function<void()> work, std::function<void()> done) {
  ++work_in_flight_;
  loop_.queue_work(std::move(work), [this, done = std::move(done)] {
    done();
    if (--work_in_flight_ == 0) {
      for (auto& f : idle_waiters_) loop_.post(std::move(f));
      idle_waiters_.clear();
    }
  });
}

void AuthCore::when_idle(std::function<void()> fn) {
  if (work_in_flight_ == 0) {
    loop_.post(std::move(fn));
  } else {
    idle_waiters_.push_back(std::move(fn));
  }
}

}  // namespace tern::authd
