#include "mta/qmgr.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

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
  s.delay_warning_s = static_cast<uint64_t>(cfg.seconds("delay_warning_time"));
  s.concurrency = static_cast<size_t>(cfg.integer("default_destination_concurrency_limit"));
  s.lmtp_recipient_limit = static_cast<size_t>(cfg.integer("lmtp_destination_recipient_limit"));
  s.lmtp_connect_timeout_ms = static_cast<uint64_t>(cfg.seconds("lmtp_connect_timeout")) * 1000;
  s.lmtp_timeout_ms = static_cast<uint64_t>(cfg.seconds("lmtp_data_done_timeout")) * 1000;
  s.bounce_size_limit = static_cast<size_t>(cfg.integer("bounce_size_limit"));
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

}  // namespace

QueueManager::QueueManager(common::ev::Loop& loop, QmgrSettings settings, QueueStore& queue, RecipientTables& tables)
    : loop_(loop), s_(std::move(settings)), queue_(queue), tables_(tables), timer_(loop) {}

QueueManager::~QueueManager() { *alive_ = false; }

Status QueueManager::start() {
  std::vector<std::pair<std::string, int64_t>> found;
  Status st = queue_.for_each([&](const Envelope& e) {
    int64_t when = INT64_MAX;
    for (const Recipient& r : e.rcpts) {
      if (r.state == Recipient::State::kPending) when = std::min(when, r.next_attempt);
    }
    if (when != INT64_MAX) found.emplace_back(e.queue_id, when);
  });
  if (!st) return st;
  for (auto& [id, when] : found) schedule(id, when);
  if (!found.empty()) common::log::info("queue: %zu messages waiting", found.size());
  // A periodic scan as a safety net (Postfix queue_run_delay): a message whose
  // timer was lost to a bug still gets tried.
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
  while (!due_.empty() && due_.begin()->first <= now && active_.size() < s_.concurrency) {
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

int64_t QueueManager::backoff(uint32_t attempts) const {
  uint64_t b = s_.minimal_backoff_s;
  for (uint32_t i = 1; i < attempts && b < s_.maximal_backoff_s; ++i) b *= 2;
  return static_cast<int64_t>(std::min(b, s_.maximal_backoff_s));
}

namespace {

struct Attempt {
  Envelope env;
  std::vector<size_t> touched;
  int outstanding = 1;
  double started = 0;
};

}  // namespace

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
  const bool expired = s_.maximal_queue_lifetime_s > 0 && now - static_cast<int64_t>(arrival) >
                                                              static_cast<int64_t>(s_.maximal_queue_lifetime_s);
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
  auto record = [a, arrival](size_t i, char status, const std::string& service, const std::string& relay,
                             const std::string& dsn, const std::string& text, double conn_s, double xfer_s) {
    Recipient& r = a->env.rcpts[i];
    r.last_reply = text;
    r.dsn_status = dsn;
    ++r.attempts;
    const double now = now_f();
    maillog::Delivery d;
    d.service = service;
    d.queue_id = a->env.queue_id;
    std::string to = r.kind == Recipient::Kind::kAddress ? r.address : r.orig_address;
    d.to = to;
    d.orig_to = r.orig_address;
    d.relay = relay;
    d.delay = now - arrival;
    d.delays[0] = 0;
    d.delays[1] = std::max(0.0, a->started - arrival);
    d.delays[2] = conn_s;
    d.delays[3] = xfer_s;
    d.dsn = dsn;
    switch (status) {
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
    d.detail = text;
    maillog::delivery(d);
    a->touched.push_back(i);
  };

  std::vector<size_t> lmtp;
  for (size_t i = 0; i < env.rcpts.size(); ++i) {
    Recipient& r = env.rcpts[i];
    if (r.state != Recipient::State::kPending) continue;
    if (r.next_attempt > now && !expired && !forced) continue;
    if (expired) {
      std::string why = r.last_reply.empty() ? "message expired" : r.last_reply;
      record(i, 'x', "qmgr", "none", r.dsn_status.empty() || r.dsn_status[0] != '5' ? "4.4.7" : r.dsn_status,
             "message expired: " + why, 0, 0);
      continue;
    }
    switch (r.kind) {
      case Recipient::Kind::kError:
        record(i, 'b', "error", "none", dsn_of(r.last_reply, '5'), r.last_reply, 0, 0);
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
        Result<std::string> body = queue_.body(env.queue_id);
        if (!body) {
          record(i, 'd', "local", "local", "4.3.0", "cannot read queued message: " + body.error().message, 0, 0);
          continue;
        }
        job->body = std::move(body).value();
        auto out = std::make_shared<LocalOutcome>();
        ++a->outstanding;
        const double t0 = now_f();
        loop_.queue_work([job, out] { *out = deliver_local(*job); },
                         [record, settle, out, i, t0] {
                           record(i, out->status, "local", "local", out->dsn, out->text, 0, now_f() - t0);
                           settle();
                         });
        continue;
      }
      case Recipient::Kind::kAddress: break;
    }
    Result<common::smtp::Mailbox> mb = common::smtp::parse_mailbox(r.address, true);
    if (!mb) {
      record(i, 'b', "error", "none", "5.1.3", "bad address syntax", 0, 0);
      continue;
    }
    Result<AddressClass> cls = tables_.classify(*mb);
    if (!cls) {
      record(i, 'd', "qmgr", "none", "4.3.0", "address class lookup failed: " + cls.error().message, 0, 0);
      continue;
    }
    switch (*cls) {
      case AddressClass::kLocal:
      case AddressClass::kVirtualMailbox: lmtp.push_back(i); break;
      case AddressClass::kVirtualAlias:
        record(i, 'b', "error", "none", "5.1.1", "User unknown in virtual alias table", 0, 0);
        break;
      case AddressClass::kRelay:
      case AddressClass::kDefault:
        // The SMTP client is the sending half of tern-mta (its own issue).
        record(i, 'd', "smtp", "none", "4.4.0", "delivery to remote domains is not available in this tern-mta", 0,
               0);
        break;
    }
  }
  // LMTP, in groups of lmtp_destination_recipient_limit.
  for (size_t start = 0; start < lmtp.size(); start += s_.lmtp_recipient_limit) {
    std::vector<size_t> group(lmtp.begin() + static_cast<std::ptrdiff_t>(start),
                              lmtp.begin() + static_cast<std::ptrdiff_t>(std::min(lmtp.size(), start + s_.lmtp_recipient_limit)));
    auto job = std::make_unique<LmtpJob>();
    job->socket_path = s_.lmtp_socket;
    job->lhlo_name = s_.myhostname;
    job->queue_id = env.queue_id;
    job->sender = env.sender;
    job->body_8bit = env.body_8bit;
    job->smtputf8 = env.smtputf8;
    for (size_t i : group) job->rcpts.push_back(env.rcpts[i].address);
    job->connect_timeout_ms = s_.lmtp_connect_timeout_ms;
    job->timeout_ms = s_.lmtp_timeout_ms;
    if (env.large_body) {
      Result<std::pair<common::UniqueFd, uint64_t>> fd = queue_.body_fd(env.queue_id);
      if (!fd) {
        for (size_t i : group) record(i, 'd', "lmtp", "none", "4.3.0", "cannot read queued message: " + fd.error().message, 0, 0);
        continue;
      }
      job->body_fd = std::move(fd->first);
      job->body_size = fd->second;
    } else {
      Result<std::string> body = queue_.body(env.queue_id);
      if (!body) {
        for (size_t i : group) record(i, 'd', "lmtp", "none", "4.3.0", "cannot read queued message: " + body.error().message, 0, 0);
        continue;
      }
      job->inline_body = std::move(body).value();
    }
    ++a->outstanding;
    lmtp_deliver(loop_, std::move(job), [record, settle, group](LmtpOutcome o) {
      for (size_t k = 0; k < group.size(); ++k) {
        const common::smtp::Reply& rep = k < o.replies.size() ? o.replies[k] : common::smtp::Reply(451, "4.4.2", "no reply");
        char st = rep.positive() ? 's' : rep.permanent() ? 'b' : 'd';
        std::string dsn = rep.enhanced.empty() ? std::string(1, static_cast<char>('0' + rep.code / 100)) + ".0.0" : rep.enhanced;
        std::string text = rep.summary();
        record(group[k], st, "lmtp", o.relay, dsn, text, o.connect_seconds, o.transfer_seconds);
      }
      settle();
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

void QueueManager::bounce_then_commit(Envelope env, std::vector<size_t> touched) {
  // Who needs a notice: failures (unless NOTIFY excludes FAILURE) and NOTIFY=SUCCESS
  // deliveries; never for the null sender (RFC 5321 6.1, RFC 3461 6.2).
  std::vector<const Recipient*> failed, succeeded, delayed;
  const int64_t age = now_s() - env.arrival_us / 1000000;
  for (size_t i : touched) {
    Recipient& r = env.rcpts[i];
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
  if (env.sender.empty() || (failed.empty() && succeeded.empty() && delayed.empty())) {
    commit(std::move(env), std::move(touched));
    return;
  }
  // The original (or as much of it as a bounce returns).
  std::string original;
  if (env.large_body) {
    Result<std::pair<common::UniqueFd, uint64_t>> fd = queue_.body_fd(env.queue_id);
    if (fd) {
      original.resize(std::min<uint64_t>(fd->second, s_.bounce_size_limit + 4096));
      ssize_t n = ::pread(fd->first.get(), original.data(), original.size(), 0);
      original.resize(n > 0 ? static_cast<size_t>(n) : 0);
    }
  } else {
    Result<std::string> b = queue_.body(env.queue_id);
    if (b) original = std::move(b).value();
  }
  auto pending = std::make_shared<int>(1);
  auto ok = std::make_shared<bool>(true);
  auto env_p = std::make_shared<Envelope>(std::move(env));
  auto touched_p = std::make_shared<std::vector<size_t>>(std::move(touched));
  std::weak_ptr<bool> alive = alive_;
  auto done_one = [this, alive, pending, ok, env_p, touched_p] {
    if (auto al = alive.lock(); !al || !*al) return;
    if (--*pending > 0) return;
    if (!*ok) {
      // The notice could not be queued: keep the recipients pending so that the
      // bounce is made again on the next attempt rather than lost.
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
  auto make = [&](DsnInput::Kind kind, const std::vector<const Recipient*>& list) {
    if (list.empty()) return;
    std::unique_ptr<BodyWriter> body = queue_.new_body();
    DsnInput in;
    in.kind = kind;
    in.myhostname = s_.myhostname;
    in.mail_name = s_.mail_name;
    in.env = env_p.get();
    in.rcpts = list;
    in.original = original;
    in.size_limit = s_.bounce_size_limit;
    in.now = ::time(nullptr);
    in.queue_id = body->queue_id();
    std::string text = "Received: by " + s_.myhostname + " (" + s_.mail_name + ")\r\n\tid " + body->queue_id() +
                       "; " + rfc5322_date(in.now) + "\r\n" + make_dsn(in);
    if (Status st = body->append(text); !st) {
      common::log::warning("%s: cannot create bounce: %s", env_p->queue_id.c_str(), st.error().message.c_str());
      *ok = false;
      return;
    }
    Envelope b;
    struct timeval tv;
    ::gettimeofday(&tv, nullptr);
    b.arrival_us = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
    b.sender = "";
    b.origin = "bounce";
    Result<std::vector<Destination>> dests = tables_.expand(env_p->sender);
    if (!dests) {
      Recipient r;
      r.address = env_p->sender;
      r.orig_address = env_p->sender;
      b.rcpts.push_back(r);
    } else {
      for (const Destination& d : *dests) {
        Recipient r;
        r.address = d.value;
        r.orig_address = env_p->sender;
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
    const std::string orig_id = env_p->queue_id;
    const char* what = kind == DsnInput::Kind::kSuccess ? "delivery status"
                       : kind == DsnInput::Kind::kDelay ? "delay"
                                                         : "non-delivery";
    ++*pending;
    queue_.enqueue(std::move(b), std::move(body), [this, alive, ok, done_one, new_id, orig_id, what](Status st) {
      if (auto al = alive.lock(); !al || !*al) return;
      if (!st) {
        common::log::warning("%s: cannot queue bounce: %s", orig_id.c_str(), st.error().message.c_str());
        *ok = false;
      } else {
        maillog::bounce_created(orig_id, what, new_id);
        notify(new_id);
      }
      done_one();
    });
  };
  make(DsnInput::Kind::kFailure, failed);
  make(DsnInput::Kind::kSuccess, succeeded);
  make(DsnInput::Kind::kDelay, delayed);
  done_one();
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
    active_.erase(id);
    if (!st) {
      common::log::warning("%s: cannot record delivery status: %s", id.c_str(), st.error().message.c_str());
      schedule(id, now_s() + static_cast<int64_t>(s_.minimal_backoff_s));
    } else if (done) {
      maillog::removed(id);
    } else if (next != INT64_MAX) {
      schedule(id, next);
    }
    run();
  });
}

}  // namespace tern::mta
