#include "mta/transport_smtp.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/smtp_command.h"
#include "common/text.h"
#include "mta/queue_store.h"
#include "mta/smtp_client_mime.h"

namespace tern::mta {

using common::Result;
using common::smtp::Reply;

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string dsn_of(const Reply& r) {
  if (common::smtp::valid_enhanced(r.enhanced, r.code)) return r.enhanced;
  return std::string(1, static_cast<char>('0' + std::clamp(r.code / 100, 2, 5))) + ".0.0";
}

std::string notify_text(uint8_t bits) {
  if (bits == 0) return "";
  if (bits & kNotifyNever) return "NEVER";
  std::vector<std::string> v;
  if (bits & kNotifySuccess) v.push_back("SUCCESS");
  if (bits & kNotifyFailure) v.push_back("FAILURE");
  if (bits & kNotifyDelay) v.push_back("DELAY");
  return common::join(v, ",");
}

// ORCPT as RFC 3461 4.2 wants it on the wire: "rfc822;" and the address in xtext.
// Other address types (RFC 6533 utf-8) are not passed on: a server without
// SMTPUTF8 could not take them, and the DSN we would send ourselves has them anyway.
std::string orcpt_param(const std::string& stored) {
  size_t semi = stored.find(';');
  if (semi == std::string::npos || !common::iequals(stored.substr(0, semi), "rfc822")) return "";
  std::string addr = stored.substr(semi + 1);
  if (has_8bit(addr)) return "";
  return "rfc822;" + common::smtp::xtext_encode(addr);
}

std::vector<SmtpResult> all_same(size_t n, char status, const std::string& dsn, const std::string& text) {
  SmtpResult r;
  r.status = status;
  r.dsn = dsn;
  r.text = text;
  return std::vector<SmtpResult>(n, r);
}

}  // namespace

Result<SmtpTransportSettings> SmtpTransportSettings::from_config(const common::Config& cfg) {
  SmtpTransportSettings s;
  auto ms = [&](const char* key) { return static_cast<uint64_t>(cfg.seconds(key)) * 1000; };
  s.timeouts.connect_ms = ms("smtp_connect_timeout");
  s.timeouts.helo_ms = ms("smtp_helo_timeout");
  s.timeouts.starttls_ms = ms("smtp_starttls_timeout");
  s.timeouts.mail_ms = ms("smtp_mail_timeout");
  s.timeouts.rcpt_ms = ms("smtp_rcpt_timeout");
  s.timeouts.data_init_ms = ms("smtp_data_init_timeout");
  s.timeouts.data_xfer_ms = ms("smtp_data_xfer_timeout");
  s.timeouts.data_done_ms = ms("smtp_data_done_timeout");
  s.timeouts.quit_ms = ms("smtp_quit_timeout");
  s.helo_name = cfg.str("smtp_helo_name");
  if (!common::dns::valid_hostname(s.helo_name)) {
    return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtp_helo_name") + ": smtp_helo_name: '" +
                                                              common::log_escape(s.helo_name, 100) +
                                                              "' is not a valid host name");
  }
  Result<TlsPolicy> tls = parse_tls_policy(cfg.str("smtp_tls_security_level"));
  if (!tls) return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtp_tls_security_level") + ": " + tls.error().message);
  s.tls = *tls;
  s.wrapper_mode = cfg.boolean("smtp_tls_wrappermode");
  s.ca_file = cfg.str("smtp_tls_CAfile");
  for (const std::string& k : cfg.list("smtp_discard_ehlo_keywords")) s.discard_ehlo.insert(common::to_lower(k));
  s.bind4 = cfg.str("smtp_bind_address");
  s.bind6 = cfg.str("smtp_bind_address6");
  const std::string relay = cfg.str("relayhost");
  if (!common::trim(relay).empty()) {
    Result<NextHop> hop = parse_nexthop(relay);
    if (!hop) return common::make_error(common::ErrorKind::kConfig, cfg.origin("relayhost") + ": relayhost: " + hop.error().message);
    s.relayhost = *hop;
  }
  s.dest_concurrency = static_cast<size_t>(cfg.integer("smtp_destination_concurrency_limit"));
  s.total_concurrency = static_cast<size_t>(cfg.integer("default_process_limit"));
  s.rcpt_limit = static_cast<size_t>(cfg.integer("smtp_destination_recipient_limit"));
  s.mx_session_limit = static_cast<size_t>(cfg.integer("smtp_mx_session_limit"));
  s.mx_address_limit = static_cast<size_t>(cfg.integer("smtp_mx_address_limit"));
  s.cache_time_ms = ms("smtp_connection_cache_time_limit");
  s.reuse_time_ms = ms("smtp_connection_reuse_time_limit");
  s.sasl = cfg.boolean("smtp_sasl_auth_enable");
  s.sasl_password_maps = cfg.list("smtp_sasl_password_maps");
  auto noplaintext = [&](const char* key) {
    std::vector<std::string> opts = cfg.list(key);
    return std::any_of(opts.begin(), opts.end(), [](const std::string& o) { return common::iequals(o, "noplaintext"); });
  };
  s.sasl_plaintext = !noplaintext("smtp_sasl_security_options");
  s.sasl_tls_plaintext = !noplaintext("smtp_sasl_tls_security_options");
  for (const std::string& m : cfg.list("smtp_sasl_mechanism_filter")) {
    std::string u = m;
    for (char& c : u) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (u != "PLAIN" && u != "LOGIN") {
      return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtp_sasl_mechanism_filter") +
                                                                ": smtp_sasl_mechanism_filter: " + common::log_escape(m, 40) +
                                                                " is not a mechanism Tern's SMTP client has (plain, login)");
    }
    s.sasl_mechanisms.push_back(u);
  }
  if (s.sasl && s.sasl_password_maps.empty()) {
    return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtp_sasl_auth_enable") +
                                                              ": smtp_sasl_auth_enable = yes needs smtp_sasl_password_maps");
  }
  s.myhostname = cfg.str("myhostname");
  std::vector<std::string> protos = cfg.list("inet_protocols");
  bool all = protos.empty() || std::find(protos.begin(), protos.end(), "all") != protos.end();
  s.ipv4 = all || std::find(protos.begin(), protos.end(), "ipv4") != protos.end();
  s.ipv6 = all || std::find(protos.begin(), protos.end(), "ipv6") != protos.end();
  return s;
}

