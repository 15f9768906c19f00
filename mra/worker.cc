#include "mra/worker.h"

#include <malloc.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>

#include "common/fault.h"
#include "common/connection.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/maildir.h"
#include "common/privilege.h"
#include "common/sandbox.h"
#include "common/sockets.h"
#include "common/text.h"
#include "mda/delivery.h"
#include "mra/handoff.h"
#include "mra/imap_session.h"
#include "mra/maildir_store.h"
#include "mra/mbox_store.h"
#include "mra/pop3_session.h"

namespace tern::mra {
namespace {

using common::ErrorKind;
using common::Result;
using common::Status;
using common::UniqueFd;
using common::net::Connection;

// --- mailbox change notification ------------------------------------------------------

class Watcher {
 public:
  using Notify = std::function<void(uint64_t session)>;
  // Without inotify (the uid's fs.inotify.max_user_instances or max_user_watches
  // used up, as a busy Dovecot on the same uid does) the mailboxes that cannot be
  // watched are checked every kPollMs instead, so IDLE still wakes within a second
  // (Dovecot's mailbox_idle_check_interval, made short); unwatched mailboxes are
  // rescanned on every sync. Only the sessions in IDLE pay for it.
  static constexpr uint64_t kPollMs = 500;

  Watcher(common::ev::Loop& loop, Notify notify) : notify_(std::move(notify)) {
    debounce_ = std::make_unique<common::ev::Timer>(loop);
    poll_ = std::make_unique<common::ev::Timer>(loop);
    fd_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
    if (!fd_) {
      common::log::warning("inotify: %s; IDLE checks the mailboxes every %llu ms instead", std::strerror(errno),
                           static_cast<unsigned long long>(kPollMs));
      return;
    }
    watch_ = std::make_unique<common::ev::FdWatch>(loop, fd_.get());
    watch_->start(UV_READABLE, [this](int, int) { on_events(); });
    ScanTracker::global().set_drain([this] { on_events(); });
  }
  ~Watcher() {
    ScanTracker::global().set_drain(nullptr);
    if (watch_) watch_->stop();
  }

  void add(const std::string& dir, uint64_t session) {
    Dir& d = dirs_[dir];
    struct stat st;
    if (d.sessions.empty() && fd_ && ::lstat(dir.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      // An mbox file: a delivery appends (IN_MODIFY), a rewrite writes and truncates.
      const uint32_t mask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;
      d.wd_new = d.wd_cur = ::inotify_add_watch(fd_.get(), dir.c_str(), mask | IN_DONT_FOLLOW);
      if (d.wd_new < 0) {
        common::log::warning("inotify_add_watch %s: %s; checking it every %llu ms instead", dir.c_str(),
                             std::strerror(errno), static_cast<unsigned long long>(kPollMs));
      } else {
        by_wd_[d.wd_new] = dir;
        ScanTracker::global().watch(dir);
      }
    } else if (d.sessions.empty() && fd_) {
      const uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR;
      d.wd_new = ::inotify_add_watch(fd_.get(), (dir + "/new").c_str(), mask);
      d.wd_cur = ::inotify_add_watch(fd_.get(), (dir + "/cur").c_str(), mask);
      if (d.wd_new < 0 || d.wd_cur < 0) {
        common::log::warning("inotify_add_watch %s: %s; checking it every %llu ms instead", dir.c_str(),
                             std::strerror(errno), static_cast<unsigned long long>(kPollMs));
      }
      if (d.wd_new >= 0) by_wd_[d.wd_new] = dir;
      if (d.wd_cur >= 0) by_wd_[d.wd_cur] = dir;
      if (d.wd_new >= 0 && d.wd_cur >= 0) ScanTracker::global().watch(dir);
    }
    d.sessions.insert(session);
    if ((d.wd_new < 0 || d.wd_cur < 0) && !poll_->active()) poll_->start(kPollMs, [this] { poll(); }, kPollMs);
  }

  void remove(const std::string& dir, uint64_t session) {
    auto it = dirs_.find(dir);
    if (it == dirs_.end()) return;
    it->second.sessions.erase(session);
    if (!it->second.sessions.empty()) return;
    for (int wd : {it->second.wd_new, it->second.wd_cur}) {
      if (wd < 0 || !by_wd_.count(wd)) continue;  // an mbox file has one watch for both
      ::inotify_rm_watch(fd_.get(), wd);
      by_wd_.erase(wd);
    }
    ScanTracker::global().unwatch(dir);
    dirty_.erase(dir);
    dirs_.erase(it);
  }

  // The fallback: every mailbox without a complete inotify watch counts as changed
  // (the sessions in IDLE sync it; the others are not woken).
  void poll() {
    bool any = false;
    for (auto& [dir, d] : dirs_) {
      if (d.wd_new >= 0 && d.wd_cur >= 0) continue;
      dirty_.insert(dir);
      any = true;
    }
    if (!any) {
      poll_->stop();
      return;
    }
    fire();
  }

 private:
  struct Dir {
    int wd_new = -1, wd_cur = -1;
    std::set<uint64_t> sessions;
  };

  void on_events() {
    alignas(inotify_event) char buf[16384];
    while (true) {
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(p);
        p += sizeof(inotify_event) + ev->len;
        if (ev->mask & IN_Q_OVERFLOW) {
          ScanTracker::global().touch_all();
          for (auto& [d, x] : dirs_) dirty_.insert(d);
          continue;
        }
        auto it = by_wd_.find(ev->wd);
        if (it == by_wd_.end()) continue;
        ScanTracker::global().touch(it->second);
        dirty_.insert(it->second);
      }
    }
    // A delivery is a rename into new/ and an index update, a flag change one rename;
    // a short pause makes a burst one wake-up, well within IDLE's second.
    if (!dirty_.empty() && !debounce_->active()) debounce_->start(20, [this] { fire(); });
  }

