#include "mta/queue_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/log.h"
#include "common/queue_id.h"
#include "common/record.h"

namespace tern::mta {

using common::Error;
using common::ErrorKind;
using common::Result;
using common::Status;
namespace lmdb = common::lmdb;

bool Envelope::done() const {
  for (const Recipient& r : rcpts) {
    if (r.state == Recipient::State::kPending) return false;
  }
  return true;
}

// --- serialisation -----------------------------------------------------------------

namespace {

enum EnvTag : uint8_t {
  kTQueueId = 1, kTArrival, kTSender, kTSize, kT8bit, kTUtf8, kTHold, kTEnvid, kTRet, kTOrigin, kTClient,
  kTSasl, kTLarge, kTRcpt = 20,
};
enum RcptTag : uint8_t {
  kRAddress = 1, kROrig, kROrcpt, kRNotify, kRState, kRAttempts, kRNext, kRReply, kRDsn, kRWarned, kRKind, kROwner,
  kRRemoteMta, kRDiagnostic, kRRelayed,
};

std::string encode_rcpt(const Recipient& r) {
  common::RecordWriter w;
  w.bytes(kRAddress, r.address);
  if (!r.orig_address.empty()) w.bytes(kROrig, r.orig_address);
  if (!r.orcpt.empty()) w.bytes(kROrcpt, r.orcpt);
  if (r.notify) w.u64(kRNotify, r.notify);
  w.u64(kRState, static_cast<uint64_t>(r.state));
  w.u64(kRAttempts, r.attempts);
  w.i64(kRNext, r.next_attempt);
  if (!r.last_reply.empty()) w.bytes(kRReply, r.last_reply);
  if (!r.dsn_status.empty()) w.bytes(kRDsn, r.dsn_status);
  if (r.delay_warned) w.boolean(kRWarned, true);
  if (r.kind != Recipient::Kind::kAddress) w.u64(kRKind, static_cast<uint64_t>(r.kind));
  if (r.owner != UINT32_MAX) w.u64(kROwner, r.owner);
  if (!r.remote_mta.empty()) w.bytes(kRRemoteMta, r.remote_mta);
  if (!r.diagnostic.empty()) w.bytes(kRDiagnostic, r.diagnostic);
  if (r.relayed) w.boolean(kRRelayed, true);
  return w.take();
}

Result<Recipient> decode_rcpt(std::string_view data) {
  Recipient r;
  common::RecordReader rd(data);
  uint8_t tag;
  std::string_view v;
  using R = common::RecordReader;
  while (rd.next(tag, v)) {
    switch (tag) {
      case kRAddress: r.address = v; break;
      case kROrig: r.orig_address = v; break;
      case kROrcpt: r.orcpt = v; break;
      case kRNotify: r.notify = static_cast<uint8_t>(R::as_u64(v)); break;
      case kRState: {
        uint64_t s = R::as_u64(v);
        if (s > 2) return common::make_error(ErrorKind::kProtocol, "queue record: bad recipient state");
        r.state = static_cast<Recipient::State>(s);
        break;
      }
      case kRAttempts: r.attempts = static_cast<uint32_t>(R::as_u64(v)); break;
      case kRNext: r.next_attempt = static_cast<int64_t>(R::as_u64(v)); break;
      case kRReply: r.last_reply = v; break;
      case kRDsn: r.dsn_status = v; break;
      case kRWarned: r.delay_warned = R::as_u64(v) != 0; break;
      case kRKind: {
        uint64_t k = R::as_u64(v);
        if (k > 3) return common::make_error(ErrorKind::kProtocol, "queue record: bad recipient kind");
        r.kind = static_cast<Recipient::Kind>(k);
        break;
      }
      case kROwner: r.owner = static_cast<uint32_t>(R::as_u64(v)); break;
      case kRRemoteMta: r.remote_mta = v; break;
      case kRDiagnostic: r.diagnostic = v; break;
      case kRRelayed: r.relayed = R::as_u64(v) != 0; break;
      default: break;  // a field from a newer version
    }
  }
  if (rd.error()) return common::make_error(ErrorKind::kProtocol, "queue record: truncated recipient");
  return r;
}

}  // namespace

std::string encode_envelope(const Envelope& e) {
  common::RecordWriter w;
  w.bytes(kTQueueId, e.queue_id);
  w.i64(kTArrival, e.arrival_us);
  w.bytes(kTSender, e.sender);
  w.u64(kTSize, e.size);
  if (e.body_8bit) w.boolean(kT8bit, true);
  if (e.smtputf8) w.boolean(kTUtf8, true);
  if (e.hold) w.boolean(kTHold, true);
  if (!e.envid.empty()) w.bytes(kTEnvid, e.envid);
  if (!e.ret.empty()) w.bytes(kTRet, e.ret);
  if (!e.origin.empty()) w.bytes(kTOrigin, e.origin);
  if (!e.client.empty()) w.bytes(kTClient, e.client);
  if (!e.sasl_user.empty()) w.bytes(kTSasl, e.sasl_user);
  if (e.large_body) w.boolean(kTLarge, true);
  for (const Recipient& r : e.rcpts) w.bytes(kTRcpt, encode_rcpt(r));
  return w.take();
}

Result<Envelope> decode_envelope(std::string_view data) {
  Envelope e;
  common::RecordReader rd(data);
  uint8_t tag;
  std::string_view v;
  using R = common::RecordReader;
  while (rd.next(tag, v)) {
    switch (tag) {
      case kTQueueId: e.queue_id = v; break;
      case kTArrival: e.arrival_us = static_cast<int64_t>(R::as_u64(v)); break;
      case kTSender: e.sender = v; break;
      case kTSize: e.size = R::as_u64(v); break;
      case kT8bit: e.body_8bit = R::as_u64(v) != 0; break;
      case kTUtf8: e.smtputf8 = R::as_u64(v) != 0; break;
      case kTHold: e.hold = R::as_u64(v) != 0; break;
      case kTEnvid: e.envid = v; break;
      case kTRet: e.ret = v; break;
      case kTOrigin: e.origin = v; break;
      case kTClient: e.client = v; break;
      case kTSasl: e.sasl_user = v; break;
      case kTLarge: e.large_body = R::as_u64(v) != 0; break;
      case kTRcpt: {
        Result<Recipient> r = decode_rcpt(v);
        if (!r) return r.take_error();
        e.rcpts.push_back(std::move(r).value());
        break;
      }
      default: break;
    }
  }
  if (rd.error()) return common::make_error(ErrorKind::kProtocol, "queue record: truncated envelope");
  if (e.queue_id.empty()) return common::make_error(ErrorKind::kProtocol, "queue record: no queue id");
  return e;
}

// --- body writer --------------------------------------------------------------------

BodyWriter::BodyWriter(std::string queue_id, std::string large_dir, uint64_t inline_limit)
    : queue_id_(std::move(queue_id)), large_dir_(std::move(large_dir)), inline_limit_(inline_limit) {}

BodyWriter::~BodyWriter() {
  // Never committed: the half-received body goes away.
  if (!path_.empty() && !committed_) ::unlink(path_.c_str());
}

Status BodyWriter::append(std::string_view data) {
  if (!file_ && mem_.size() + data.size() > inline_limit_) {
    path_ = large_dir_ + "/" + queue_id_;
    file_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!file_) {
      Error e = common::errno_error("create " + path_, errno);
      path_.clear();
      return e;
    }
    std::string_view m = mem_;
    while (!m.empty()) {
      ssize_t n = ::write(file_.get(), m.data(), m.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return common::errno_error("write " + path_, errno);
      m.remove_prefix(static_cast<size_t>(n));
    }
    mem_.clear();
    mem_.shrink_to_fit();
  }
  if (file_) {
    while (!data.empty()) {
      ssize_t n = ::write(file_.get(), data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return common::errno_error("write " + path_, errno);
      size_ += static_cast<uint64_t>(n);
      data.remove_prefix(static_cast<size_t>(n));
    }
    return {};
  }
  mem_.append(data.data(), data.size());
  size_ += data.size();
  return {};
}

// --- the store -----------------------------------------------------------------------

struct QueueStore::Core {
  std::string dir;
  std::string large_dir;
  std::unique_ptr<lmdb::Env> env;
  MDB_dbi msg_db = 0;
  MDB_dbi body_db = 0;
};

struct QueueStore::Op {
  enum class Kind { kEnqueue, kUpdate, kHold, kRemove } kind;
  std::string queue_id;
  Envelope env;                       // kEnqueue
  std::string inline_body;            // kEnqueue
  common::UniqueFd large_fd;          // kEnqueue with a large body: fsynced before commit
  std::vector<Recipient> rcpts;       // kUpdate
  bool hold = false;                  // kHold
  Done done;
  Status result;
  bool unlink_large = false;          // after commit: the message is gone
};

namespace {

Status apply_op(const std::string& large_dir, MDB_dbi msg_db, MDB_dbi body_db, lmdb::Txn& txn, QueueStore::Op& op);

}  // namespace

Result<std::unique_ptr<QueueStore>> QueueStore::open(common::ev::Loop& loop, const std::string& dir, Options options) {
  std::unique_ptr<QueueStore> q(new QueueStore);
  q->loop_ = &loop;
  q->opt_ = options;
  q->core_ = std::make_shared<Core>();
  Core& c = *q->core_;
  c.dir = dir;
  c.large_dir = dir + "/large";
  if (::mkdir(c.large_dir.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + c.large_dir, errno);
  lmdb::Env::Options eo;
  eo.map_size = options.initial_map_size;
  eo.flags = MDB_NOSUBDIR | MDB_NOTLS;
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(dir + "/queue.lmdb", eo);
  if (!env) return env.take_error();
  c.env = std::move(env).value();
  Status s = lmdb::write(*c.env, [&](lmdb::Txn& t) -> Status {
    Result<MDB_dbi> m = t.open_db("msg", true);
    if (!m) return m.take_error();
    Result<MDB_dbi> b = t.open_db("body", true);
    if (!b) return b.take_error();
    c.msg_db = *m;
    c.body_db = *b;
    return {};
  });
  if (!s) return s.take_error();

  // Large-body files that no committed message owns: a crash between writing and
  // committing. Nobody was told 250 for them.
  std::set<std::string> owned;
  Status fs = q->for_each([&](const Envelope& e) {
    if (e.large_body) owned.insert(e.queue_id);
  });
  if (!fs) return fs.take_error();
  if (DIR* d = ::opendir(c.large_dir.c_str())) {
    while (dirent* de = ::readdir(d)) {
      std::string name = de->d_name;
      if (name == "." || name == "..") continue;
      if (!owned.count(name)) {
        common::log::warning("queue: removing orphaned body %s/%s", c.large_dir.c_str(), name.c_str());
        ::unlink((c.large_dir + "/" + name).c_str());
      }
    }
    ::closedir(d);
  }
  return q;
}

Result<std::unique_ptr<QueueStore>> QueueStore::open_read_only(const std::string& dir) {
  std::unique_ptr<QueueStore> q(new QueueStore);
  q->core_ = std::make_shared<Core>();
  Core& c = *q->core_;
  c.dir = dir;
  c.large_dir = dir + "/large";
  lmdb::Env::Options eo;
  eo.flags = MDB_NOSUBDIR | MDB_NOTLS | MDB_RDONLY;
  eo.map_size = 0;
  Result<std::unique_ptr<lmdb::Env>> env = lmdb::Env::open(dir + "/queue.lmdb", eo);
  if (!env) return env.take_error();
  c.env = std::move(env).value();
  // The handles must outlive this transaction: LMDB keeps a handle opened in a
  // transaction only if that transaction commits (a read-only one too).
  Result<lmdb::Txn> t = lmdb::Txn::begin(*c.env, true);
  if (!t) return t.take_error();
  Result<MDB_dbi> m = t->open_db("msg", false);
  if (!m) return m.take_error();
  Result<MDB_dbi> b = t->open_db("body", false);
  if (!b) return b.take_error();
  c.msg_db = *m;
  c.body_db = *b;
  if (Status s = t->commit(); !s) return s.take_error();
  return q;
}

QueueStore::~QueueStore() {
  *alive_ = false;
  // In-flight work keeps core_ and its ops alive through its own references; its
  // callbacks see alive_ == false and do nothing.
}

std::unique_ptr<BodyWriter> QueueStore::new_body() {
  return std::make_unique<BodyWriter>(common::new_queue_id(), core_->large_dir, opt_.inline_limit);
}

void QueueStore::enqueue(Envelope env, std::unique_ptr<BodyWriter> body, Done done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kEnqueue;
  env.queue_id = body->queue_id();
  env.size = body->size();
  env.large_body = body->file_.valid();
  op->queue_id = env.queue_id;
  op->env = std::move(env);
  if (body->file_.valid()) {
    op->large_fd = std::move(body->file_);
  } else {
    op->inline_body = std::move(body->mem_);
  }
  body->committed_ = true;  // from now on the store owns the file
  op->done = std::move(done);
  queued_.push_back(std::move(op));
  kick();
}

void QueueStore::update(const std::string& queue_id, std::vector<Recipient> rcpts, Done done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kUpdate;
  op->queue_id = queue_id;
  op->rcpts = std::move(rcpts);
  op->done = std::move(done);
  queued_.push_back(std::move(op));
  kick();
}

void QueueStore::set_hold(const std::string& queue_id, bool hold, Done done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kHold;
  op->queue_id = queue_id;
  op->hold = hold;
  op->done = std::move(done);
  queued_.push_back(std::move(op));
  kick();
}

void QueueStore::remove(const std::string& queue_id, Done done) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kRemove;
  op->queue_id = queue_id;
  op->done = std::move(done);
  queued_.push_back(std::move(op));
  kick();
}

namespace {

Status apply_op(const std::string& large_dir, MDB_dbi msg_db, MDB_dbi body_db, lmdb::Txn& txn, QueueStore::Op& op) {
  using Kind = QueueStore::Op::Kind;
  switch (op.kind) {
    case Kind::kEnqueue: {
      if (Status s = txn.put(msg_db, op.queue_id, encode_envelope(op.env), MDB_NOOVERWRITE); !s) return s;
      if (!op.env.large_body) {
        if (Status s = txn.put(body_db, op.queue_id, op.inline_body); !s) return s;
      }
      return {};
    }
    case Kind::kUpdate:
    case Kind::kHold: {
      Result<std::string_view> raw = txn.get(msg_db, op.queue_id);
      if (!raw) return raw.take_error();
      Result<Envelope> env = decode_envelope(*raw);
      if (!env) return env.take_error();
      if (op.kind == Kind::kHold) {
        env->hold = op.hold;
      } else {
        env->rcpts = op.rcpts;
      }
      if (env->done()) {
        if (Status s = txn.del(msg_db, op.queue_id); !s) return s;
        if (!env->large_body) {
          if (Status s = txn.del(body_db, op.queue_id); !s && s.error().kind != ErrorKind::kNotFound) return s;
        }
        op.unlink_large = env->large_body;
        return {};
      }
      return txn.put(msg_db, op.queue_id, encode_envelope(*env));
    }
    case Kind::kRemove: {
      Result<std::string_view> raw = txn.get(msg_db, op.queue_id);
      if (!raw) return raw.take_error();
      Result<Envelope> env = decode_envelope(*raw);
      if (!env) return env.take_error();
      if (Status s = txn.del(msg_db, op.queue_id); !s) return s;
      if (!env->large_body) {
        if (Status s = txn.del(body_db, op.queue_id); !s && s.error().kind != ErrorKind::kNotFound) return s;
      }
      op.unlink_large = env->large_body;
      return {};
    }
  }
  (void)large_dir;
  return {};
}

}  // namespace

void QueueStore::kick() {
  if (committing_ || queued_.empty()) return;
  // Only state updates waiting (deliveries recorded, holds, removals): nobody waits
  // on them, so they wait up to lazy_commit_ms for a message to ride along with,
  // rather than cost a commit of their own that an arriving message would queue
  // behind. (A crash in that window repeats a delivery, which tern-mda's
  // XTERN-DELIVERY-ID turns into a no-op.)
  bool eager = false;
  for (const auto& op : queued_) eager = eager || op->kind == Op::Kind::kEnqueue;
  if (!eager && opt_.lazy_commit_ms > 0 && !force_next_) {
    if (!lazy_timer_) {
      lazy_timer_ = std::make_unique<common::ev::Timer>(*loop_);
    }
    if (!lazy_timer_->active()) {
      lazy_timer_->start(opt_.lazy_commit_ms, [this] {
        force_next_ = true;
        kick();
      });
    }
    return;
  }
  force_next_ = false;
  if (lazy_timer_) lazy_timer_->stop();
  committing_ = true;
  in_flight_ = std::make_shared<std::vector<std::unique_ptr<Op>>>(std::move(queued_));
  queued_.clear();
  auto core = core_;
  auto ops = in_flight_;
  std::weak_ptr<bool> alive = alive_;
  loop_->queue_work(
      [core, ops] {
        // 1. Large bodies on disk: data, then their directory entry.
        bool any_large = false;
        for (auto& op : *ops) {
          if (op->kind == Op::Kind::kEnqueue && op->large_fd.valid()) {
            if (::fsync(op->large_fd.get()) < 0) op->result = common::errno_error("fsync large body", errno);
            op->large_fd.reset();
            any_large = true;
          }
        }
        if (any_large) {
          common::UniqueFd d(::open(core->large_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
          if (!d || ::fsync(d.get()) < 0) {
            Error e = common::errno_error("fsync " + core->large_dir, errno);
            for (auto& op : *ops) {
              if (op->kind == Op::Kind::kEnqueue && op->env.large_body) op->result = e;
            }
          }
        }
        // 2. One transaction for everything; an op that fails alone does not stop the
        // others (it is skipped and reports its error).
        Status s = lmdb::write(*core->env, [&](lmdb::Txn& txn) -> Status {
          for (auto& op : *ops) {
            if (op->kind == Op::Kind::kEnqueue && op->env.large_body && !op->result) continue;
            op->unlink_large = false;
            Status r = apply_op(core->large_dir, core->msg_db, core->body_db, txn, *op);
            if (!r && (r.error().kind == ErrorKind::kMapFull || r.error().kind == ErrorKind::kTemp)) return r;
            op->result = r;
          }
          return {};
        });
        if (!s) {
          for (auto& op : *ops) op->result = s;
        }
        // 3. Bodies of messages that are gone. Not needed for durability: a crash
        // here leaves an orphan that open() removes.
        for (auto& op : *ops) {
          if (op->result && op->unlink_large) ::unlink((core->large_dir + "/" + op->queue_id).c_str());
          if (!op->result && op->kind == Op::Kind::kEnqueue && op->env.large_body) {
            ::unlink((core->large_dir + "/" + op->queue_id).c_str());
          }
        }
      },
      [this, alive, ops] {
        if (alive.expired() || !*alive.lock()) return;
        std::vector<std::unique_ptr<Op>> done = std::move(*ops);
        in_flight_.reset();
        committing_ = false;
        ++commits_;
        // Start the next group before running callbacks, which may queue more.
        kick();
        for (auto& op : done) {
          if (op->done) op->done(op->result);
        }
      });
}

Result<Envelope> QueueStore::envelope(const std::string& queue_id) {
  Result<Envelope> out = common::make_error(ErrorKind::kNotFound, "no message " + queue_id);
  Status s = lmdb::read(*core_->env, [&](lmdb::Txn& t) -> Status {
    Result<std::string_view> raw = t.get(core_->msg_db, queue_id);
    if (!raw) return raw.take_error();
    out = decode_envelope(*raw);
    return {};
  });
  if (!s) return s.take_error();
  return out;
}

Result<std::string> QueueStore::body(const std::string& queue_id) {
  Result<Envelope> env = envelope(queue_id);
  if (!env) return env.take_error();
  if (!env->large_body) {
    std::string out;
    Status s = lmdb::read(*core_->env, [&](lmdb::Txn& t) -> Status {
      Result<std::string_view> raw = t.get(core_->body_db, queue_id);
      if (!raw) return raw.take_error();
      out.assign(raw->data(), raw->size());
      return {};
    });
    if (!s) return s.take_error();
    return out;
  }
  Result<std::pair<common::UniqueFd, uint64_t>> fd = body_fd(queue_id);
  if (!fd) return fd.take_error();
  std::string out(fd->second, '\0');
  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = ::pread(fd->first.get(), out.data() + off, out.size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return common::errno_error("read body " + queue_id, n < 0 ? errno : EIO);
    off += static_cast<size_t>(n);
  }
  return out;
}

Result<std::pair<common::UniqueFd, uint64_t>> QueueStore::body_fd(const std::string& queue_id) {
  std::string path = core_->large_dir + "/" + queue_id;
  common::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return common::errno_error("open " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return common::errno_error("stat " + path, errno);
  return std::make_pair(std::move(fd), static_cast<uint64_t>(st.st_size));
}

Status QueueStore::for_each(const std::function<void(const Envelope&)>& fn) {
  return lmdb::read(*core_->env, [&](lmdb::Txn& t) -> Status {
    Result<lmdb::Cursor> c = lmdb::Cursor::open(t, core_->msg_db);
    if (!c) return c.take_error();
    for (auto e = c->first(); e; e = c->next()) {
      Result<Envelope> env = decode_envelope(e->second);
      if (!env) {
        common::log::warning("queue: damaged record %s: %s", std::string(e->first).c_str(), env.error().message.c_str());
        continue;
      }
      fn(*env);
    }
    return {};
  });
}

}  // namespace tern::mta
