// Fuzzes the hand-over packets of tern-mra (mra/handoff.h), which tern-mra-postlogin
// (root) reads from the login process: decode() must never crash, and whatever it
// accepts must encode back to a packet that decodes to the same verb and fields.
// The frame header parser is fed the first bytes too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mra/handoff.h"

using namespace tern::mra::handoff;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)frame_length(in);
  if (std::optional<Packet> p = decode(in)) {
    std::string again = encode(p->verb, p->fields);
    std::optional<Packet> q = decode(again);
    if (!q || q->verb != p->verb || q->fields != p->fields) __builtin_trap();
  }
  return 0;
}