struct SmtpTransport::Dest {
  std::string key;
  NextHop hop;
  std::deque<Pending> queue;
  size_t connections = 0;  // attempts and open connections: what the concurrency limit counts
  struct Conn {
    std::shared_ptr<SmtpClientConn> conn;
    std::shared_ptr<Attempt> attempt;     // while it is being set up
    std::optional<Pending> job;           // the message it is sending
    double conn_seconds = 0;              // setup time, charged to its first message
    std::unique_ptr<common::ev::Timer> idle;  // parked: QUIT when this fires
  };
  std::map<SmtpClientConn*, Conn> conns;
};

struct SmtpTransport::Attempt {
  std::string key;
  NextHop hop;
  Pending p;
  Route route;
  size_t next = 0;             // the target being tried
  size_t sessions = 0;         // targets that greeted us (smtp_mx_session_limit)
  bool plaintext = false;      // retrying the current target without TLS
  ConnectFailure last{.dsn = "4.4.1", .text = "no address to try"};
};

Result<std::unique_ptr<SmtpTransport>> SmtpTransport::create(common::ev::Loop& loop, SmtpTransportSettings s,
                                                             common::dns::Resolver* resolver, BodyReader bodies) {
  std::unique_ptr<SmtpTransport> t(new SmtpTransport(loop, std::move(s), resolver, std::move(bodies)));
  const SmtpTransportSettings& st = t->s_;
  const bool implicit = st.wrapper_mode || (st.relayhost && st.relayhost->port == 465);
  if (st.tls != TlsPolicy::kNone || implicit) {
    Result<std::shared_ptr<common::tls::Context>> c = common::tls::Context::client(st.tls == TlsPolicy::kVerify, st.ca_file);
    if (!c) return common::make_error(common::ErrorKind::kConfig, "SMTP client TLS: " + c.error().message);
    t->tls_ = std::move(c).value();
  }
  for (const std::string& spec : st.sasl_password_maps) {
    Result<std::unique_ptr<common::Map>> m = common::Map::open(spec, common::MapSyntax::kPostmap);
    if (!m) return common::make_error(common::ErrorKind::kConfig, "smtp_sasl_password_maps: " + m.error().message);
    t->password_maps_.push_back(std::move(m).value());
  }
  return t;
}

SmtpTransport::SmtpTransport(common::ev::Loop& loop, SmtpTransportSettings s, common::dns::Resolver* resolver,
                             BodyReader bodies)
    : loop_(loop), s_(std::move(s)), bodies_(std::move(bodies)) {
  Router::Options ro;
  ro.myhostname = s_.myhostname;
  ro.ipv4 = s_.ipv4;
  ro.ipv6 = s_.ipv6;
  ro.address_limit = s_.mx_address_limit;
  router_ = std::make_unique<Router>(loop, resolver, ro);
}

