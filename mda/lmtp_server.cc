#include "mda/lmtp_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include "common/connection.h"
#include "common/log.h"

namespace tern::mda {

using common::net::Connection;

class LmtpConnection : public LmtpSession::Host, public std::enable_shared_from_this<LmtpConnection> {
 public:
  LmtpConnection(LmtpServer* server, std::shared_ptr<Connection> conn) : server_(server), conn_(std::move(conn)) {}

  void start(LmtpSession::Options opt, std::string id) {
    const common::net::PeerInfo& p = conn_->peer();
    opt.peer = p.is_unix ? "local" : "[" + p.address + "]";
    const std::vector<uid_t>& ok = server_->id_peers_;
    id_peer_ = p.is_unix && p.has_creds && std::find(ok.begin(), ok.end(), p.uid) != ok.end();
    session_ = std::make_shared<LmtpSession>(std::move(opt), this, std::move(id));
    std::weak_ptr<LmtpConnection> weak = weak_from_this();
    Connection::Callbacks cb;
    cb.on_data = [weak](std::string_view d) {
      if (auto self = weak.lock()) self->session_->on_input(d);
    };
    cb.on_close = [weak](common::net::CloseReason reason, const std::string& detail) {
      auto self = weak.lock();
      if (!self) return;
      self->session_->on_closed();
      self->conn_.reset();
      self->server_->finished(self.get());
    };
    cb.on_timeout = [weak](common::net::TimeoutKind) {
      if (auto self = weak.lock()) self->session_->on_timeout();
    };
    conn_->start(std::move(cb));
    session_->start();
  }

  void write(std::string_view bytes) override {
    if (conn_) conn_->write(bytes);
  }
  void close() override {
    if (conn_) conn_->close();
  }
  void pause(bool paused) override {
    if (!conn_) return;
    if (paused) {
      conn_->pause_reading();
    } else {
      conn_->resume_reading();
    }
  }
  void lookup(const std::string& user, LookupDone done) override {
    // Hold ourselves until the answer comes (the peer may go away meanwhile).
    auto self = shared_from_this();
    server_->lookup_(user, [self, done = std::move(done)](common::Result<MailUser> u) { done(std::move(u)); });
  }
  void deliver(std::shared_ptr<const MessageSpool> body, std::vector<DeliveryJob> jobs, DeliverDone done) override {
    struct Batch {
      std::vector<Outcome> outcomes;
      size_t left = 0;
      DeliverDone done;
    };
    auto batch = std::make_shared<Batch>();
    batch->outcomes.resize(jobs.size());
    batch->left = jobs.size();
    batch->done = std::move(done);
    auto self = shared_from_this();
    for (size_t i = 0; i < jobs.size(); ++i) {
      ++server_->active_work_;
      auto job = std::make_shared<DeliveryJob>(std::move(jobs[i]));
      auto out = std::make_shared<Outcome>();
      const Settings* settings = &server_->settings_;
      common::maildir::DirSyncer* syncer = &server_->syncer_;
      DeliveryHelper* helper = server_->helper_;
      const uid_t me = ::geteuid();
      server_->loop_.queue_work(
          [job, out, body, settings, syncer, helper, me] {
            // A system user's mail is written by a process running as that user.
            if (helper && job->user.has_uid && job->user.uid != me) {
              *out = helper->deliver(*job, *body);
            } else {
              *out = mda::deliver(*settings, job->user, job->envelope, *body, syncer);
            }
          },
          [self, batch, out, i] {
            batch->outcomes[i] = std::move(*out);
            if (--batch->left == 0) batch->done(std::move(batch->outcomes));
            self->server_->work_done();
          });
    }
  }

