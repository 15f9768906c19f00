// Fuzz target: base64 (common/text.h), which decodes SASL responses (AUTH PLAIN,
// AUTHENTICATE) straight from clients.
//
// Any input: decode must not crash; what it accepts re-encodes to the same length
// and decodes back to the same bytes; and encode then decode of the raw input is the
// identity.
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "common/text.h"

using tern::common::base64_decode;
using tern::common::base64_encode;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::optional<std::string> d = base64_decode(in);
  if (d) {
    if (in.size() % 4 != 0) std::abort();
    const std::string e = base64_encode(*d);
    if (e.size() != in.size()) std::abort();
    std::optional<std::string> again = base64_decode(e);
    if (!again || *again != *d) std::abort();
  }
  const std::string e = base64_encode(in);
  if (e.size() != (in.size() + 2) / 3 * 4) std::abort();
  std::optional<std::string> back = base64_decode(e);
  if (!back || *back != in) std::abort();
  return 0;
}