SmtpTransport::~SmtpTransport() {
  *alive_ = false;
  stop();
}

Result<NextHop> SmtpTransport::nexthop(const std::string& domain) const {
  if (s_.relayhost) return *s_.relayhost;
  return nexthop_for_domain(domain);
}

SmtpTransport::Dest& SmtpTransport::dest(const NextHop& hop) {
  const std::string key = hop.key();
  auto it = dests_.find(key);
  if (it == dests_.end()) {
    auto d = std::make_unique<Dest>();
    d->key = key;
    d->hop = hop;
    it = dests_.emplace(key, std::move(d)).first;
  }
  return *it->second;
}

void SmtpTransport::maybe_erase(const std::string& key) {
  auto it = dests_.find(key);
  if (it == dests_.end()) return;
  const Dest& d = *it->second;
  if (d.queue.empty() && d.connections == 0 && d.conns.empty()) {
    waiting_.erase(key);
    dests_.erase(it);
  }
}

void SmtpTransport::submit(SmtpJob job, Done done) {
  if (stopping_) return;
  Dest& d = dest(job.hop);
  d.queue.push_back(Pending{std::move(job), std::move(done)});
  dispatch(d);
}

void SmtpTransport::dispatch(Dest& d) {
  while (!d.queue.empty() && !stopping_) {
    // A parked connection first: no new handshake.
    Dest::Conn* idle = nullptr;
    for (auto& [ptr, c] : d.conns) {
      if (c.idle && !c.job && !c.attempt) {
        idle = &c;
        break;
      }
    }
    if (idle) {
      idle->idle.reset();
      Pending p = std::move(d.queue.front());
      d.queue.pop_front();
      run(d, idle->conn, std::move(p), 0);
      continue;
    }
    if (d.connections < s_.dest_concurrency && total_ < s_.total_concurrency) {
      Pending p = std::move(d.queue.front());
      d.queue.pop_front();
      start_attempt(d, std::move(p));
      continue;
    }
    waiting_.insert(d.key);
    return;
  }
  waiting_.erase(d.key);
}

void SmtpTransport::dispatch_waiting() {
  std::vector<std::string> keys(waiting_.begin(), waiting_.end());
  for (const std::string& k : keys) {
    if (total_ >= s_.total_concurrency || stopping_) return;
    auto it = dests_.find(k);
    if (it == dests_.end()) {
      waiting_.erase(k);
      continue;
    }
    dispatch(*it->second);
  }
}

void SmtpTransport::start_attempt(Dest& d, Pending p) {
  auto a = std::make_shared<Attempt>();
  a->key = d.key;
  a->hop = d.hop;
  a->p = std::move(p);
  ++d.connections;
  ++total_;
  std::weak_ptr<bool> alive = alive_;
  router_->route(d.hop, [this, alive, a](Route r) {
    if (alive.expired() || stopping_) return;
    a->route = std::move(r);
    if (a->route.kind != Route::Kind::kOk) {
      attempt_failed(a, a->route.dsn, a->route.text, a->route.kind == Route::Kind::kPerm);
      return;
    }
    try_target(a);
  });
}

std::optional<std::pair<std::string, std::string>> SmtpTransport::credentials(const NextHop& hop,
                                                                              const std::string& host) const {
  if (!s_.sasl) return std::nullopt;
  // Postfix looks up the next hop as relayhost names it, then the server's name.
  std::vector<std::string> keys = {hop.key()};
  if (hop.no_mx) keys.push_back("[" + hop.host + "]");
  keys.push_back(hop.host);
  keys.push_back(host);
  for (const auto& m : password_maps_) {
    for (const std::string& k : keys) {
      Result<std::optional<std::string>> v = m->lookup(k);
      if (!v) {
        common::log::warning("smtp: %s: %s", m->spec().c_str(), v.error().message.c_str());
        continue;
      }
      if (*v) {
        const std::string& up = **v;
        size_t colon = up.find(':');
        if (colon == std::string::npos) {
          common::log::warning("smtp: %s: the entry for %s is not user:password", m->spec().c_str(), k.c_str());
          return std::nullopt;
        }
        return std::make_pair(up.substr(0, colon), up.substr(colon + 1));
      }
    }
  }
  return std::nullopt;
}