  bool delivery_ids() const override { return server_->ids_ != nullptr && id_peer_; }
  bool delivered_before(const std::string& id, const MailUser& user, const std::string& recipient) override {
    if (!delivery_ids()) return false;
    // Most pairs are in the user's mailbox index (recorded with the UID), the rest
    // in the delivery-id store.
    return index_has_delivery_key(server_->settings_, user, delivery_key(id, recipient)) ||
           server_->ids_->seen(id, recipient);
  }
  void record_delivered(const std::string& id, const std::vector<std::string>& recipients,
                        RecordDone done) override {
    if (!delivery_ids()) {
      done({});
      return;
    }
    // On the threadpool: DeliveryIds::record blocks on an fdatasync, and records
    // made at the same time share it.
    ++server_->active_work_;
    auto self = shared_from_this();
    auto status = std::make_shared<common::Status>();
    DeliveryIds* ids = server_->ids_;
    server_->loop_.queue_work(
        [ids, id, recipients, status] { *status = ids->record(id, recipients, static_cast<int64_t>(::time(nullptr))); },
        [self, status, done = std::move(done)] {
          done(*status);
          self->server_->work_done();
        });
  }

  void shutdown() {
    if (conn_) conn_->close();
  }

 private:
  LmtpServer* server_;
  std::shared_ptr<Connection> conn_;
  std::shared_ptr<LmtpSession> session_;
  bool id_peer_ = false;
};

LmtpServer::LmtpServer(common::ev::Loop& loop, Settings settings, LmtpSession::Options options, uint64_t idle_timeout_ms,
                       Lookup lookup, DeliveryHelper* helper, DeliveryIds* ids)
    : loop_(loop), settings_(std::move(settings)), options_(std::move(options)), idle_timeout_ms_(idle_timeout_ms),
      lookup_(std::move(lookup)), helper_(helper), ids_(ids) {}

LmtpServer::~LmtpServer() = default;

void LmtpServer::listen(int fd, const std::string& name) {
  auto l = std::make_unique<common::net::Listener>(loop_, common::UniqueFd(::dup(fd)), name);
  l->start([this](common::UniqueFd c) { accepted(std::move(c)); });
  listeners_.push_back(std::move(l));
}

void LmtpServer::accepted(common::UniqueFd fd) {
  if (stopping_) return;
  if (!allowed_peers_.empty()) {
    common::net::PeerInfo p = common::net::peer_info(fd.get());
    if (p.is_unix &&
        (!p.has_creds || std::find(allowed_peers_.begin(), allowed_peers_.end(), p.uid) == allowed_peers_.end())) {
      common::log::warning("connection from uid %d (pid %d) refused: only root, mail_owner, mail_uid and lmtp_allow_users "
                   "may deliver here",
                   static_cast<int>(p.uid), static_cast<int>(p.pid));
      static constexpr std::string_view kRefused = "554 5.7.1 Not allowed to deliver through this socket\r\n";
      // A fresh socket's send buffer takes the line without blocking; the fd closes.
      (void)!::send(fd.get(), kRefused.data(), kRefused.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      return;
    }
  }
  Connection::Options o;
  o.idle_timeout_ms = idle_timeout_ms_;
  auto conn = Connection::adopt(loop_, std::move(fd), o);
  auto c = std::make_shared<LmtpConnection>(this, conn);
  conns_.insert(c);
  c->start(options_, std::to_string(::getpid()) + "-" + std::to_string(++next_id_));
}

void LmtpServer::finished(LmtpConnection* c) {
  for (auto it = conns_.begin(); it != conns_.end(); ++it) {
    if (it->get() == c) {
      conns_.erase(it);
      break;
    }
  }
  if (stopping_ && conns_.empty() && active_work_ == 0 && on_stopped_) {
    auto f = std::move(on_stopped_);
    on_stopped_ = nullptr;
    f();
  }
}

void LmtpServer::work_done() {
  --active_work_;
  if (stopping_ && conns_.empty() && active_work_ == 0 && on_stopped_) {
    auto f = std::move(on_stopped_);
    on_stopped_ = nullptr;
    f();
  }
}

void LmtpServer::stop(std::function<void()> done) {
  stopping_ = true;
  listeners_.clear();
  on_stopped_ = std::move(done);
  std::vector<std::shared_ptr<LmtpConnection>> all(conns_.begin(), conns_.end());
  for (auto& c : all) c->shutdown();
  if (conns_.empty() && active_work_ == 0 && on_stopped_) {
    auto f = std::move(on_stopped_);
    on_stopped_ = nullptr;
    f();
  }
}

}  // namespace tern::mda