  void fire() {
    std::set<uint64_t> wake;
    for (const std::string& d : dirty_) {
      auto it = dirs_.find(d);
      if (it != dirs_.end()) wake.insert(it->second.sessions.begin(), it->second.sessions.end());
    }
    dirty_.clear();
    for (uint64_t s : wake) notify_(s);
  }

  Notify notify_;
  UniqueFd fd_;
  std::unique_ptr<common::ev::FdWatch> watch_;
  std::unique_ptr<common::ev::Timer> debounce_;
  std::unique_ptr<common::ev::Timer> poll_;
  std::map<std::string, Dir> dirs_;
  std::map<int, std::string> by_wd_;
  std::set<std::string> dirty_;
};

// A session's view of the user's store: opening a mailbox registers the session
// with the watcher for as long as the mailbox is selected.
class WatchedMailbox : public Mailbox {
 public:
  WatchedMailbox(std::unique_ptr<Mailbox> inner, Watcher& w, std::string dir, uint64_t session)
      : inner_(std::move(inner)), w_(w), dir_(std::move(dir)), session_(session) {
    w_.add(dir_, session_);
  }
  ~WatchedMailbox() override { w_.remove(dir_, session_); }
  bool read_only() const override { return inner_->read_only(); }
  uint32_t uid_validity() const override { return inner_->uid_validity(); }
  uint32_t uid_next() const override { return inner_->uid_next(); }
  uint64_t highest_modseq() const override { return inner_->highest_modseq(); }
  std::vector<std::string> keywords() const override { return inner_->keywords(); }
  Result<MailboxChanges> sync() override { return inner_->sync(); }
  Result<std::vector<MessageMeta>> fetch_meta(const std::vector<uint32_t>& uids) override {
    return inner_->fetch_meta(uids);
  }
  Result<std::string> read(uint32_t uid) override { return inner_->read(uid); }
  Result<std::string> read_header(uint32_t uid) override { return inner_->read_header(uid); }
  Result<StoreResult> store(const std::vector<uint32_t>& uids, StoreMode mode, const std::vector<std::string>& flags,
                            std::optional<uint64_t> unchanged_since) override {
    return inner_->store(uids, mode, flags, unchanged_since);
  }
  Result<CopyResult> copy(const std::vector<uint32_t>& uids, const std::string& dest) override {
    return inner_->copy(uids, dest);
  }
  Result<CopyResult> move(const std::vector<uint32_t>& uids, const std::string& dest) override {
    return inner_->move(uids, dest);
  }
  Result<std::vector<uint32_t>> expunge(const std::optional<std::vector<uint32_t>>& only) override {
    return inner_->expunge(only);
  }
  std::optional<std::string> cache_get(uint32_t uid, std::string_view field) override {
    return inner_->cache_get(uid, field);
  }
  void cache_put(uint32_t uid, std::string_view field, std::string_view value) override {
    inner_->cache_put(uid, field, value);
  }

