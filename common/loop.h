// The libuv event loop and RAII owners for its handles.
//
// One Loop per process, run on the main thread. Handles follow one rule (CMake's
// cmUVHandlePtr, uvw): a handle has one move-only owner; destroying the owner calls
// uv_close() and the memory is freed in the close callback, so libuv never touches
// freed memory. Callbacks reach their owner through handle->data, cleared before
// close, so a destroyed owner is never called back.
//
// Blocking work (fsync batches, PAM, getpw*) goes to the libuv threadpool through
// Loop::queue_work; its completion runs back on the loop thread.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace tern::common::ev {

class Loop {
 public:
  Loop();
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }
  // Runs until stop() or until nothing is left to do.
  void run();
  void stop();
  // Milliseconds since an arbitrary point, cached per loop iteration.
  uint64_t now_ms() { return uv_now(&loop_); }

  // Runs `work` on the threadpool, then `done` on the loop thread. `work` must not
  // touch loop objects.
  void queue_work(std::function<void()> work, std::function<void()> done);
  // Runs `fn` on the loop thread soon; callable from any thread.
  void post(std::function<void()> fn);

 private:
  static void on_async(uv_async_t* a);
  uv_loop_t loop_;
  uv_async_t* async_ = nullptr;
  std::mutex posted_mu_;
  std::vector<std::function<void()>> posted_;
};

// A one-shot or repeating timer.
class Timer {
 public:
  explicit Timer(Loop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // (Re)starts: fires after `timeout_ms`, then every `repeat_ms` if non-zero.
  void start(uint64_t timeout_ms, std::function<void()> cb, uint64_t repeat_ms = 0);
  // Restarts with the callback given to the last start(): no allocation, for timers
  // that are pushed back on every read.
  void restart(uint64_t timeout_ms);
  void stop();
  bool active() const;

 private:
  static void fire(uv_timer_t* t);
  uv_timer_t* h_;
  std::function<void()> cb_;
};

// A signal watcher (SIGHUP, SIGTERM, SIGCHLD...).
class Signal {
 public:
  explicit Signal(Loop& loop);
  ~Signal();
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  void start(int signum, std::function<void()> cb);
  void stop();

 private:
  uv_signal_t* h_;
  std::function<void()> cb_;
};

// Readiness of a raw file descriptor. The fd is not owned.
class FdWatch {
 public:
  FdWatch(Loop& loop, int fd);
  ~FdWatch();
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;
  // events: UV_READABLE | UV_WRITABLE; cb gets (status, events).
  void start(int events, std::function<void(int status, int events)> cb);
  void stop();

 private:
  uv_poll_t* h_;
  std::function<void(int, int)> cb_;
};

}  // namespace tern::common::ev
