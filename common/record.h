// A small tagged binary record format for values stored in LMDB (queue envelopes,
// recipient state). Each field is a one-byte tag, a varint length and the bytes;
// readers skip tags they do not know, so a newer writer's records stay readable.
// Not for network input: records come only from our own stores, but the reader still
// checks every length against the buffer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::common {

class RecordWriter {
 public:
  void bytes(uint8_t tag, std::string_view v);
  void u64(uint8_t tag, uint64_t v);
  void i64(uint8_t tag, int64_t v) { u64(tag, static_cast<uint64_t>(v)); }
  void boolean(uint8_t tag, bool v) { u64(tag, v ? 1 : 0); }
  const std::string& data() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void varint(uint64_t v);
  std::string out_;
};

class RecordReader {
 public:
  explicit RecordReader(std::string_view data) : data_(data) {}
  // The next field; false at the end or on a malformed record (see error()).
  bool next(uint8_t& tag, std::string_view& value);
  bool error() const { return error_; }
  static uint64_t as_u64(std::string_view v);

 private:
  std::optional<uint64_t> varint();
  std::string_view data_;
  bool error_ = false;
};

}  // namespace tern::common