 private:
  std::unique_ptr<Mailbox> inner_;
  Watcher& w_;
  std::string dir_;
  uint64_t session_;
};

class WatchingStore : public MailStore {
 public:
  WatchingStore(std::shared_ptr<MailStore> store, Watcher& w, uint64_t session)
      : store_(std::move(store)), w_(w), session_(session) {}
  Result<std::vector<MailboxInfo>> list() override { return store_->list(); }
  Status create(const std::string& name) override { return store_->create(name); }
  Status remove(const std::string& name) override { return store_->remove(name); }
  Status rename(const std::string& from, const std::string& to) override { return store_->rename(from, to); }
  Status subscribe(const std::string& name, bool on) override { return store_->subscribe(name, on); }
  Result<std::unique_ptr<Mailbox>> open(const std::string& name, OpenMode mode) override {
    Result<std::unique_ptr<Mailbox>> mb = store_->open(name, mode);
    if (!mb) return mb;
    // What to watch: a Maildir's directory, an mbox's file.
    Result<std::string> dir = make_error(ErrorKind::kNotFound, "no store");
    if (auto* md = dynamic_cast<MaildirStore*>(store_.get())) dir = md->dir_of(name);
    if (auto* mb = dynamic_cast<MboxStore*>(store_.get())) dir = mb->path_of(name);
    if (!dir) return dir.take_error();
    return std::unique_ptr<Mailbox>(new WatchedMailbox(std::move(mb).value(), w_, *dir, session_));
  }
  Result<MailboxStatus> status(const std::string& name) override { return store_->status(name); }
  Result<AppendResult> append(const std::string& name, std::string_view message, const std::vector<std::string>& flags,
                              std::optional<int64_t> date) override {
    return store_->append(name, message, flags, date);
  }
  Result<std::unique_ptr<Spool>> begin_spool(uint64_t size) override { return store_->begin_spool(size); }
  Result<AppendResult> append_spool(const std::string& name, std::unique_ptr<Spool> spool,
                                    const std::vector<std::string>& flags, std::optional<int64_t> date) override {
    return store_->append_spool(name, std::move(spool), flags, date);
  }
  Result<QuotaInfo> quota() override { return store_->quota(); }

 private:
  std::shared_ptr<MailStore> store_;
  Watcher& w_;
  uint64_t session_;
};

// --- the worker -----------------------------------------------------------------------

Status mkdir_p(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (::mkdir(p.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + p, errno);
  }
  return {};
}

// How long a worker stays without sessions before it returns its free heap.
constexpr uint64_t kTrimDelayMs = 1000;

// APPEND messages above this size go to the store's spool (Maildir tmp/) as they
// arrive, instead of into memory: a 200 MB upload then costs the worker a read buffer,
// not 200 MB (twice, with the LF conversion). Below it, the one write at the end is
// cheaper than a file per chunk, and the memory is counted in append_budget_.
constexpr uint64_t kAppendSpoolAbove = 64 * 1024;

class Worker {
 public:
  // `done` runs (posted, once) when the worker has nothing left to do: the control
  // channel is closed and the last session has ended. It destroys the worker while
  // the loop still runs, then stops the loop.
  Worker(common::ev::Loop& loop, const common::Config& cfg, int ctl, std::function<void()> done)
      : loop_(loop), cfg_(cfg), ctl_(ctl), done_(std::move(done)), watcher_(loop, [this](uint64_t s) { wake(s); }) {
    append_budget_.limit = cfg_.bytes("mra_worker_append_memory_limit");
    ctl_watch_ = std::make_unique<common::ev::FdWatch>(loop, ctl_.get());
    trim_timer_ = std::make_unique<common::ev::Timer>(loop);
    ctl_watch_->start(UV_READABLE, [this](int, int) { on_control(); });
  }

