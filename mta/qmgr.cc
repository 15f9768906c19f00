#include "mta/qmgr.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <utility>

#include "common/fault.h"
#include "common/log.h"
#include "common/maillog.h"
#include "common/text.h"
#include "mta/bounce.h"
#include "mta/cleanup.h"
#include "mta/lmtp_client.h"
#include "mta/local_delivery.h"

namespace tern::mta {

using common::Result;
using common::Status;
namespace maillog = common::maillog;

Result<QmgrSettings> QmgrSettings::from_config(const common::Config& cfg) {
  QmgrSettings s;
  s.myhostname = cfg.str("myhostname");
  s.mail_name = cfg.str("mail_name");
  std::string dest = cfg.str("lmtp_destination");
  if (dest.rfind("unix:", 0) != 0 || dest.size() < 7 || dest[5] != '/') {
    return common::make_error(common::ErrorKind::kConfig, cfg.origin("lmtp_destination") +
                                                              ": lmtp_destination: expected unix:/path/to/socket");
  }
  s.lmtp_socket = dest.substr(5);
  s.queue_run_delay_s = static_cast<uint64_t>(cfg.seconds("queue_run_delay"));
  s.minimal_backoff_s = static_cast<uint64_t>(cfg.seconds("minimal_backoff_time"));
  s.maximal_backoff_s = static_cast<uint64_t>(cfg.seconds("maximal_backoff_time"));
  s.maximal_queue_lifetime_s = static_cast<uint64_t>(cfg.seconds("maximal_queue_lifetime"));
  s.bounce_queue_lifetime_s = static_cast<uint64_t>(cfg.seconds("bounce_queue_lifetime"));
  s.delay_warning_s = static_cast<uint64_t>(cfg.seconds("delay_warning_time"));
  s.command_time_limit_s = static_cast<unsigned>(cfg.seconds("command_time_limit"));
  s.active_limit = static_cast<size_t>(cfg.integer("qmgr_message_active_limit"));
  s.lmtp_concurrency = static_cast<size_t>(cfg.integer("lmtp_destination_concurrency_limit"));
  s.lmtp_recipient_limit = static_cast<size_t>(cfg.integer("lmtp_destination_recipient_limit"));
  s.lmtp_connect_timeout_ms = static_cast<uint64_t>(cfg.seconds("lmtp_connect_timeout")) * 1000;
  s.lmtp_timeout_ms = static_cast<uint64_t>(cfg.seconds("lmtp_data_done_timeout")) * 1000;
  s.bounce_size_limit = static_cast<size_t>(cfg.integer("bounce_size_limit"));
  for (const std::string& c : cfg.list("notify_classes")) {
    const std::string k = common::to_lower(c);
    if (k == "bounce") {
      s.notify_bounce = true;
    } else if (k == "2bounce") {
      s.notify_2bounce = true;
    } else if (k == "delay") {
      s.notify_delay = true;
    } else if (k != "resource" && k != "software" && k != "policy" && k != "protocol" && k != "data") {
      return common::make_error(common::ErrorKind::kConfig,
                                cfg.origin("notify_classes") + ": notify_classes: unknown class '" +
                                    common::log_escape(c, 40) +
                                    "' (bounce, 2bounce, delay, resource, software, policy, protocol, data)");
    }
  }
  // A bare name is a local user: qualified with myorigin, as Postfix does.
  const std::string origin = cfg.str("myorigin");
  auto qualify = [&](const char* key) {
    std::string v(common::trim(cfg.str(key)));
    return v.find('@') == std::string::npos ? v + "@" + origin : v;
  };
  s.bounce_notice_recipient = qualify("bounce_notice_recipient");
  s.twobounce_notice_recipient = qualify("2bounce_notice_recipient");
  s.delay_notice_recipient = qualify("delay_notice_recipient");
  return s;
}

namespace {

int64_t now_s() { return static_cast<int64_t>(::time(nullptr)); }

double now_f() {
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

// "550 5.1.1 text" -> "5.1.1", else a default from the class.
std::string dsn_of(const std::string& reply, char cls) {
  std::vector<std::string> w = common::split_any(reply, " ");
  for (size_t i = 0; i < w.size() && i < 2; ++i) {
    const std::string& t = w[i];
    if (t.size() >= 5 && t[1] == '.' && (t[0] == '2' || t[0] == '4' || t[0] == '5')) return t;
  }
  return std::string(1, cls) + ".0.0";
}

// One recipient's outcome, from whichever transport.
struct Outcome {
  char status = 'd';       // 's' sent, 'd' deferred, 'b' bounced, 'x' expired
  std::string service;     // log service: lmtp, smtp, local, error, qmgr
  std::string relay = "none";
  std::string dsn;
  std::string text;
  std::string remote_mta, diagnostic;
  bool relayed = false;    // handed on to an SMTP server that does not report DSNs itself
  bool dsn_passed = false; // the server took NOTIFY/ORCPT: it reports from now on
  double conn_s = 0, xfer_s = 0;
};

struct Attempt {
  Envelope env;
  std::vector<size_t> touched;
  int outstanding = 1;
  double started = 0;
  bool expired = false;    // past its lifetime: what is deferred now is returned
};

}  // namespace

struct QueueManager::Notice {
  DsnInput::Kind kind = DsnInput::Kind::kFailure;
  std::vector<const Recipient*> rcpts;
  std::string to;             // envelope recipient and To:
  bool postmaster = false;    // a copy for the postmaster
  bool whole = false;         // return the whole original
};

QueueManager::QueueManager(common::ev::Loop& loop, QmgrSettings settings, QueueStore& queue, RecipientTables& tables,
                           std::unique_ptr<SmtpTransport> smtp)
    : loop_(loop), s_(std::move(settings)), queue_(queue), tables_(tables), smtp_(std::move(smtp)), timer_(loop) {}

QueueManager::~QueueManager() {
  *alive_ = false;
  if (smtp_) smtp_->stop();
}

void QueueManager::stop() {
  stopping_ = true;
  if (smtp_) smtp_->stop();
  // LMTP sessions still talking to tern-mda end now, while the loop can still
  // close their connections (they own themselves until their outcome).
  for (auto& w : std::exchange(lmtp_in_flight_, {})) {
    if (auto d = w.lock()) d->abandon();
  }
}

Status QueueManager::start() {
  std::vector<std::pair<std::string, int64_t>> found;
  Status st = queue_.for_each([&](const Envelope& e) {
    int64_t when = INT64_MAX;
    for (const Recipient& r : e.rcpts) {
      if (r.state == Recipient::State::kPending) when = std::min(when, r.next_attempt);
    }
    if (when != INT64_MAX && !e.hold) found.emplace_back(e.queue_id, when);
  });
  if (!st) return st;
  for (auto& [id, when] : found) schedule(id, when);
  if (!found.empty()) common::log::info("queue: %zu messages waiting", found.size());
  return {};
}

void QueueManager::notify(const std::string& queue_id) { schedule(queue_id, 0); }

void QueueManager::flush() {
  // Everything waiting is tried now, backoff or not (sendmail -q, postqueue -f).
  std::vector<std::string> ids;
  for (auto& [id, when] : scheduled_) ids.push_back(id);
  for (const std::string& id : ids) {
    forced_.insert(id);
    schedule(id, 0);
  }
  // A message being delivered right now is tried again as soon as this attempt
  // ends, if it leaves anything pending (commit() looks at forced_): a flush just
  // after a deferral was logged must not find it "in flight" and miss it.
  for (const std::string& id : active_) forced_.insert(id);
}

bool QueueManager::flush(const std::string& id) {
  if (active_.count(id)) {
    forced_.insert(id);  // tried again when this attempt ends (see flush())
    return true;
  }
  if (!scheduled_.count(id)) return false;
  forced_.insert(id);
  schedule(id, 0);
  return true;
}

void QueueManager::hold(const std::string& id, Done done) {
  // The hold flag is in the queue record: deliver() skips the message, and a
  // message being delivered now is not rescheduled after its attempt.
  std::weak_ptr<bool> alive = alive_;
  queue_.set_hold(id, true, [this, alive, id, done](Status st) {
    if (auto a = alive.lock(); a && *a && st) unschedule(id);
    done(std::move(st));
  });
}

void QueueManager::release(const std::string& id, Done done) {
  std::weak_ptr<bool> alive = alive_;
  queue_.set_hold(id, false, [this, alive, id, done](Status st) {
    if (auto a = alive.lock(); a && *a && st && !active_.count(id)) {
      forced_.insert(id);
      schedule(id, 0);
    }
    done(std::move(st));
  });
}

void QueueManager::remove(const std::string& id, Done done) {
  if (active_.count(id)) {
    // Its transports hold the body now; the record goes when the attempt ends.
    deleted_.insert(id);
    done({});
    return;
  }
  std::weak_ptr<bool> alive = alive_;
  queue_.remove(id, [this, alive, id, done](Status st) {
    if (auto a = alive.lock(); a && *a && st) {
      unschedule(id);
      maillog::removed(id);
    }
    done(std::move(st));
  });
}

void QueueManager::admin(const std::string& verb, const std::string& arg,
                         std::function<void(common::smtp::Reply)> done) {
  using common::smtp::Reply;
  std::vector<std::string> ids;
  if (arg == "ALL") {
    Status st = queue_.for_each([&](const Envelope& e) { ids.push_back(e.queue_id); });
    if (!st) return done(Reply(451, "4.3.0", "cannot read the queue: " + st.error().message));
  } else {
    // Queue ids are letters and digits (queue_id.h); anything else is not one.
    const bool ok = !arg.empty() && arg.size() <= 64 &&
                    std::all_of(arg.begin(), arg.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
    if (!ok) return done(Reply(501, "5.5.4", "bad queue id"));
    Result<Envelope> e = queue_.envelope(arg);
    if (!e) {
      return done(e.error().kind == common::ErrorKind::kNotFound ? Reply(550, "5.1.0", arg + ": no such message")
                                                                 : Reply(451, "4.3.0", e.error().message));
    }
    ids.push_back(arg);
  }
  if (verb == "FLUSH") {
    size_t n = 0;
    for (const std::string& id : ids) n += flush(id);
    return done(Reply(250, "2.0.0", "Queue flush started: " + std::to_string(n) + " message(s)"));
  }
  using Op = void (QueueManager::*)(const std::string&, Done);
  Op op = verb == "HOLD" ? &QueueManager::hold : verb == "RELEASE" ? &QueueManager::release
        : verb == "DELETE" ? &QueueManager::remove : nullptr;
  if (!op) return done(Reply(500, "5.5.2", "unknown queue command"));
  if (ids.empty()) return done(Reply(250, "2.0.0", "0 message(s)"));
  struct Count {
    size_t left = 0, ok = 0;
    std::string error;
  };
  auto c = std::make_shared<Count>();
  c->left = ids.size();
  const char* what = verb == "HOLD" ? "held" : verb == "RELEASE" ? "released" : "deleted";
  for (const std::string& id : ids) {
    (this->*op)(id, [c, done, what](Status st) {
      if (st) {
        ++c->ok;
      } else if (st.error().kind != common::ErrorKind::kNotFound) {
        c->error = st.error().message;
      }
      if (--c->left > 0) return;
      if (!c->error.empty()) return done(Reply(451, "4.3.0", c->error));
      done(Reply(250, "2.0.0", std::to_string(c->ok) + " message(s) " + what));
    });
  }
}

void QueueManager::unschedule(const std::string& id) {
  auto it = scheduled_.find(id);
  if (it == scheduled_.end()) return;
  auto range = due_.equal_range(it->second);
  for (auto d = range.first; d != range.second; ++d) {
    if (d->second == id) {
      due_.erase(d);
      break;
    }
  }
  scheduled_.erase(it);
  forced_.erase(id);
}

void QueueManager::schedule(const std::string& id, int64_t when) {
  auto it = scheduled_.find(id);
  if (it != scheduled_.end()) {
    if (it->second <= when) return;
    auto range = due_.equal_range(it->second);
    for (auto d = range.first; d != range.second; ++d) {
      if (d->second == id) {
        due_.erase(d);
        break;
      }
    }
  }
  scheduled_[id] = when;
  due_.emplace(when, id);
  if (when <= now_s()) {
    std::weak_ptr<bool> alive = alive_;
    loop_.post([this, alive] {
      if (auto a = alive.lock(); a && *a) run();
    });
  } else {
    arm_timer();
  }
}

void QueueManager::arm_timer() {
  if (due_.empty()) {
    timer_.stop();
    return;
  }
  int64_t next = due_.begin()->first;
  int64_t wait = std::max<int64_t>(0, next - now_s());
  timer_.start(static_cast<uint64_t>(wait) * 1000 + 50, [this] { run(); });
}

void QueueManager::run() {
  if (stopping_) return;
  const int64_t now = now_s();
  while (!due_.empty() && due_.begin()->first <= now && active_.size() < s_.active_limit) {
    std::string id = due_.begin()->second;
    due_.erase(due_.begin());
    scheduled_.erase(id);
    if (active_.count(id)) {
      // Being delivered; it will be rescheduled by its own outcome.
      continue;
    }
    deliver(id);
  }
  arm_timer();
}

int64_t QueueManager::backoff(uint32_t attempts) {
  uint64_t b = s_.minimal_backoff_s;
  for (uint32_t i = 1; i < attempts && b < s_.maximal_backoff_s; ++i) b *= 2;
  b = std::min(b, s_.maximal_backoff_s);
  // Jitter: up to a quarter less, never below the minimum, so that mail deferred
  // together (a destination that was down) does not come back all at once.
  if (b / 4 > 0) b -= std::uniform_int_distribution<uint64_t>(0, b / 4)(rng_);
  return static_cast<int64_t>(std::max(b, s_.minimal_backoff_s));
}

void QueueManager::lmtp_slot(std::function<void(std::function<void()> release)> start) {
  std::weak_ptr<bool> alive = alive_;
  auto release = [this, alive] {
    if (auto a = alive.lock(); !a || !*a) return;
    --lmtp_active_;
    if (!lmtp_waiting_.empty()) {
      auto next = std::move(lmtp_waiting_.front());
      lmtp_waiting_.pop_front();
      next();
    }
  };
  auto go = [this, start, release] {
    ++lmtp_active_;
    start(release);
  };
  if (lmtp_active_ < s_.lmtp_concurrency) {
    go();
  } else {
    lmtp_waiting_.push_back(go);
  }
}

void QueueManager::deliver(const std::string& id) {
  Result<Envelope> er = queue_.envelope(id);
  if (!er) {
    if (er.error().kind != common::ErrorKind::kNotFound) {
      common::log::warning("queue: %s: %s", id.c_str(), er.error().message.c_str());
      schedule(id, now_s() + static_cast<int64_t>(s_.minimal_backoff_s));
    }
    return;
  }
  if (er->hold) return;
  const bool forced = forced_.erase(id) > 0;
  active_.insert(id);
  auto a = std::make_shared<Attempt>();
  a->env = std::move(er).value();
  a->started = now_f();
  Envelope& env = a->env;
  const int64_t now = now_s();
  const double arrival = static_cast<double>(env.arrival_us) / 1e6;
  // maximal_queue_lifetime (bounce_queue_lifetime for mail from <>): past it, this is
  // the last attempt; 0 makes the first attempt the last (Postfix).
  const uint64_t lifetime = env.sender.empty() ? s_.bounce_queue_lifetime_s : s_.maximal_queue_lifetime_s;
  a->expired = now - static_cast<int64_t>(arrival) >= static_cast<int64_t>(lifetime);
  const bool expired = a->expired;
  unsigned pending = 0, due = 0;
  for (const Recipient& r : env.rcpts) {
    if (r.state != Recipient::State::kPending) continue;
    ++pending;
    due += r.next_attempt <= now || forced || expired;
  }
  if (due > 0) maillog::queue_active(env.queue_id, env.sender, env.size, pending);

  std::weak_ptr<bool> alive = alive_;
  auto settle = [this, alive, a] {
    if (auto al = alive.lock(); !al || !*al) return;
    if (--a->outstanding == 0) finish(a->env.queue_id, std::move(a->env), std::move(a->touched));
  };
  // Records one recipient's outcome and logs it.
  auto record = [a, arrival](size_t i, Outcome o) {
    Recipient& r = a->env.rcpts[i];
    if (o.status == 'd' && a->expired) o.status = 'x';
    r.last_reply = o.text;
    r.dsn_status = o.dsn;
    r.remote_mta = o.remote_mta;
    r.diagnostic = o.diagnostic;
    r.relayed = o.relayed;
    if (o.dsn_passed) r.notify &= static_cast<uint8_t>(~kNotifySuccess);  // the next hop reports success now
    ++r.attempts;
    const double now = now_f();
    maillog::Delivery d;
    d.service = o.service;
    d.queue_id = a->env.queue_id;
    std::string to = r.kind == Recipient::Kind::kAddress ? r.address : r.orig_address;
    d.to = to;
    d.orig_to = r.orig_address;
    d.relay = o.relay;
    d.delay = now - arrival;
    d.delays[0] = 0;
    d.delays[1] = std::max(0.0, a->started - arrival);
    d.delays[2] = o.conn_s;
    d.delays[3] = o.xfer_s;
    d.dsn = o.dsn;
    switch (o.status) {
      case 's':
        r.state = Recipient::State::kDelivered;
        d.status = "sent";
        break;
      case 'b':
        r.state = Recipient::State::kBounced;
        d.status = "bounced";
        break;
      case 'x':
        r.state = Recipient::State::kBounced;
        d.status = "expired";
        break;
      default:
        d.status = "deferred";
        break;
    }
    d.detail = o.text;
    maillog::delivery(d);
    a->touched.push_back(i);
  };
  auto simple = [](char status, const char* service, std::string dsn, std::string text) {
    Outcome o;
    o.status = status;
    o.service = service;
    o.dsn = std::move(dsn);
    o.text = std::move(text);
    return o;
  };

  std::vector<size_t> lmtp;
  std::map<std::string, std::pair<NextHop, std::vector<size_t>>> remote;  // next hop -> recipients
  for (size_t i = 0; i < env.rcpts.size(); ++i) {
    Recipient& r = env.rcpts[i];
    if (r.state != Recipient::State::kPending) continue;
    if (r.next_attempt > now && !expired && !forced) continue;
    switch (r.kind) {
      case Recipient::Kind::kError:
        record(i, simple('b', "error", dsn_of(r.last_reply, '5'), r.last_reply));
        continue;
      case Recipient::Kind::kCommand:
      case Recipient::Kind::kFile: {
        auto job = std::make_shared<LocalJob>();
        job->kind = r.kind == Recipient::Kind::kCommand ? LocalJob::Kind::kCommand : LocalJob::Kind::kFile;
        job->target = r.address;
        job->owner = r.owner == UINT32_MAX ? static_cast<uid_t>(-1) : r.owner;
        job->sender = env.sender;
        job->recipient = r.orig_address;
        job->queue_id = env.queue_id;
        job->delimiters = tables_.delimiters();
        job->time_limit_s = s_.command_time_limit_s;
        Result<std::string> body = queue_.body(env.queue_id);
        if (!body) {
          record(i, simple('d', "local", "4.3.0", "cannot read queued message: " + body.error().message));
          continue;
        }
        job->body = std::move(body).value();
        auto out = std::make_shared<LocalOutcome>();
        ++a->outstanding;
        const double t0 = now_f();
        loop_.queue_work([job, out, run = local_] { *out = run(*job); },
                         [record, settle, out, i, t0] {
                           Outcome o;
                           o.status = out->status;
                           o.service = "local";
                           o.relay = "local";
                           o.dsn = out->dsn;
                           o.text = out->text;
                           o.xfer_s = now_f() - t0;
                           record(i, o);
                           settle();
                         });
        continue;
      }
      case Recipient::Kind::kAddress: break;
    }
    Result<common::smtp::Mailbox> mb = common::smtp::parse_mailbox(r.address, true);
    if (!mb) {
      record(i, simple('b', "error", "5.1.3", "bad address syntax"));
      continue;
    }
    Result<AddressClass> cls = tables_.classify(*mb);
    if (!cls) {
      record(i, simple('d', "qmgr", "4.3.0", "address class lookup failed: " + cls.error().message));
      continue;
    }
    switch (*cls) {
      case AddressClass::kLocal:
      case AddressClass::kVirtualMailbox: lmtp.push_back(i); break;
      case AddressClass::kVirtualAlias:
        record(i, simple('b', "error", "5.1.1", "User unknown in virtual alias table"));
        break;
      case AddressClass::kRelay:
      case AddressClass::kDefault: {
        if (!smtp_) {
          record(i, simple('d', "smtp", "4.3.0", "the SMTP client is not available (see the tern-mta start-up log)"));
          break;
        }
        Result<NextHop> hop = smtp_->nexthop(mb->domain);
        if (!hop) {
          record(i, simple('b', "smtp", "5.1.2", hop.error().message));
          break;
        }
        auto& slot = remote[hop->key()];
        slot.first = *hop;
        slot.second.push_back(i);
        break;
      }
    }
  }
  // SMTP: one job per next hop, in groups of smtp_destination_recipient_limit.
  for (auto& [key, group] : remote) {
    const std::vector<size_t>& all = group.second;
    const size_t limit = std::max<size_t>(1, smtp_->recipient_limit());
    for (size_t start = 0; start < all.size(); start += limit) {
      std::vector<size_t> part(all.begin() + static_cast<std::ptrdiff_t>(start),
                               all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), start + limit)));
      SmtpJob job;
      job.queue_id = env.queue_id;
      job.hop = group.first;
      job.sender = env.sender;
      job.body_8bit = env.body_8bit;
      job.smtputf8 = env.smtputf8;
      job.ret = env.ret;
      job.envid = env.envid;
      for (size_t i : part) job.rcpts.push_back({env.rcpts[i].address, env.rcpts[i].notify, env.rcpts[i].orcpt});
      ++a->outstanding;
      smtp_->submit(std::move(job), [record, settle, part](std::vector<SmtpResult> res) {
        for (size_t k = 0; k < part.size(); ++k) {
          Outcome o;
          o.service = "smtp";
          if (k < res.size()) {
            SmtpResult& r = res[k];
            o.status = r.status;
            o.relay = r.relay;
            o.dsn = r.dsn;
            o.text = r.text;
            o.remote_mta = r.remote_mta;
            o.diagnostic = r.diagnostic;
            o.relayed = r.status == 's' && !r.dsn_passed;
            o.dsn_passed = r.dsn_passed;
            o.conn_s = r.conn_seconds;
            o.xfer_s = r.xfer_seconds;
          } else {
            o.dsn = "4.3.0";
            o.text = "internal error: no result for this recipient";
          }
          record(part[k], o);
        }
        settle();
      });
    }
  }
  // LMTP, in groups of lmtp_destination_recipient_limit, at most
  // lmtp_destination_concurrency_limit connections at once.
  for (size_t start = 0; start < lmtp.size(); start += s_.lmtp_recipient_limit) {
    std::vector<size_t> group(lmtp.begin() + static_cast<std::ptrdiff_t>(start),
                              lmtp.begin() + static_cast<std::ptrdiff_t>(std::min(lmtp.size(), start + s_.lmtp_recipient_limit)));
    auto job = std::make_shared<std::unique_ptr<LmtpJob>>(std::make_unique<LmtpJob>());
    LmtpJob& j = **job;
    j.socket_path = s_.lmtp_socket;
    j.lhlo_name = s_.myhostname;
    j.queue_id = env.queue_id;
    j.sender = env.sender;
    j.body_8bit = env.body_8bit;
    j.smtputf8 = env.smtputf8;
    for (size_t i : group) j.rcpts.push_back(env.rcpts[i].address);
    j.connect_timeout_ms = s_.lmtp_connect_timeout_ms;
    j.timeout_ms = s_.lmtp_timeout_ms;
    const bool large = env.large_body;
    const std::string qid = env.queue_id;
    ++a->outstanding;
    lmtp_slot([this, alive, job, group, record, settle, large, qid](std::function<void()> release) {
      if (auto al = alive.lock(); !al || !*al) return;
      // The body is read only now that a connection slot is free.
      auto fail_all = [&](const std::string& why) {
        Outcome o;
        o.service = "lmtp";
        o.dsn = "4.3.0";
        o.text = "cannot read queued message: " + why;
        for (size_t i : group) record(i, o);
        settle();
        release();
      };
      if (large) {
        Result<std::pair<common::UniqueFd, uint64_t>> fd = queue_.body_fd(qid);
        if (!fd) return fail_all(fd.error().message);
        (*job)->body_fd = std::move(fd->first);
        (*job)->body_size = fd->second;
      } else {
        Result<std::string> body = queue_.body(qid);
        if (!body) return fail_all(body.error().message);
        (*job)->inline_body = std::move(body).value();
      }
      std::erase_if(lmtp_in_flight_, [](const std::weak_ptr<LmtpInFlight>& w) { return w.expired(); });
      lmtp_in_flight_.push_back(lmtp_deliver(loop_, std::move(*job), [record, settle, group, release](LmtpOutcome o) {
        common::fault::point("mta.after_lmtp_reply");  // the crash tests' window: replied, not yet recorded
        for (size_t k = 0; k < group.size(); ++k) {
          const common::smtp::Reply& rep =
              k < o.replies.size() ? o.replies[k] : common::smtp::Reply(451, "4.4.2", "no reply");
          Outcome out;
          out.service = "lmtp";
          out.relay = o.relay;
          out.status = rep.positive() ? 's' : rep.permanent() ? 'b' : 'd';
          out.dsn = rep.enhanced.empty() ? std::string(1, static_cast<char>('0' + rep.code / 100)) + ".0.0" : rep.enhanced;
          out.text = rep.summary();
          out.conn_s = o.connect_seconds;
          out.xfer_s = o.transfer_seconds;
          record(group[k], out);
        }
        release();
        settle();
      }));
    });
  }
  settle();
}

