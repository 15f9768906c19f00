// Fuzz target: the maildrop file parser (mta/maildrop.h). A maildrop file is
// written by any local user, so pickup treats it as untrusted input.
// Invariants: a parsed file round-trips (its header re-serialised is a prefix of
// the input, and the body offset is where it ends); bounds hold.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/smtp_data.h"
#include "mta/maildrop.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t off = 0;
  auto env = tern::mta::parse_maildrop(in, off);
  if (!env.ok()) return 0;
  if (off > in.size()) std::abort();
  if (env->rcpts.size() > tern::mta::kMaildropMaxRcpts) std::abort();
  std::string again = tern::mta::maildrop_header(*env);
  if (again != in.substr(0, off)) std::abort();
  // Every address passed the SMTP grammar: nothing after it, no CR or LF in it.
  for (const std::string& r : env->rcpts) {
    if (!tern::mta::parse_local_address(r, "").ok()) std::abort();
  }
  // The line-end normaliser never loses a byte and leaves no bare CR or LF.
  std::string crlf = tern::common::smtp::normalize_line_ends(in.substr(off));
  if (crlf.size() < in.size() - off) std::abort();
  for (size_t i = 0; i < crlf.size(); ++i) {
    if (crlf[i] == '\n' && (i == 0 || crlf[i - 1] != '\r')) std::abort();
    if (crlf[i] == '\r' && (i + 1 == crlf.size() || crlf[i + 1] != '\n')) std::abort();
  }
  return 0;
}
