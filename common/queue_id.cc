#include "common/queue_id.h"

#include <sys/time.h>

#include <atomic>
#include <cstring>

namespace tern::common {
namespace {

// Digits and consonants: 10 + 21 + 21 = 52 characters, in ASCII order so that the
// string order of equal-length ids is their numeric order.
constexpr char kAlphabet[] = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";
constexpr uint64_t kBase = 52;
static_assert(sizeof(kAlphabet) - 1 == kBase);

void append_fixed(std::string& out, uint64_t v, int digits) {
  char buf[16];
  for (int i = digits - 1; i >= 0; --i) {
    buf[i] = kAlphabet[v % kBase];
    v /= kBase;
  }
  out.append(buf, static_cast<size_t>(digits));
}

}  // namespace

std::string make_queue_id(uint64_t seconds, uint32_t microseconds, uint32_t counter) {
  std::string id;
  id.reserve(13);
  append_fixed(id, seconds, 6);       // 52^6 seconds: past the year 2600
  append_fixed(id, microseconds, 4);  // 52^4 > 10^6
  append_fixed(id, counter % (kBase * kBase * kBase), 3);
  return id;
}

std::string new_queue_id() {
  static std::atomic<uint32_t> counter{0};
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  return make_queue_id(static_cast<uint64_t>(tv.tv_sec), static_cast<uint32_t>(tv.tv_usec), counter++);
}

bool valid_queue_id(const std::string& id) {
  if (id.size() < 6 || id.size() > 32) return false;
  for (char c : id) {
    if (!std::memchr(kAlphabet, c, kBase)) return false;
  }
  return true;
}

std::optional<uint64_t> queue_id_seconds(std::string_view id) {
  if (id.size() < 13 || id.size() > 32) return std::nullopt;
  uint64_t v = 0;
  for (size_t i = 0; i < id.size(); ++i) {
    const void* at = std::memchr(kAlphabet, id[i], kBase);
    if (!at) return std::nullopt;
    if (i < 6) v = v * kBase + static_cast<uint64_t>(static_cast<const char*>(at) - kAlphabet);
  }
  return v;
}

}  // namespace tern::common