void QueueManager::finish(const std::string& id, Envelope env, std::vector<size_t> touched) {
  const int64_t now = now_s();
  for (size_t i : touched) {
    Recipient& r = env.rcpts[i];
    if (r.state == Recipient::State::kPending) r.next_attempt = now + backoff(r.attempts);
  }
  (void)id;
  bounce_then_commit(std::move(env), std::move(touched));
}

void QueueManager::queue_notice(const Notice& n, const std::shared_ptr<Envelope>& env, const std::string& original,
                                std::function<void(bool)> done) {
  std::unique_ptr<BodyWriter> body = queue_.new_body();
  DsnInput in;
  in.kind = n.kind;
  in.myhostname = s_.myhostname;
  in.mail_name = s_.mail_name;
  in.env = env.get();
  in.rcpts = n.rcpts;
  in.original = original;
  in.size_limit = s_.bounce_size_limit;
  in.now = ::time(nullptr);
  in.queue_id = body->queue_id();
  in.postmaster_copy = n.postmaster;
  in.whole_original = n.whole;
  in.to = n.to;
  std::string text = "Received: by " + s_.myhostname + " (" + s_.mail_name + ")\r\n\tid " + body->queue_id() + "; " +
                     rfc5322_date(in.now) + "\r\n" + make_dsn(in);
  if (Status st = body->append(text); !st) {
    common::log::warning("%s: cannot create bounce: %s", env->queue_id.c_str(), st.error().message.c_str());
    done(false);
    return;
  }
  Envelope b;
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  b.arrival_us = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  b.sender = "";
  // "notify": a postmaster copy, which is never reported on again (no loops).
  b.origin = n.postmaster ? "notify" : "bounce";
  Result<std::vector<Destination>> dests = tables_.expand(n.to);
  if (!dests) {
    Recipient r;
    r.address = n.to;
    r.orig_address = n.to;
    b.rcpts.push_back(r);
  } else {
    for (const Destination& d : *dests) {
      Recipient r;
      r.address = d.value;
      r.orig_address = n.to;
      r.kind = d.kind == Destination::Kind::kCommand ? Recipient::Kind::kCommand
               : d.kind == Destination::Kind::kFile  ? Recipient::Kind::kFile
               : d.kind == Destination::Kind::kError ? Recipient::Kind::kError
                                                      : Recipient::Kind::kAddress;
      r.owner = d.owner;
      if (d.kind == Destination::Kind::kError) r.last_reply = d.value;
      b.rcpts.push_back(r);
    }
  }
  const std::string new_id = body->queue_id();
  const std::string orig_id = env->queue_id;
  const char* what = n.postmaster                               ? "postmaster"
                     : n.kind == DsnInput::Kind::kSuccess      ? "delivery status"
                     : n.kind == DsnInput::Kind::kDelay        ? "delay"
                                                                : "non-delivery";
  std::weak_ptr<bool> alive = alive_;
  queue_.enqueue(std::move(b), std::move(body), [this, alive, done, new_id, orig_id, what](Status st) {
    if (auto al = alive.lock(); !al || !*al) return;
    if (!st) {
      common::log::warning("%s: cannot queue bounce: %s", orig_id.c_str(), st.error().message.c_str());
      done(false);
      return;
    }
    maillog::bounce_created(orig_id, what, new_id);
    notify(new_id);
    done(true);
  });
}

