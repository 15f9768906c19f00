// Fuzz target: LineReader (common/line_reader.h), the first parser every network
// byte meets.
//
// Input: byte 0 picks the line limit, byte 1 the mode, the rest is the stream.
//  - Lines mode: the stream is fed in pieces whose sizes come from the mode byte;
//    the events must equal those of a plain reference splitter over the whole
//    stream, whatever the piece sizes.
//  - Operations mode (mode & 0x80): the stream is a program of feed / drain /
//    take_raw / clear / set_max_line steps; after every drain the reader must hold
//    no LF and at most max_line + 1 bytes, and no line may exceed the limit.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/line_reader.h"

using tern::common::LineReader;

namespace {

struct Event {
  int kind;  // 0 CRLF line, 1 LF line, 2 too long
  std::string text;
  bool operator==(const Event& o) const { return kind == o.kind && text == o.text; }
};

void drain(LineReader& r, std::vector<Event>& out) {
  for (;;) {
    LineReader::Line line;
    LineReader::Status s = r.next(line);
    if (s == LineReader::Status::kNeedMore) break;
    if (s == LineReader::Status::kTooLong) {
      out.push_back({2, ""});
      continue;
    }
    if (line.text.size() > r.max_line() || line.text.find('\n') != std::string_view::npos) std::abort();
    out.push_back({line.ending == LineReader::Ending::kCrLf ? 0 : 1, std::string(line.text)});
  }
  // Drained: no complete line left, and no more than a line's worth buffered.
  if (r.peek().find('\n') != std::string_view::npos) std::abort();
  if (r.buffered() > r.max_line() + 1) std::abort();
}

// What a reader must report for the whole stream: each LF-terminated line (minus one
// CR before the LF) or "too long"; a final unterminated piece is "too long" only if
// it is already longer than a line plus its CR could be.
std::vector<Event> reference(std::string_view in, size_t max) {
  std::vector<Event> out;
  size_t pos = 0;
  for (;;) {
    size_t lf = in.find('\n', pos);
    if (lf == std::string_view::npos) {
      if (in.size() - pos > max + 1) out.push_back({2, ""});
      return out;
    }
    std::string_view seg = in.substr(pos, lf - pos);
    bool crlf = !seg.empty() && seg.back() == '\r';
    if (crlf) seg.remove_suffix(1);
    if (seg.size() > max) {
      out.push_back({2, ""});
    } else {
      out.push_back({crlf ? 0 : 1, std::string(seg)});
    }
    pos = lf + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t max_line = 1 + data[0] % 96;
  const uint8_t mode = data[1];
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);

  if (!(mode & 0x80)) {
    const std::vector<Event> want = reference(in, max_line);
    // Piece sizes cycle through a pattern chosen by the mode byte (1..8 bytes, or whole).
    const size_t pattern[3] = {1u + (mode & 7), 1u + ((mode >> 3) & 7), 1u};
    for (int variant = 0; variant < 2; ++variant) {
      LineReader r(max_line);
      std::vector<Event> got;
      size_t pos = 0, step = 0;
      while (pos < in.size()) {
        size_t n = variant == 0 ? in.size() : pattern[step++ % 3];
        n = std::min(n, in.size() - pos);
        r.feed(in.substr(pos, n));
        pos += n;
        drain(r, got);
      }
      if (got != want) std::abort();
    }
    return 0;
  }

  LineReader r(max_line);
  std::vector<Event> got;
  size_t pos = 0;
  while (pos < in.size()) {
    const uint8_t op = static_cast<uint8_t>(in[pos++]);
    const size_t arg = op >> 2;
    switch (op & 3) {
      case 0: {  // feed the next 1..64 bytes
        size_t n = std::min<size_t>(1 + arg, in.size() - pos);
        r.feed(in.substr(pos, n));
        pos += n;
        break;
      }
      case 1:
        drain(r, got);
        break;
      case 2: {
        size_t before = r.buffered();
        std::string_view raw = r.take_raw(arg);
        if (raw.size() != std::min(arg, before) || r.buffered() != before - raw.size()) std::abort();
        break;
      }
      case 3:
        if (arg == 0) {
          r.clear();
          if (r.buffered() != 0) std::abort();
        } else {
          r.set_max_line(arg);
        }
        break;
    }
  }
  drain(r, got);
  return 0;
}