  void shutdown() {
    ctl_open_ = false;
    ctl_watch_->stop();
    std::vector<std::shared_ptr<Session>> all;
    for (auto& [id, s] : sessions_) all.push_back(s);
    for (auto& s : all) {
      if (s->imap) s->conn->write(s->imap->bye("Server shutting down."));
      if (s->pop3) s->conn->write(s->pop3->bye("Server shutting down."));
      s->end = "Disconnected: Server shutting down.";
      s->conn->close();
    }
    maybe_exit();
  }

 private:
  struct Session {
    uint64_t id = 0;
    std::string user;
    std::string proto;
    std::shared_ptr<MailStore> store;
    std::unique_ptr<WatchingStore> wstore;
    std::unique_ptr<imap::ImapSession> imap;
    std::unique_ptr<pop3::Pop3Session> pop3;
    std::shared_ptr<Connection> conn;
    std::string rip;
    // How the session ended when we closed it (Dovecot's wording); a client's
    // LOGOUT/QUIT leaves the default.
    std::string end = "Disconnected: Logged out";
  };

  void on_control() {
    Result<std::pair<std::string, UniqueFd>> got = common::net::recv_fd(ctl_.get(), handoff::kMaxPacket);
    if (!got) {
      // tern-mra-postlogin is gone or done with us: finish the sessions, then exit.
      ctl_open_ = false;
      ctl_watch_->stop();
      maybe_exit();
      return;
    }
    std::optional<handoff::Packet> p = handoff::decode(got->first);
    if (!p || p->verb != "SESSION" || !got->second) {
      common::log::error("malformed packet from tern-mra-postlogin; exiting");
      std::exit(EX_PROTOCOL);
    }
    start(*p, std::move(got->second));
  }

  Result<std::shared_ptr<MailStore>> store_for(const handoff::Packet& p) {
    const std::string user = p.get("user");
    auto it = stores_.find(user);
    if (it != stores_.end()) {
      if (auto s = it->second.lock()) return s;
    }
    mda::MailUser mu;
    mu.name = user;
    mu.has_uid = true;
    mu.uid = ::getuid();
    mu.gid = ::getgid();
    mu.home = p.get("home");
    mu.mail = p.get("mail");
    mu.quota_rule = p.get("quota_rule");
    Result<mda::Location> loc = mda::parse_location(mu.mail.empty() ? cfg_.str("mail_location") : mu.mail, mu);
    if (!loc) return loc.take_error();
    if (loc->mbox) return mbox_store_for(user, mu, *loc);
    if (!mu.home.empty()) {
      if (Status s = mkdir_p(mu.home); !s) return s.take_error();
      // A Maildir that leaves the home through a symlink is refused (as tern-mda does).
      if (Status c = common::maildir::check_within(mu.home, loc->root); !c) return c.take_error();
    }
    if (Status s = mkdir_p(loc->root.substr(0, loc->root.rfind('/'))); !s) return s.take_error();
    Result<mda::Quota> q = mda::parse_quota_rule(mu.quota_rule.empty() ? cfg_.str("quota_rule") : mu.quota_rule);
    if (!q) return q.take_error();
    StoreSettings ss;
    ss.root = loc->root;
    ss.fsync = cfg_.str("mail_fsync") == "never" ? common::maildir::Fsync::kNo : common::maildir::Fsync::kYes;
    ss.quota_bytes = q->bytes;
    ss.quota_messages = q->messages;
    Result<std::unique_ptr<MaildirStore>> st = MaildirStore::open(ss);
    if (!st) return st.take_error();
    std::shared_ptr<MailStore> shared(std::move(st).value());
    stores_[user] = shared;
    return shared;
  }