void QueueManager::bounce_then_commit(Envelope env, std::vector<size_t> touched) {
  // Who needs a notice: failures (unless NOTIFY excludes FAILURE) and NOTIFY=SUCCESS
  // deliveries; never the null sender (RFC 5321 6.1, RFC 3461 6.2), whose failures
  // go to the postmaster instead when notify_classes has 2bounce.
  std::vector<const Recipient*> failed, succeeded, delayed, all_failed;
  const int64_t age = now_s() - env.arrival_us / 1000000;
  for (size_t i : touched) {
    Recipient& r = env.rcpts[i];
    if (r.state == Recipient::State::kBounced) all_failed.push_back(&r);
    if (r.notify & kNotifyNever) continue;
    if (r.state == Recipient::State::kBounced && (r.notify == 0 || (r.notify & kNotifyFailure))) failed.push_back(&r);
    if (r.state == Recipient::State::kDelivered && (r.notify & kNotifySuccess)) succeeded.push_back(&r);
    // delay_warning_time (Postfix): one notice per recipient still waiting.
    if (r.state == Recipient::State::kPending && s_.delay_warning_s > 0 && !r.delay_warned &&
        age >= static_cast<int64_t>(s_.delay_warning_s) && (r.notify == 0 || (r.notify & kNotifyDelay)) &&
        !env.sender.empty()) {
      r.delay_warned = true;
      delayed.push_back(&r);
    }
  }
  auto env_p = std::make_shared<Envelope>(std::move(env));
  std::vector<Notice> notices;
  if (!env_p->sender.empty()) {
    if (!failed.empty()) {
      notices.push_back({DsnInput::Kind::kFailure, failed, env_p->sender, false, false});
      if (s_.notify_bounce) notices.push_back({DsnInput::Kind::kFailure, failed, s_.bounce_notice_recipient, true, false});
    }
    if (!succeeded.empty()) notices.push_back({DsnInput::Kind::kSuccess, succeeded, env_p->sender, false, false});
    if (!delayed.empty()) {
      notices.push_back({DsnInput::Kind::kDelay, delayed, env_p->sender, false, false});
      if (s_.notify_delay) notices.push_back({DsnInput::Kind::kDelay, delayed, s_.delay_notice_recipient, true, false});
    }
  } else if (!all_failed.empty() && s_.notify_2bounce && env_p->origin != "notify") {
    // An undeliverable bounce (or other mail from <>): the postmaster gets it whole.
    notices.push_back({DsnInput::Kind::kFailure, all_failed, s_.twobounce_notice_recipient, true, true});
  }
  if (notices.empty()) {
    commit(std::move(*env_p), std::move(touched));
    return;
  }
  // The original (or as much of it as a bounce returns).
  std::string original;
  if (env_p->large_body) {
    Result<std::pair<common::UniqueFd, uint64_t>> fd = queue_.body_fd(env_p->queue_id);
    if (fd) {
      original.resize(std::min<uint64_t>(fd->second, s_.bounce_size_limit + 4096));
      ssize_t n = ::pread(fd->first.get(), original.data(), original.size(), 0);
      original.resize(n > 0 ? static_cast<size_t>(n) : 0);
    }
  } else {
    Result<std::string> b = queue_.body(env_p->queue_id);
    if (b) original = std::move(b).value();
  }
  auto pending = std::make_shared<size_t>(notices.size());
  auto ok = std::make_shared<bool>(true);
  auto touched_p = std::make_shared<std::vector<size_t>>(std::move(touched));
  std::weak_ptr<bool> alive = alive_;
  auto done_one = [this, alive, pending, ok, env_p, touched_p](bool queued) {
    if (auto al = alive.lock(); !al || !*al) return;
    *ok = *ok && queued;
    if (--*pending > 0) return;
    if (!*ok) {
      // A notice could not be queued: keep the recipients pending so that it is
      // made again on the next attempt rather than lost.
      for (size_t i : *touched_p) {
        Recipient& r = env_p->rcpts[i];
        if (r.state == Recipient::State::kBounced) {
          r.state = Recipient::State::kPending;
          r.next_attempt = now_s() + static_cast<int64_t>(s_.minimal_backoff_s);
        }
      }
    }
    commit(std::move(*env_p), std::move(*touched_p));
  };
  for (const Notice& n : notices) queue_notice(n, env_p, original, done_one);
}

