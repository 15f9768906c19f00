// Fuzz target: RFC 5321 paths (common/smtp_address.h).
//
// Input: byte 0 picks the options, the rest is the path text.
// Invariants: no crash; an accepted path re-parses from its wire form to the same
// mailbox; its parts respect the length bounds; without SMTPUTF8 nothing non-ASCII
// is accepted; the relay-trick predicates agree with the local part's bytes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/smtp_address.h"

using namespace tern::common::smtp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  PathOptions opt;
  opt.allow_null = data[0] & 1;
  opt.allow_postmaster = data[0] & 2;
  opt.smtputf8 = data[0] & 4;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  tern::common::Result<Path> p = parse_path(text, opt);
  if (!p) return 0;
  if (p->null) {
    if (!opt.allow_null || text != "<>") std::abort();
    return 0;
  }
  const Mailbox& m = p->mailbox;
  if (m.local_part.size() > kMaxLocalPart || m.domain.size() > kMaxDomain) std::abort();
  if (!opt.smtputf8) {
    for (unsigned char c : text) {
      if (c >= 0x80) std::abort();
    }
  }
  if (!valid_utf8(m.local_part) || !valid_utf8(m.domain)) std::abort();
  if (m.has_percent_hack() != (m.local_part.find('%') != std::string::npos)) std::abort();
  PathOptions again_opt = opt;
  again_opt.allow_postmaster = true;
  tern::common::Result<Path> again = parse_path(p->wire(), again_opt);
  if (!again || again->mailbox.local_part != m.local_part || again->mailbox.domain != m.domain) std::abort();
  return 0;
}