  // mail_location = mbox:<root>:INBOX=<file> (tern-mda's parse; the same locks).
  Result<std::shared_ptr<MailStore>> mbox_store_for(const std::string& user, const mda::MailUser& mu,
                                                    const mda::Location& loc) {
    if (!mu.home.empty()) {
      if (Status s = mkdir_p(mu.home); !s) return s.take_error();
      if (loc.root.rfind(mu.home + "/", 0) == 0) {
        if (Status c = common::maildir::check_within(mu.home, loc.root); !c) return c.take_error();
      }
    }
    if (Status s = mkdir_p(loc.root); !s) return s.take_error();
    Result<mda::Quota> q = mda::parse_quota_rule(mu.quota_rule.empty() ? cfg_.str("quota_rule") : mu.quota_rule);
    if (!q) return q.take_error();
    const mda::Settings ds = mda::Settings::from_config(cfg_);
    MboxSettings ms;
    ms.root = loc.root;
    ms.inbox = loc.inbox;
    ms.locks = ds.locks;
    ms.fsync = ds.fsync;
    ms.quota_bytes = q->bytes;
    Result<std::unique_ptr<MboxStore>> st = MboxStore::open(ms);
    if (!st) return st.take_error();
    std::shared_ptr<MailStore> shared(std::move(st).value());
    stores_[user] = shared;
    return shared;
  }

  void start(const handoff::Packet& p, UniqueFd fd) {
    auto s = std::make_shared<Session>();
    s->id = common::parse_u64(p.get("id")).value_or(0);
    s->user = p.get("user");
    s->proto = p.get("proto");
    s->rip = p.get("rip");
    const bool imap = s->proto == "imap";
    common::log::Channel log(imap ? "imap" : "pop3");
    Connection::Options o;
    // Small: an idle session keeps its read buffer (a long APPEND just takes more reads).
    o.read_chunk = 4096;
    o.idle_timeout_ms = static_cast<uint64_t>(cfg_.seconds(imap ? "imap_idle_timeout" : "pop3_idle_timeout")) * 1000;
    s->conn = Connection::adopt(loop_, std::move(fd), o);
    sessions_[s->id] = s;
    std::weak_ptr<Session> weak = s;
    Connection::Callbacks cb;
    cb.on_data = [this, weak](std::string_view data) {
      auto s = weak.lock();
      if (!s) return;
      if (s->imap) s->imap->feed(data);
      if (s->pop3) s->pop3->feed(data);
      pump(s);
    };
    cb.on_drain = [this, weak] {
      if (auto s = weak.lock()) pump(s);
    };
    cb.on_timeout = [weak](common::net::TimeoutKind) {
      auto s = weak.lock();
      if (!s) return;
      if (s->imap) s->conn->write(s->imap->bye("Disconnected for inactivity."));
      if (s->pop3) s->conn->write(s->pop3->bye("Disconnected for inactivity."));
      s->end = "Disconnected for inactivity";
      s->conn->close();
    };
    cb.on_close = [this, weak](common::net::CloseReason why, const std::string& detail) {
      if (auto s = weak.lock()) ended(s, why, detail);
    };
    s->conn->start(std::move(cb));

    Result<std::shared_ptr<MailStore>> store = store_for(p);
    if (!store) {
      log.error("%s: cannot open the mail store: %s", common::log_escape(s->user).c_str(),
                store.error().message.c_str());
      s->conn->write(imap ? "* BYE [UNAVAILABLE] Internal error occurred. Refer to server log for more information.\r\n"
                          : "-ERR [SYS/TEMP] Internal error occurred. Refer to server log for more information.\r\n");
      s->end = "Disconnected: Internal error";
      s->conn->close();
      return;
    }
    s->store = std::move(store).value();
    common::fault::point("mra.worker.session");  // the sandbox tests
    if (imap) {
      imap::SessionConfig sc;
      sc.tls = p.get("tls") == "1";
      sc.limits.max_line = static_cast<size_t>(cfg_.bytes("imap_max_line_length"));
      sc.limits.max_append = cfg_.bytes("imap_append_limit");
      sc.limits.budget = &append_budget_;
      sc.limits.spool_above = kAppendSpoolAbove;
      sc.max_bad_commands = static_cast<int>(cfg_.integer("imap_max_bad_commands"));
      sc.now = [] { return static_cast<int64_t>(::time(nullptr)); };
      s->wstore = std::make_unique<WatchingStore>(s->store, watcher_, s->id);
      s->imap = std::make_unique<imap::ImapSession>(std::move(sc), *s->wstore, s->user);
      s->conn->write(p.get("ok"));  // the tagged OK the login process held back
      s->imap->feed(p.get("buffered"));
    } else {
      pop3::SessionConfig sc;
      sc.tls = p.get("tls") == "1";
      sc.max_bad_commands = static_cast<int>(cfg_.integer("imap_max_bad_commands"));
      s->pop3 = std::make_unique<pop3::Pop3Session>(std::move(sc));
      pop3::Pop3Session::Step st = s->pop3->open_maildrop(*s->store, s->user);
      s->conn->write(st.out);
      if (st.action == pop3::Pop3Session::Action::kClose) {
        s->conn->close();
        return;
      }
      s->pop3->feed(p.get("buffered"));
    }
    pump(s);
  }

