// defer(): run a one-off cleanup when the scope ends (Seastar util/defer.hh).
#pragma once

#include <utility>

namespace tern::common {

template <class F>
class [[nodiscard]] Deferred {
 public:
  explicit Deferred(F f) : f_(std::move(f)) {}
  Deferred(const Deferred&) = delete;
  Deferred& operator=(const Deferred&) = delete;
  ~Deferred() {
    if (armed_) f_();
  }
  void cancel() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

template <class F>
Deferred<F> defer(F f) {
  return Deferred<F>(std::move(f));
}

}  // namespace tern::common
