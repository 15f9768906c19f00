#include "common/record.h"

namespace tern::common {

void RecordWriter::varint(uint64_t v) {
  while (v >= 0x80) {
    out_ += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out_ += static_cast<char>(v);
}

void RecordWriter::bytes(uint8_t tag, std::string_view v) {
  out_ += static_cast<char>(tag);
  varint(v.size());
  out_.append(v.data(), v.size());
}

void RecordWriter::u64(uint8_t tag, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (8 * i));
  bytes(tag, std::string_view(buf, 8));
}

std::optional<uint64_t> RecordReader::varint() {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (data_.empty()) return std::nullopt;
    uint8_t b = static_cast<uint8_t>(data_[0]);
    data_.remove_prefix(1);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  return std::nullopt;
}

bool RecordReader::next(uint8_t& tag, std::string_view& value) {
  if (data_.empty() || error_) return false;
  tag = static_cast<uint8_t>(data_[0]);
  data_.remove_prefix(1);
  std::optional<uint64_t> len = varint();
  if (!len || *len > data_.size()) {
    error_ = true;
    return false;
  }
  value = data_.substr(0, *len);
  data_.remove_prefix(*len);
  return true;
}

uint64_t RecordReader::as_u64(std::string_view v) {
  uint64_t x = 0;
  for (size_t i = 0; i < v.size() && i < 8; ++i) x |= static_cast<uint64_t>(static_cast<uint8_t>(v[i])) << (8 * i);
  return x;
}

}  // namespace tern::common