void QueueManager::commit(Envelope env, std::vector<size_t> touched) {
  (void)touched;
  const std::string id = env.queue_id;
  const bool done = env.done();
  int64_t next = INT64_MAX;
  for (const Recipient& r : env.rcpts) {
    if (r.state == Recipient::State::kPending) next = std::min(next, r.next_attempt);
  }
  std::weak_ptr<bool> alive = alive_;
  queue_.update(id, env.rcpts, [this, alive, id, done, next](Status st) {
    if (auto al = alive.lock(); !al || !*al) return;
    common::fault::point("mta.after_queue_update");
    active_.erase(id);
    if (deleted_.erase(id)) {
      // ternctl queue delete while it was being delivered.
      forced_.erase(id);
      if (done) {
        maillog::removed(id);
      } else {
        queue_.remove(id, [alive, id](Status rs) {
          if (auto al2 = alive.lock(); !al2 || !*al2) return;
          if (rs || rs.error().kind == common::ErrorKind::kNotFound) maillog::removed(id);
        });
      }
    } else if (!st) {
      common::log::warning("%s: cannot record delivery status: %s", id.c_str(), st.error().message.c_str());
      schedule(id, now_s() + static_cast<int64_t>(s_.minimal_backoff_s));
    } else if (done) {
      maillog::removed(id);
    } else if (next != INT64_MAX) {
      // Flushed while it was being delivered: now, whatever the backoff.
      schedule(id, forced_.count(id) ? 0 : next);
    }
    if (done) forced_.erase(id);
    run();
  });
}

}  // namespace tern::mta
