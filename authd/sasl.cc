#include "authd/sasl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sasl/saslplug.h>
#include <unistd.h>

#include <cstring>

#include "common/log.h"
#include "common/text.h"

namespace tern::authd {

using common::ErrorKind;
using common::make_error;

namespace {

AuthCore* g_core = nullptr;

// Cyrus stores every callback as int (*)(void); the cast through void (*)(void) is
// the one -Wcast-function-type accepts.
template <class F>
int (*cb_cast(F* f))() {
  return reinterpret_cast<int (*)()>(reinterpret_cast<void (*)()>(f));
}
std::string g_mech_list;  // "PLAIN LOGIN ..." for Cyrus' mech_list option

// ---- mutexes: Cyrus' defaults are no-ops; we call it from several threads ---------
void* mutex_alloc() {
  auto* m = new pthread_mutex_t;
  pthread_mutex_init(m, nullptr);
  return m;
}
int mutex_lock(void* m) { return pthread_mutex_lock(static_cast<pthread_mutex_t*>(m)) == 0 ? SASL_OK : SASL_FAIL; }
int mutex_unlock(void* m) { return pthread_mutex_unlock(static_cast<pthread_mutex_t*>(m)) == 0 ? SASL_OK : SASL_FAIL; }
void mutex_free(void* m) {
  pthread_mutex_destroy(static_cast<pthread_mutex_t*>(m));
  delete static_cast<pthread_mutex_t*>(m);
}

// ---- global callbacks ---------------------------------------------------------------
int getopt_cb(void*, const char*, const char* option, const char** result, unsigned* len) {
  const char* v = nullptr;
  if (std::strcmp(option, "mech_list") == 0) v = g_mech_list.c_str();
  else if (std::strcmp(option, "pwcheck_method") == 0) v = "auxprop";
  else if (std::strcmp(option, "auxprop_plugin") == 0) v = "tern";
  else if (std::strcmp(option, "log_level") == 0) v = "2";  // errors and failures
  else if (std::strcmp(option, "canon_user_plugin") == 0) v = "INTERNAL";
  if (!v) return SASL_FAIL;
  *result = v;
  if (len) *len = static_cast<unsigned>(std::strlen(v));
  return SASL_OK;
}

int log_cb(void*, int level, const char* message) {
  // Cyrus' messages name users but never passwords; still, only at debug.
  if (level <= SASL_LOG_ERR) common::log::warning("SASL: %s", common::log_escape(message ? message : "").c_str());
  else common::log::debug("SASL: %s", common::log_escape(message ? message : "").c_str());
  return SASL_OK;
}

// Points Cyrus at a directory with no tern.conf, so a stray /etc/sasl2/tern.conf
// cannot change what the getopt callback says.
int getconfpath_cb(void*, const char** path) {
  *path = "/nonexistent/tern-sasl";
  return SASL_OK;
}

sasl_callback_t g_callbacks[] = {
    {SASL_CB_GETOPT, cb_cast(getopt_cb), nullptr},
    {SASL_CB_LOG, cb_cast(log_cb), nullptr},
    {SASL_CB_GETCONFPATH, cb_cast(getconfpath_cb), nullptr},
    {SASL_CB_LIST_END, nullptr, nullptr},
};

// ---- the "tern" auxprop plugin ------------------------------------------------------
int auxprop_lookup(void*, sasl_server_params_t* sparams, unsigned flags, const char* user, unsigned ulen) {
  if (!g_core || !sparams || !user) return SASL_BADPARAM;
  // Only the authentication identity's properties (names with '*'); authorization
  // identities have none here.
  if (flags & SASL_AUXPROP_AUTHZID) return SASL_OK;
  std::optional<AuthCore::Secrets> s = g_core->secrets(std::string(user, ulen));
  if (!s) return SASL_NOUSER;
  const struct propval* pv = sparams->utils->prop_get(sparams->propctx);
  if (!pv) return SASL_OK;
  for (; pv->name; ++pv) {
    const char* name = pv->name;
    if (*name != '*') continue;
    ++name;
    if (pv->values && !(flags & SASL_AUXPROP_OVERRIDE)) continue;
    if (pv->values) sparams->utils->prop_erase(sparams->propctx, pv->name);
    if (std::strcmp(name, "authPassword") == 0) {
      for (const std::string& v : s->scram) {
        sparams->utils->prop_set(sparams->propctx, pv->name, v.c_str(), static_cast<int>(v.size()));
      }
    } else if (std::strcmp(name, SASL_AUX_PASSWORD_PROP) == 0 && !s->cram.empty()) {
      sparams->utils->prop_set(sparams->propctx, pv->name, s->cram.c_str(), static_cast<int>(s->cram.size()));
    }
  }
  return SASL_OK;
}

sasl_auxprop_plug_t g_auxprop = {
    0, 0, nullptr, nullptr, auxprop_lookup, const_cast<char*>("tern"), nullptr,
};

int auxprop_init(const sasl_utils_t*, int max_version, int* out_version, sasl_auxprop_plug_t** plug, const char*) {
  if (max_version < SASL_AUXPROP_PLUG_VERSION) return SASL_BADVERS;
  *out_version = SASL_AUXPROP_PLUG_VERSION;
  *plug = &g_auxprop;
  return SASL_OK;
}

bool is_temp(int rc) { return rc == SASL_FAIL || rc == SASL_NOMEM || rc == SASL_TRYAGAIN || rc == SASL_UNAVAIL; }

}  // namespace

common::Status Sasl::init(AuthCore& core) {
  g_core = &core;
  g_mech_list = common::join(core.settings().mechanisms, " ");
  sasl_set_mutex(mutex_alloc, mutex_lock, mutex_unlock, mutex_free);
  int rc = sasl_auxprop_add_plugin("tern", auxprop_init);
  if (rc != SASL_OK) return make_error(ErrorKind::kTemp, std::string("sasl_auxprop_add_plugin: ") + sasl_errstring(rc, nullptr, nullptr));
  rc = sasl_server_init(g_callbacks, "tern");
  if (rc != SASL_OK) return make_error(ErrorKind::kTemp, std::string("sasl_server_init: ") + sasl_errstring(rc, nullptr, nullptr));
  std::vector<std::string> have = available(core);
  std::vector<std::string> missing;
  for (const std::string& m : core.settings().mechanisms) {
    bool found = false;
    for (const std::string& h : have) found = found || h == m;
    if (!found) missing.push_back(m);
  }
  if (!missing.empty()) {
    return make_error(ErrorKind::kConfig, "auth_mechanisms: Cyrus SASL has no plugin for " + common::join(missing, ", ") +
                                              " (install libsasl2-modules)");
  }
  return {};
}

std::vector<std::string> Sasl::available(const AuthCore& core) {
  std::vector<std::string> out;
  const char** list = sasl_global_listmech();
  for (const std::string& want : core.settings().mechanisms) {
    for (const char** p = list; p && *p; ++p) {
      if (want == *p) out.push_back(want);
    }
  }
  return out;
}

void Sasl::done() { sasl_done(); }

std::string sasl_endpoint(std::string_view ip, std::string_view port) {
  if (ip.empty() || ip.size() >= INET6_ADDRSTRLEN) return "";
  const std::string addr(ip);
  unsigned char buf[sizeof(in6_addr)];
  if (::inet_pton(AF_INET, addr.c_str(), buf) != 1 && ::inet_pton(AF_INET6, addr.c_str(), buf) != 1) return "";
  if (port.empty()) return addr + ";0";
  std::optional<uint64_t> p = common::parse_u64(port);
  if (!p || *p > 65535) return "";
  return addr + ";" + std::to_string(*p);
}

common::Result<std::unique_ptr<SaslRequest>> SaslRequest::create(AuthCore& core, const Params& params) {
  std::unique_ptr<SaslRequest> r(new SaslRequest(core, params));
  r->callbacks_ = {
      {SASL_CB_SERVER_USERDB_CHECKPASS, cb_cast(checkpass), r.get()},
      {SASL_CB_CANON_USER, cb_cast(canon_user), r.get()},
      {SASL_CB_LIST_END, nullptr, nullptr},
  };
  const unsigned flags = params.final_resp_ok ? SASL_SUCCESS_DATA : 0;
  std::string local = sasl_endpoint(params.lip, params.lport);
  std::string remote = sasl_endpoint(params.rip, params.rport);
  int rc = sasl_server_new(params.service.c_str(), nullptr, nullptr, local.empty() ? nullptr : local.c_str(),
                           remote.empty() ? nullptr : remote.c_str(), r->callbacks_.data(), flags, &r->conn_);
  if (rc != SASL_OK) {
    // A malformed lip/rip makes Cyrus refuse the addresses; they are only for its
    // logs and some mechanisms' bindings, so try again without them.
    rc = sasl_server_new(params.service.c_str(), nullptr, nullptr, nullptr, nullptr, r->callbacks_.data(), flags, &r->conn_);
  }
  if (rc != SASL_OK) return make_error(ErrorKind::kTemp, std::string("sasl_server_new: ") + sasl_errstring(rc, nullptr, nullptr));
  // Plaintext policy is decided by the protocol layer (disable_plaintext_auth and
  // the secured flag); Cyrus gets no security-layer requirements.
  sasl_security_properties_t props{};
  props.max_ssf = 0;
  props.maxbufsize = 0;
  props.security_flags = 0;
  sasl_setprop(r->conn_, SASL_SEC_PROPS, &props);
  return r;
}

SaslRequest::~SaslRequest() {
  if (conn_) sasl_dispose(&conn_);
}

int SaslRequest::canon_user(sasl_conn_t*, void* context, const char* in, unsigned inlen, unsigned, const char*,
                            char* out, unsigned out_max, unsigned* out_len) {
  auto* self = static_cast<SaslRequest*>(context);
  common::Result<std::string> c = self->core_.canonical(std::string(in, inlen));
  if (!c) {
    self->last_user_ = common::log_escape(std::string_view(in, inlen), 64);
    return SASL_BADAUTH;
  }
  if (c->size() >= out_max) return SASL_BUFOVER;
  std::memcpy(out, c->data(), c->size());
  out[c->size()] = '\0';
  *out_len = static_cast<unsigned>(c->size());
  self->last_user_ = *c;
  return SASL_OK;
}

int SaslRequest::checkpass(sasl_conn_t*, void* context, const char* user, const char* pass, unsigned passlen,
                           struct propctx*) {
  auto* self = static_cast<SaslRequest*>(context);
  std::string password(pass, passlen);
  self->check_ = self->core_.verify_plain(user, password, self->params_.service, self->params_.rip);
  std::memset(password.data(), 0, password.size());
  self->checked_ = true;
  switch (self->check_.status) {
    case PassCheck::Status::kOk: return SASL_OK;
    case PassCheck::Status::kMismatch: return SASL_BADAUTH;
    case PassCheck::Status::kUnknown: return SASL_NOUSER;
    case PassCheck::Status::kDisabled: return SASL_DISABLED;
    case PassCheck::Status::kTemp: return SASL_UNAVAIL;
  }
  return SASL_FAIL;
}

SaslRequest::Step SaslRequest::outcome(int rc, const char* out, unsigned outlen) {
  Step s;
  s.user = last_user_;
  if (out && outlen) s.data.assign(out, outlen);
  if (rc == SASL_CONTINUE) {
    s.outcome = Outcome::kContinue;
    return s;
  }
  if (rc == SASL_OK) {
    const void* u = nullptr;
    if (sasl_getprop(conn_, SASL_USERNAME, &u) == SASL_OK && u) s.user = static_cast<const char*>(u);
    s.outcome = Outcome::kOk;
    s.passdb = checked_ ? check_.passdb : "lmdb";
    return s;
  }
  s.passdb = checked_ ? check_.passdb : "lmdb";
  if (checked_) {
    // The plaintext check decided; its reason is the precise one.
    if (!check_.user.empty()) s.user = check_.user;
    switch (check_.status) {
      case PassCheck::Status::kMismatch: s.reason = "Password mismatch"; break;
      case PassCheck::Status::kUnknown: s.reason = "unknown user"; break;
      case PassCheck::Status::kDisabled: s.reason = "user disabled"; break;
      case PassCheck::Status::kTemp: s.reason = "temporary failure: " + check_.detail; break;
      case PassCheck::Status::kOk: s.reason = std::string("refused after password check: ") + sasl_errstring(rc, nullptr, nullptr); break;
    }
    s.outcome = check_.status == PassCheck::Status::kTemp ? Outcome::kTemp : Outcome::kFail;
    return s;
  }
  if (mech_.rfind("SCRAM-", 0) == 0 && !last_user_.empty()) {
    // A user whose password was set with auth_scram_secrets = no has no secret for
    // SCRAM to check against; say so rather than "unknown user".
    std::optional<AuthCore::Secrets> have = core_.secrets(last_user_);
    if (have && have->scram.empty()) {
      s.reason = "no SCRAM secret stored for this user (its password was set with auth_scram_secrets = no)";
      s.outcome = Outcome::kFail;
      return s;
    }
  }
  if (rc == SASL_NOUSER) s.reason = "unknown user";
  else if (rc == SASL_BADPROT) s.reason = "invalid credentials";  // SCRAM's proof mismatch is reported so
  else if (rc == SASL_BADAUTH) s.reason = "Password mismatch";
  else {
    const char* detail = sasl_errdetail(conn_);
    s.reason = std::string("invalid credentials (") + common::log_escape(detail ? detail : sasl_errstring(rc, nullptr, nullptr), 120) + ")";
  }
  s.outcome = is_temp(rc) ? Outcome::kTemp : Outcome::kFail;
  return s;
}

SaslRequest::Step SaslRequest::start(const std::string& mech, const std::string* initial) {
  mech_ = mech;
  // Cyrus's LOGIN takes a non-empty initial response as the user name.
  if (mech == "LOGIN" && initial && !initial->empty()) login_user_ = *initial;
  const char* out = nullptr;
  unsigned outlen = 0;
  int rc = sasl_server_start(conn_, mech.c_str(), initial ? initial->data() : nullptr,
                             initial ? static_cast<unsigned>(initial->size()) : 0, &out, &outlen);
  return outcome(rc, out, outlen);
}

SaslRequest::Step SaslRequest::step(const std::string& response) {
  if (mech_ == "LOGIN") {
    if (!login_user_) {
      login_user_ = response;
    } else if (!core_.canonical(*login_user_)) {
      // Cyrus's LOGIN leaks its copy of the password (16 bytes + its length) when
      // canon_user refuses the name at the password step (found by the
      // auth_client_session fuzz target, a user name with a NUL in it): refuse such
      // a name here, with the answer Cyrus would give, without handing it the password.
      last_user_ = common::log_escape(*login_user_, 64);
      Step refused = outcome(SASL_BADAUTH, nullptr, 0);
      refused.reason = "invalid user name";
      return refused;
    }
  }
  const char* out = nullptr;
  unsigned outlen = 0;
  int rc = sasl_server_step(conn_, response.data(), static_cast<unsigned>(response.size()), &out, &outlen);
  return outcome(rc, out, outlen);
}

}  // namespace tern::authd