SmtpClientOptions SmtpTransport::options_for(const NextHop& hop, bool plaintext) const {
  SmtpClientOptions o;
  o.timeouts = s_.timeouts;
  o.bind4 = s_.bind4;
  o.bind6 = s_.bind6;
  o.tls = tls_;
  o.session.helo_name = s_.helo_name;
  o.session.tls = plaintext ? TlsPolicy::kNone : s_.tls;
  // Implicit TLS (RFC 8314): smtp_tls_wrappermode, or a next hop on port 465, where
  // nothing else is spoken.
  o.session.tls_on_connect = s_.wrapper_mode || hop.port == 465;
  o.session.discard_ehlo = s_.discard_ehlo;
  o.session.plaintext_auth_without_tls = s_.sasl_plaintext;
  o.session.plaintext_auth_with_tls = s_.sasl_tls_plaintext;
  o.session.mechanism_filter = s_.sasl_mechanisms;
  return o;
}

void SmtpTransport::try_target(std::shared_ptr<Attempt> a) {
  auto it = dests_.find(a->key);
  if (it == dests_.end()) return;
  Dest& d = *it->second;
  const std::vector<Target>& targets = a->route.targets;
  if (a->next >= targets.size() || (s_.mx_session_limit > 0 && a->sessions >= s_.mx_session_limit)) {
    attempt_failed(a, a->last.dsn, a->last.text, a->last.permanent, a->last.relay);
    return;
  }
  const Target& t = targets[a->next];
  SmtpClientOptions o = options_for(a->hop, a->plaintext);
  if (auto cred = credentials(a->hop, t.host)) {
    o.session.auth = true;
    o.session.user = cred->first;
    o.session.password = cred->second;
  }
  const std::string key = a->key;
  std::weak_ptr<bool> alive = alive_;
  SmtpClientConn::Events ev;
  ev.ready = [this, alive, key](SmtpClientConn& c) {
    if (alive.expired() || stopping_) return;
    conn_ready(key, c);
  };
  ev.done = [this, alive, key](SmtpClientConn& c, TransactionOutcome o) {
    if (alive.expired() || stopping_) return;
    auto dit = dests_.find(key);
    if (dit == dests_.end()) return;
    auto cit = dit->second->conns.find(&c);
    if (cit == dit->second->conns.end() || !cit->second.job) return;
    Pending p = std::move(*cit->second.job);
    cit->second.job.reset();
    const double conn_s = cit->second.conn_seconds;
    cit->second.conn_seconds = 0;
    std::vector<SmtpResult> out;
    for (size_t i = 0; i < p.job.rcpts.size(); ++i) {
      SmtpResult r;
      r.relay = c.relay();
      r.remote_mta = c.target().host;
      r.conn_seconds = conn_s;
      r.xfer_seconds = o.seconds;
      const RecipientReply rr = i < o.replies.size() ? o.replies[i] : RecipientReply{Reply(451, "4.5.0", "no reply"), ""};
      const Reply& rep = rr.reply;
      r.status = rep.positive() ? 's' : rep.permanent() ? 'b' : 'd';
      r.dsn = dsn_of(rep);
      if (rr.stage.empty()) {
        r.text = common::join(rep.lines, " ");
      } else if (rep.positive()) {
        r.text = rep.summary();
        r.diagnostic = rep.summary();
      } else {
        r.text = "host " + c.peer() + " said: " + rep.summary() + " (in reply to " + rr.stage + " command)";
        r.diagnostic = rep.summary();
      }
      r.dsn_passed = rep.positive() && c.caps().dsn;
      out.push_back(std::move(r));
    }
    p.done(std::move(out));
  };
  ev.failed = [this, alive, key, a](SmtpClientConn& c, const ConnectFailure& f) {
    if (alive.expired() || stopping_) return;
    auto dit = dests_.find(key);
    if (dit != dests_.end()) dit->second->conns.erase(&c);
    if (f.greeted) ++a->sessions;
    a->last = f;
    if (f.tls_failed && s_.tls == TlsPolicy::kMay && !a->plaintext && !(s_.wrapper_mode || a->hop.port == 465)) {
      // Opportunistic TLS that fails is no reason not to deliver: the same host
      // again, in plaintext (Postfix does this too).
      common::log::logf(common::log::Level::kWarning, "smtp", "%s; trying %s again without TLS", f.text.c_str(),
                        c.relay().c_str());
      a->plaintext = true;
      try_target(a);
      return;
    }
    a->plaintext = false;
    if (f.permanent || !f.next_host) {
      attempt_failed(a, f.dsn, f.text, f.permanent, f.relay);
      return;
    }
    ++a->next;
    try_target(a);
  };
  ev.closed = [this, alive, key](SmtpClientConn& c) {
    if (alive.expired() || stopping_) return;
    conn_gone(key, &c);
  };
  std::shared_ptr<SmtpClientConn> c = SmtpClientConn::open(loop_, std::move(o), t, std::move(ev));
  // open() reports nothing synchronously: connect results come from the loop.
  Dest::Conn& slot = d.conns[c.get()];
  slot.conn = c;
  slot.attempt = a;
}

