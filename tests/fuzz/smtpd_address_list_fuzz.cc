// Fuzz target: the header scan of sendmail -t (mta/sendmail_args.h): address
// lists with groups, quotes, comments and angle brackets, and Bcc removal.
// Invariants: no crash; remove_bcc never adds bytes and leaves no Bcc header that
// header_recipients could still read; every extracted address is non-empty and
// has no space, comma or angle bracket.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mta/sendmail_args.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  for (const std::string& a : tern::mta::header_recipients(in)) {
    if (a.empty() || a.find_first_of(" <>") != std::string::npos) std::abort();
  }
  for (const std::string& a : tern::mta::parse_address_list(in)) {
    if (a.empty() || a.find(' ') != std::string::npos) std::abort();
  }
  std::string stripped = tern::mta::remove_bcc(in);
  if (stripped.size() > in.size()) std::abort();
  if (tern::mta::has_header(stripped, "Bcc")) std::abort();
  return 0;
}
