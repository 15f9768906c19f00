// Fuzzes modified UTF-7 both ways. Decoding is strict, so a name has one spelling:
// whatever decodes must encode back to exactly the input; whatever encodes must
// decode back to exactly the UTF-8 it came from.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "mra/imap_mutf7.h"

using namespace tern::mra::imap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (std::optional<std::string> utf8 = mutf7_decode(in)) {
    std::optional<std::string> again = mutf7_encode(*utf8);
    if (!again || *again != in) __builtin_trap();
  }
  if (std::optional<std::string> m = mutf7_encode(in)) {
    std::optional<std::string> back = mutf7_decode(*m);
    if (!back || *back != in) __builtin_trap();
  }
  return 0;
}