void SmtpTransport::attempt_failed(std::shared_ptr<Attempt> a, const std::string& dsn, const std::string& text,
                                   bool permanent, const std::string& relay) {
  const char status = permanent ? 'b' : 'd';
  Done done = std::move(a->p.done);
  const size_t n = a->p.job.rcpts.size();
  auto it = dests_.find(a->key);
  std::vector<Pending> suspended;
  if (it != dests_.end()) {
    Dest& d = *it->second;
    --d.connections;
    --total_;
    // Nothing else is getting through to this destination: what waits for it
    // would fail the same way, so it hears now (Postfix: "delivery temporarily
    // suspended"), and the scheduler's backoff spaces out the next tries.
    if (d.connections == 0) {
      while (!d.queue.empty()) {
        suspended.push_back(std::move(d.queue.front()));
        d.queue.pop_front();
      }
      waiting_.erase(d.key);
    }
  } else {
    --total_;
  }
  std::vector<SmtpResult> res = all_same(n, status, dsn, text);
  if (!relay.empty()) {
    for (SmtpResult& r : res) r.relay = relay;
  }
  done(std::move(res));
  for (Pending& p : suspended) {
    p.done(all_same(p.job.rcpts.size(), status, dsn, permanent ? text : "delivery temporarily suspended: " + text));
  }
  const std::string key = a->key;
  dispatch_waiting();
  maybe_erase(key);
}

void SmtpTransport::run(Dest& d, std::shared_ptr<SmtpClientConn> c, Pending p, double conn_seconds) {
  auto cit = d.conns.find(c.get());
  if (cit == d.conns.end()) return;
  const size_t n = p.job.rcpts.size();
  const std::string relay = c->relay();
  const Capabilities& caps = c->caps();
  // Problems with this message alone; the connection stays ready for the next.
  auto local_outcome = [&](char status, const std::string& dsn, const std::string& text) {
    std::vector<SmtpResult> res = all_same(n, status, dsn, text);
    for (SmtpResult& r : res) r.relay = relay;
    Done done = std::move(p.done);
    // The connection's next job is chosen from the loop, not from inside this call.
    std::weak_ptr<bool> alive = alive_;
    const std::string key = d.key;
    std::weak_ptr<SmtpClientConn> wc = c;
    loop_.post([this, alive, key, wc] {
      auto conn = wc.lock();
      if (alive.expired() || stopping_ || !conn) return;
      conn_ready(key, *conn);
    });
    done(std::move(res));
  };
  Result<QueuedBody> body = bodies_(p.job.queue_id);
  if (!body) return local_outcome('d', "4.3.0", "cannot read queued message: " + body.error().message);
  auto msg = std::make_unique<OutboundMessage>();
  std::vector<std::string> addrs;
  for (const SmtpJobRecipient& r : p.job.rcpts) addrs.push_back(r.address);
  // The header section, for the SMTPUTF8 question (a large body is read from its file).
  std::string head;
  if (body->fd) {
    head.resize(static_cast<size_t>(std::min<uint64_t>(body->size, 1 << 20)));
    ssize_t got = ::pread(body->fd.get(), head.data(), head.size(), 0);
    head.resize(got > 0 ? static_cast<size_t>(got) : 0);
    head = std::string(message_headers(head));
  }
  std::string_view headers = body->fd ? std::string_view(head) : message_headers(body->data);
  const bool utf8 = p.job.smtputf8 && needs_smtputf8(p.job.sender, addrs, headers);
  if (utf8 && !caps.smtputf8) {
    return local_outcome('b', "5.6.7", "SMTPUTF8 is required, but was not offered by host " + c->peer());
  }
  if (caps.size && caps.size_limit > 0 && body->size > caps.size_limit) {
    return local_outcome('b', "5.3.4", "message size " + std::to_string(body->size) + " exceeds size limit " +
                                           std::to_string(caps.size_limit) + " of server " + c->peer());
  }
  bool eightbit = p.job.body_8bit;
  if (!caps.eightbitmime) {
    // RFC 6152 3: no 8-bit bytes to a server that did not say 8BITMIME.
    if (body->fd) {
      std::string all(static_cast<size_t>(body->size), '\0');
      ssize_t got = all.empty() ? 0 : ::pread(body->fd.get(), all.data(), all.size(), 0);
      if (got != static_cast<ssize_t>(all.size())) {
        return local_outcome('d', "4.3.0", "cannot read queued message: " +
                                               std::string(got < 0 ? std::strerror(errno) : "short read"));
      }
      body->data = std::move(all);
      body->fd.reset();
    }
    if (has_8bit(body->data)) {
      Result<std::string> seven = downgrade_8bit(body->data);
      if (!seven) {
        return local_outcome('b', "5.6.3", "Conversion to 7 bits failed: " + seven.error().message + "; host " + relay +
                                               " does not support 8BITMIME");
      }
      body->data = std::move(seven).value();
    }
    eightbit = false;
  }
  Transaction& tx = msg->tx;
  tx.sender = p.job.sender;
  tx.eightbit = eightbit;
  tx.smtputf8 = utf8;
  tx.ret = p.job.ret;
  tx.envid = p.job.envid.empty() ? "" : common::smtp::xtext_encode(p.job.envid);
  for (const SmtpJobRecipient& r : p.job.rcpts) tx.rcpts.push_back({r.address, notify_text(r.notify), orcpt_param(r.orcpt)});
  if (body->fd) {
    msg->fd = std::move(body->fd);
    msg->fd_size = body->size;
  } else {
    msg->data = std::move(body->data);
  }
  cit->second.job = std::move(p);
  cit->second.conn_seconds = conn_seconds;
  c->send(std::move(msg));
}

