// Fuzz target: SMTP/LMTP command lines (common/smtp_command.h).
//
// Input: byte 0 picks the advertised extensions, the rest is one command line.
// Invariants: the parser never crashes; an error is a 5xx reply with a valid
// enhanced code; an accepted MAIL/RCPT path survives a round trip through its wire
// form; a BDAT size is what the digits say.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/smtp_command.h"

using namespace tern::common::smtp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t o = data[0];
  CommandOptions opt;
  opt.lmtp = o & 1;
  opt.size = o & 2;
  opt.eightbitmime = o & 4;
  opt.binarymime = o & 8;
  opt.chunking = o & 16;
  opt.smtputf8 = o & 32;
  opt.dsn = o & 64;
  opt.auth = o & 128;
  std::string_view line(reinterpret_cast<const char*>(data) + 1, size - 1);
  CommandResult r = parse_command(line, opt);
  if (const Reply* rep = std::get_if<Reply>(&r)) {
    if (rep->code < 500 || rep->code > 555) std::abort();
    if (!valid_enhanced(rep->enhanced, rep->code)) std::abort();
    return 0;
  }
  const Command& c = std::get<Command>(r);
  if (c.verb == Verb::kMail || c.verb == Verb::kRcpt) {
    if (!c.path.null && !c.path.postmaster) {
      PathOptions po;
      po.smtputf8 = true;
      po.allow_postmaster = true;
      tern::common::Result<Path> again = parse_path(c.path.wire(), po);
      if (!again) std::abort();
      if (again->mailbox.local_part != c.path.mailbox.local_part || again->mailbox.domain != c.path.mailbox.domain) {
        std::abort();
      }
    }
  }
  if (c.verb == Verb::kBdat && c.bdat_size > 0 && line.find(std::to_string(c.bdat_size)) == std::string_view::npos) {
    std::abort();
  }
  return 0;
}
