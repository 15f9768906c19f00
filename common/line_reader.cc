#include "common/line_reader.h"

#include <cstring>

namespace tern::common {

void LineReader::feed(std::string_view data) {
  if (discarding_) {
    // Still inside an overlong line: drop bytes up to and including the LF.
    const void* lf = std::memchr(data.data(), '\n', data.size());
    if (!lf) return;
    size_t n = static_cast<size_t>(static_cast<const char*>(lf) - data.data()) + 1;
    data.remove_prefix(n);
    discarding_ = false;
  }
  compact();
  buf_.append(data.data(), data.size());
}

void LineReader::compact() {
  if (off_ == 0) return;
  if (off_ == buf_.size()) {
    buf_.clear();
    off_ = 0;
    return;
  }
  // Move the tail down only when the dead prefix is large, to keep feed() O(1) amortised.
  if (off_ >= 4096 && off_ * 2 >= buf_.size()) {
    buf_.erase(0, off_);
    off_ = 0;
  }
}

LineReader::Status LineReader::next(Line& out) {
  if (discarding_) return Status::kNeedMore;
  size_t avail = buf_.size() - off_;
  const char* base = buf_.data() + off_;
  const void* lf = scanned_ < avail ? std::memchr(base + scanned_, '\n', avail - scanned_) : nullptr;
  if (!lf) {
    scanned_ = avail;
    if (avail > max_line_ + 1) {  // +1: room for the CR of a CRLF not yet complete
      // Drop the overlong line: what is buffered and what arrives up to the next LF.
      buf_.clear();
      off_ = 0;
      scanned_ = 0;
      discarding_ = true;
      return Status::kTooLong;
    }
    return Status::kNeedMore;
  }
  size_t end = static_cast<size_t>(static_cast<const char*>(lf) - base);  // index of LF
  size_t text_len = end;
  out.ending = Ending::kLf;
  if (end > 0 && base[end - 1] == '\r') {
    --text_len;
    out.ending = Ending::kCrLf;
  }
  off_ += end + 1;
  scanned_ = 0;
  if (text_len > max_line_) return Status::kTooLong;
  out.text = std::string_view(base, text_len);
  return Status::kLine;
}

std::string_view LineReader::take_raw(size_t n) {
  size_t avail = buf_.size() - off_;
  if (n > avail) n = avail;
  std::string_view v(buf_.data() + off_, n);
  off_ += n;
  scanned_ = 0;
  return v;
}

void LineReader::clear() {
  buf_.clear();
  off_ = 0;
  scanned_ = 0;
  discarding_ = false;
}

}  // namespace tern::common