  void pump(const std::shared_ptr<Session>& s) {
    while (!s->conn->closing()) {
      // Output first: a long FETCH comes in pieces, each produced when the last has
      // mostly gone (on_drain calls us again).
      if (s->conn->pending_output() > (256u << 10)) return;
      std::string out;
      bool close = false, wait = false;
      if (s->imap) {
        imap::ImapSession::Step st = s->imap->step();
        out = std::move(st.out);
        using A = imap::ImapSession::Action;
        close = st.action == A::kClose || st.action == A::kStartTls || st.action == A::kAuthenticate ||
                st.action == A::kLoggedIn;
        wait = st.action == A::kNeedInput || st.action == A::kIdle;
      } else {
        pop3::Pop3Session::Step st = s->pop3->step();
        out = std::move(st.out);
        using A = pop3::Pop3Session::Action;
        close = st.action == A::kClose || st.action == A::kStartTls || st.action == A::kAuthenticate ||
                st.action == A::kLoggedIn;
        wait = st.action == A::kNeedInput;
      }
      if (!out.empty()) s->conn->write(out);
      if (close) {
        s->conn->close();
        return;
      }
      if (wait) return;
    }
  }

  void wake(uint64_t id) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session& s = *it->second;
    if (!s.imap || !s.imap->in_idle() || s.conn->closing()) return;
    std::string out = s.imap->poll();
    if (!out.empty()) s.conn->write(out);
  }

  void ended(const std::shared_ptr<Session>& s, common::net::CloseReason why, const std::string& detail) {
    // By the protocol the login process named: a session whose store failed to open
    // has neither core.
    const char* proto = s->proto == "imap" ? "imap" : "pop3";
    common::log::Channel(proto)
        .info("%s(%s): %s%s in=%llu out=%llu", proto, common::log_escape(s->user).c_str(),
              why == common::net::CloseReason::kLocal ? s->end.c_str() : "Disconnected: ",
              why == common::net::CloseReason::kLocal ? ""
              : detail.empty()                        ? common::net::close_reason_name(why)
                                                      : detail.c_str(),
              static_cast<unsigned long long>(s->conn->bytes_in()), static_cast<unsigned long long>(s->conn->bytes_out()));
    sessions_.erase(s->id);
    for (auto it = stores_.begin(); it != stores_.end();) {
      it = it->second.expired() ? stores_.erase(it) : std::next(it);
    }
    if (ctl_open_) {
      std::string done = handoff::encode("DONE", {{"id", std::to_string(s->id)}});
      if (!common::net::send_fd(ctl_.get(), -1, done)) ctl_open_ = false;
    }
    // Destroyed outside the connection's callback; the mailbox handle (and the
    // store, when it is the user's last session) go with it.
    loop_.post([s] {});
    if (sessions_.empty()) {
      // The last session is gone: give the heap that the sessions' buffers grew
      // (FETCH output, messages read) back to the system, or a worker that lingers
      // for the next login keeps its busiest moment's memory (glibc keeps freed
      // memory below the top of the heap). A second later and only if still empty,
      // so clients that log in and out one after the other do not pay for a trim
      // (and the page faults after it) each time.
      trim_timer_->start(kTrimDelayMs, [this] {
        if (sessions_.empty()) ::malloc_trim(0);
      });
    }
    maybe_exit();
  }

