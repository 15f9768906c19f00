// Fuzz target: the record decoders of the per-user mailbox index
// (common/mailbox_index.h decode_record / decode_meta), fed the value bytes of a
// corrupted or hostile LMDB record (the index file is the mailbox owner's, and any
// program of that user can write it).
//
// Invariants: no crash and no read past the value (the input is an exact-size
// copy, so ASan sees any over-read); whatever either decoder accepts is exactly what
// the encoder writes for the decoded fields (decode never accepts what encode could
// not produce), and a decoded message record names a file that is a plain maildir
// entry of the message's own base name (the index joins `file` to a directory and
// renames and unlinks that path). The encoder's output, built from fields taken from
// the input, always decodes back to the same fields.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/mailbox_index.h"
#include "common/maildir.h"

using namespace tern::common;
using namespace tern::common::index;

namespace {

bool same(const MessageRecord& a, const MessageRecord& b) {
  return a.uid == b.uid && a.base == b.base && a.file == b.file && a.in_new == b.in_new && a.flags == b.flags &&
         a.modseq == b.modseq && a.size == b.size && a.vsize == b.vsize && a.internal_date == b.internal_date &&
         a.save_date == b.save_date && a.envelope == b.envelope && a.bodystructure == b.bodystructure;
}

bool same(const MailboxStatus& a, const MailboxStatus& b) {
  return a.uid_validity == b.uid_validity && a.uid_next == b.uid_next && a.highest_modseq == b.highest_modseq &&
         a.messages == b.messages && a.bytes == b.bytes;
}

// Takes the next n bytes of the input (fewer at its end).
struct Cursor {
  std::string_view d;
  uint64_t u64() {
    uint64_t v = 0;
    for (int i = 0; i < 8 && !d.empty(); ++i) {
      v = (v << 8) | static_cast<uint8_t>(d[0]);
      d.remove_prefix(1);
    }
    return v;
  }
  std::string str() {
    size_t n = d.empty() ? 0 : static_cast<uint8_t>(d[0]) % 32;
    if (!d.empty()) d.remove_prefix(1);
    n = std::min(n, d.size());
    std::string s(d.substr(0, n));
    d.remove_prefix(n);
    return s;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The value as LMDB would hand it over: its own exact-size buffer.
  std::vector<char> buf(data, data + size);
  std::string_view v(buf.data(), buf.size());

  MessageRecord rec;
  if (decode_record(v, 7, rec)) {
    if (encode_record(rec) != v) std::abort();
    if (!maildir::valid_entry_name(rec.file)) std::abort();
    if (maildir::parse_name(rec.file).base != rec.base) std::abort();
    if (rec.uid != 7) std::abort();
  }
  uint32_t id = 0;
  MailboxStatus st;
  if (decode_meta(v, id, st)) {
    if (encode_meta(id, st) != v) std::abort();
  }

  // The other direction: fields from the input, encoded, decode to the same fields
  // (when they are fields a real record could hold).
  Cursor c{v};
  MessageRecord m;
  m.uid = 9;
  m.modseq = c.u64();
  m.size = c.u64();
  m.vsize = c.u64();
  m.internal_date = static_cast<int64_t>(c.u64());
  m.save_date = static_cast<int64_t>(c.u64());
  m.in_new = m.modseq & 1;
  m.file = c.str();
  m.base = maildir::parse_name(m.file).base;
  m.flags = c.str();
  m.envelope = c.str();
  m.bodystructure = c.str();
  MessageRecord back;
  const bool ok = decode_record(encode_record(m), 9, back);
  if (maildir::valid_entry_name(m.file) && (!ok || !same(m, back))) std::abort();
  MailboxStatus s{static_cast<uint32_t>(m.size), static_cast<uint32_t>(m.vsize), m.modseq,
                  static_cast<uint32_t>(m.save_date), static_cast<uint64_t>(m.internal_date)};
  uint32_t id2 = 0;
  MailboxStatus s2;
  if (!decode_meta(encode_meta(static_cast<uint32_t>(m.size >> 32), s), id2, s2) || !same(s, s2) ||
      id2 != static_cast<uint32_t>(m.size >> 32)) {
    std::abort();
  }
  return 0;
}
