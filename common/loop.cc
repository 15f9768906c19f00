#include "common/loop.h"

#include "common/log.h"

namespace tern::common::ev {
namespace {

template <class H>
void close_and_free(H* h) {
  if (!h) return;
  h->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<H*>(x); });
}

struct WorkReq {
  uv_work_t req;
  std::function<void()> work;
  std::function<void()> done;
};

}  // namespace

Loop::Loop() {
  if (int rc = uv_loop_init(&loop_); rc != 0) log::fatal("uv_loop_init: %s", uv_strerror(rc));
  async_ = new uv_async_t;
  uv_async_init(&loop_, async_, &Loop::on_async);
  async_->data = this;
  // The async handle must not keep run() alive on its own.
  uv_unref(reinterpret_cast<uv_handle_t*>(async_));
}

Loop::~Loop() {
  close_and_free(async_);
  // Run the close callbacks of everything still open, then close the loop.
  uv_walk(&loop_, [](uv_handle_t* h, void*) {
    if (!uv_is_closing(h)) {
      // A handle whose owner outlived the loop: close it so the loop can end; its
      // owner must not be used afterwards.
      h->data = nullptr;
      uv_close(h, nullptr);
    }
  }, nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

void Loop::run() { uv_run(&loop_, UV_RUN_DEFAULT); }
void Loop::stop() { uv_stop(&loop_); }

void Loop::queue_work(std::function<void()> work, std::function<void()> done) {
  auto* r = new WorkReq{{}, std::move(work), std::move(done)};
  r->req.data = r;
  int rc = uv_queue_work(
      &loop_, &r->req, [](uv_work_t* w) { static_cast<WorkReq*>(w->data)->work(); },
      [](uv_work_t* w, int) {
        std::unique_ptr<WorkReq> owned(static_cast<WorkReq*>(w->data));
        if (owned->done) owned->done();
      });
  if (rc != 0) {
    // Cannot happen with a valid loop; run inline so no work is lost.
    std::unique_ptr<WorkReq> owned(r);
    owned->work();
    if (owned->done) owned->done();
  }
}

void Loop::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> g(posted_mu_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(async_);
}

void Loop::on_async(uv_async_t* a) {
  auto* self = static_cast<Loop*>(a->data);
  if (!self) return;
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> g(self->posted_mu_);
    fns.swap(self->posted_);
  }
  for (auto& f : fns) f();
}

Timer::Timer(Loop& loop) : h_(new uv_timer_t) {
  uv_timer_init(loop.get(), h_);
  h_->data = this;
}
Timer::~Timer() { close_and_free(h_); }

void Timer::fire(uv_timer_t* t) {
  auto* self = static_cast<Timer*>(t->data);
  if (self && self->cb_) {
    auto cb = self->cb_;  // the callback may destroy the timer or start it anew
    cb();
  }
}

void Timer::start(uint64_t timeout_ms, std::function<void()> cb, uint64_t repeat_ms) {
  cb_ = std::move(cb);
  uv_timer_start(h_, &Timer::fire, timeout_ms, repeat_ms);
}

void Timer::restart(uint64_t timeout_ms) { uv_timer_start(h_, &Timer::fire, timeout_ms, 0); }
void Timer::stop() { uv_timer_stop(h_); }
bool Timer::active() const { return uv_is_active(reinterpret_cast<const uv_handle_t*>(h_)); }

Signal::Signal(Loop& loop) : h_(new uv_signal_t) {
  uv_signal_init(loop.get(), h_);
  h_->data = this;
}
Signal::~Signal() { close_and_free(h_); }
void Signal::start(int signum, std::function<void()> cb) {
  cb_ = std::move(cb);
  uv_signal_start(
      h_,
      [](uv_signal_t* s, int) {
        auto* self = static_cast<Signal*>(s->data);
        if (self && self->cb_) self->cb_();
      },
      signum);
}
void Signal::stop() { uv_signal_stop(h_); }

FdWatch::FdWatch(Loop& loop, int fd) : h_(new uv_poll_t) {
  if (int rc = uv_poll_init(loop.get(), h_, fd); rc != 0) log::panic("uv_poll_init(%d): %s", fd, uv_strerror(rc));
  h_->data = this;
}
FdWatch::~FdWatch() { close_and_free(h_); }
void FdWatch::start(int events, std::function<void(int, int)> cb) {
  cb_ = std::move(cb);
  uv_poll_start(h_, events, [](uv_poll_t* p, int status, int ev) {
    auto* self = static_cast<FdWatch*>(p->data);
    if (self && self->cb_) {
      auto cb = self->cb_;
      cb(status, ev);
    }
  });
}
void FdWatch::stop() { uv_poll_stop(h_); }

}  // namespace tern::common::ev