  void maybe_exit() {
    if (ctl_open_ || !sessions_.empty()) return;
    if (!done_) return;
    // Two posts: the sessions just ended are released by lambdas posted in this
    // round (their destructors reach into the watcher); `done` destroys the worker,
    // so it runs one round later, after those are gone.
    loop_.post([loop = &loop_, done = std::move(done_)]() mutable { loop->post(std::move(done)); });
    done_ = nullptr;
  }

  common::ev::Loop& loop_;
  const common::Config& cfg_;
  // The APPEND literals all sessions of this worker hold (mra_worker_append_memory_limit);
  // declared before sessions_, whose readers give their reservations back to it.
  imap::MemoryBudget append_budget_;
  UniqueFd ctl_;
  std::function<void()> done_;
  bool ctl_open_ = true;
  std::unique_ptr<common::ev::FdWatch> ctl_watch_;
  std::unique_ptr<common::ev::Timer> trim_timer_;
  Watcher watcher_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
  std::map<std::string, std::weak_ptr<MailStore>> stores_;
};

}  // namespace

int worker_main(int argc, char** argv) {
  std::string config_path = common::default_config_path();
  std::vector<std::string> overrides;
  bool debug = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-c" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "-o" && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else if (a == "-v") {
      debug = true;
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  // A fixed mmap threshold: allocations of 1 MiB and more (LMDB's page lists, 1 MiB
  // and 2 MiB for every user store opened; messages over 1 MiB) get their own
  // mapping, given back when freed. glibc's default raises the threshold to the
  // largest block freed so far, after which such blocks come from the heap: a worker
  // reused after a busy run grew to 46 MiB for 500 idle sessions (bench/run idle,
  // second run), 8 MiB when fresh. Not lower: FETCH's 256 KiB output chunks are
  // better reused from the heap than mapped and faulted in for every chunk.
  ::mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  common::Config cfg = common::load_config_or_exit(config_path, overrides);
  common::init_logging(cfg, "imap", debug);
  common::raise_open_file_limit();  // up to mra_worker_client_limit sessions, a descriptor each
  if (::geteuid() == 0 || ::getuid() == 0) common::log::fatal_exit(EX_NOPERM, "tern-mra --worker refuses to run as root");
  // exec reset the dumpable flag that the uid change had cleared: set it again before
  // the first session brings a user's mail in.
  if (Status s = common::restrict_core_dumps(cfg.boolean("process_core_dumps")); !s) common::log::fatal_exit(EX_OSERR, "%s", s.error().message.c_str());
  const char* fd_env = std::getenv("TERN_MRA_WORKER_FD");
  std::optional<uint64_t> fd = fd_env ? common::parse_u64(fd_env) : std::nullopt;
  if (!fd || *fd < 3 || *fd > 1024) {
    common::log::fatal_exit(EX_USAGE, "tern-mra --worker is started by tern-mra-postlogin, not by hand");
  }
  ::unsetenv("TERN_MRA_WORKER_FD");
  ::umask(077);
  common::ev::Loop loop;
  int stop_count = 0;
  {
    // Everything that owns loop handles is destroyed while the loop still runs.
    auto sigterm = std::make_unique<common::ev::Signal>(loop);
    auto sigint = std::make_unique<common::ev::Signal>(loop);
    std::unique_ptr<Worker> w;
    w = std::make_unique<Worker>(loop, cfg, static_cast<int>(*fd), [&] {
      w.reset();
      sigterm.reset();
      sigint.reset();
      loop.stop();
    });
    auto stop = [&] {
      if (++stop_count > 1 || !w) {
        loop.stop();  // a second signal: stop at once
        return;
      }
      w->shutdown();
    };
    sigterm->start(SIGTERM, stop);
    sigint->start(SIGINT, stop);
    // Last: the sessions' bytes come only after this (common/sandbox.h).
    if (Status s = common::sandbox::enter(cfg, common::sandbox::Profile::kWorker); !s) {
      common::log::fatal_exit(s.error().kind == common::ErrorKind::kConfig ? EX_CONFIG : EX_OSERR, "%s",
                              s.error().message.c_str());
    }
    loop.run();
  }
  return 0;
}

}  // namespace tern::mra
