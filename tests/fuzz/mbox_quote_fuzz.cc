// Fuzz target: mboxrd From_ quoting (common/mbox.h FromQuoter) against the reader.
//
// Input: byte 0 seeds piece sizes, the rest is a message body (LF line ends).
// Invariants: quoting in pieces equals quoting whole; no line of the quoted text
// starts with "From "; removing one '>' from every /^>+From / line gives the input
// back exactly.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/mbox.h"

using tern::common::mbox::FromQuoter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint32_t seed = data[0] * 2654435761u + 7;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  FromQuoter whole;
  std::string qw;
  whole.feed(in, qw);
  whole.finish(qw);
  FromQuoter pieces;
  std::string qp;
  for (size_t pos = 0; pos < in.size();) {
    seed = seed * 1103515245u + 12345u;
    size_t n = 1 + (seed >> 16) % 9;
    pieces.feed(in.substr(pos, n), qp);
    pos += n;
  }
  pieces.finish(qp);
  if (qw != qp) std::abort();
  std::string back;
  size_t pos = 0;
  while (pos < qw.size()) {
    size_t nl = qw.find('\n', pos);
    size_t end = nl == std::string::npos ? qw.size() : nl + 1;
    std::string_view line(qw.data() + pos, end - pos);
    if (line.substr(0, 5) == "From ") std::abort();
    size_t gts = line.find_first_not_of('>');
    if (gts != std::string_view::npos && gts > 0 && line.substr(gts, 5) == "From ") line.remove_prefix(1);
    back.append(line);
    pos = end;
  }
  if (back != in) std::abort();
  return 0;
}