void SmtpTransport::conn_ready(const std::string& key, SmtpClientConn& c) {
  auto dit = dests_.find(key);
  if (dit == dests_.end()) return;
  Dest& d = *dit->second;
  auto cit = d.conns.find(&c);
  if (cit == d.conns.end()) return;
  Dest::Conn& slot = cit->second;
  if (slot.job) return;  // still sending (a local outcome's deferred call raced a send)
  if (slot.attempt) {
    std::shared_ptr<Attempt> a = std::move(slot.attempt);
    slot.attempt.reset();
    run(d, slot.conn, std::move(a->p), c.setup_seconds());
    return;
  }
  const double age_ms = since(c.opened()) * 1000;
  if (!d.queue.empty() && age_ms < static_cast<double>(s_.reuse_time_ms)) {
    Pending p = std::move(d.queue.front());
    d.queue.pop_front();
    if (d.queue.empty()) waiting_.erase(d.key);
    run(d, slot.conn, std::move(p), 0);
    return;
  }
  if (s_.cache_time_ms == 0 || age_ms >= static_cast<double>(s_.reuse_time_ms)) {
    c.quit();
    return;
  }
  park(d, slot.conn);
}

void SmtpTransport::park(Dest& d, std::shared_ptr<SmtpClientConn> c) {
  auto cit = d.conns.find(c.get());
  if (cit == d.conns.end()) return;
  auto timer = std::make_unique<common::ev::Timer>(loop_);
  std::weak_ptr<SmtpClientConn> wc = c;
  timer->start(s_.cache_time_ms, [wc] {
    if (auto conn = wc.lock()) conn->quit();
  });
  cit->second.idle = std::move(timer);
}

void SmtpTransport::conn_gone(const std::string& key, SmtpClientConn* c) {
  auto dit = dests_.find(key);
  if (dit == dests_.end()) return;
  Dest& d = *dit->second;
  auto cit = d.conns.find(c);
  if (cit != d.conns.end()) {
    if (cit->second.job) {
      Pending p = std::move(*cit->second.job);
      p.done(all_same(p.job.rcpts.size(), 'd', "4.4.2", "lost connection with " + c->relay()));
    }
    d.conns.erase(cit);
    --d.connections;
    --total_;
  }
  dispatch(d);
  dispatch_waiting();
  maybe_erase(key);
}

void SmtpTransport::stop() {
  if (stopping_) return;
  stopping_ = true;
  std::vector<std::shared_ptr<SmtpClientConn>> all;
  for (auto& [k, d] : dests_) {
    for (auto& [p, c] : d->conns) all.push_back(c.conn);
  }
  for (auto& c : all) c->abort();
  dests_.clear();
  waiting_.clear();
}

}  // namespace tern::mta
