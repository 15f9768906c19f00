// Fuzz target: the DATA reader (common/smtp_data.h) against a reference.
//
// Input: byte 0 seeds the piece sizes, the rest is the stream after "354".
// Invariants: feeding in pieces gives exactly what feeding it whole gives; DATA ends
// exactly at the first CRLF "." CRLF whose first CRLF is a real line end (or at a
// leading ".\r\n"), never at a bare-LF or bare-CR variant; the output is the input
// up to there with the stuffing dots removed; bare LF/CR flags match the bytes.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/smtp_data.h"

using tern::common::smtp::DataReader;

namespace {

struct Ref {
  bool done = false;
  size_t consumed = 0;
  std::string out;
};

// The reference: a line splitter on CRLF only.
Ref reference(std::string_view in) {
  Ref r;
  size_t pos = 0;
  while (true) {
    size_t crlf = in.find("\r\n", pos);
    if (crlf == std::string_view::npos) {
      std::string_view rest = in.substr(pos);
      // An unfinished line: emitted as far as it is certain (a trailing CR or a
      // leading lone dot may still turn out to be a terminator or stuffing).
      if (!rest.empty() && rest[0] == '.') rest.remove_prefix(1);
      if (!rest.empty() && rest.back() == '\r') rest.remove_suffix(1);
      r.out.append(rest);
      return r;
    }
    std::string_view line = in.substr(pos, crlf - pos);
    if (line == ".") {
      r.done = true;
      r.consumed = crlf + 2;
      return r;
    }
    if (!line.empty() && line[0] == '.') line.remove_prefix(1);
    r.out.append(line);
    r.out.append("\r\n");
    pos = crlf + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint32_t seed = data[0] * 2654435761u + 1;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  DataReader whole;
  std::string out_whole;
  DataReader::Feed fw = whole.feed(in, out_whole);

  DataReader pieces;
  std::string out_pieces;
  size_t pos = 0, consumed = 0;
  bool done = false;
  while (pos < in.size() && !done) {
    seed = seed * 1103515245u + 12345u;
    size_t n = 1 + (seed >> 16) % 7;
    std::string_view piece = in.substr(pos, n);
    DataReader::Feed f = pieces.feed(piece, out_pieces);
    consumed += f.consumed;
    done = f.done;
    if (!done && f.consumed != piece.size()) std::abort();
    pos += piece.size();
  }
  if (fw.done != done || out_whole != out_pieces) std::abort();
  if (done && fw.consumed != consumed) std::abort();
  if (whole.bare_lf() != pieces.bare_lf() || whole.bare_cr() != pieces.bare_cr()) std::abort();

  Ref ref = reference(in);
  if (ref.done != fw.done) std::abort();
  if (ref.done && ref.consumed != fw.consumed) std::abort();
  if (ref.out != out_whole) std::abort();
  // Flags: a bare LF or CR in the consumed part of the input.
  std::string_view used = in.substr(0, fw.done ? fw.consumed : in.size());
  bool lf = false, cr = false;
  for (size_t i = 0; i < used.size(); ++i) {
    if (used[i] == '\n' && (i == 0 || used[i - 1] != '\r')) lf = true;
    if (used[i] == '\r' && i + 1 < used.size() && used[i + 1] != '\n') cr = true;
  }
  if (lf != whole.bare_lf() || cr != whole.bare_cr()) std::abort();
  return 0;
}
