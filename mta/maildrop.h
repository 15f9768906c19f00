// The maildrop file: what sendmail leaves in $maildrop_directory when tern-mta is
// not running, and what tern-mta's pickup reads at start (Postfix's maildrop queue
// and pickup(8)). One message per file, written to a dot-name, fsynced, then
// renamed, so pickup never sees half a file:
//
//   TERN-MAILDROP 1\n
//   S <sender>\n            envelope sender: an address, "<>", or empty for the user
//   R <recipient>\n         one line per recipient
//   \n
//   <the message, as the program gave it: LF or CRLF line endings>
//
// The submitting user is the file's owner (the directory is sticky and not
// listable, so a user can neither forge another's file nor remove it). The parser
// is strict and bounded: a file from an unprivileged user is untrusted input.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::mta {

struct MaildropEnvelope {
  std::string sender;
  std::vector<std::string> rcpts;
};

// Bounds: a maildrop file names at most this many recipients, each line this long.
inline constexpr size_t kMaildropMaxRcpts = 10000;
inline constexpr size_t kMaildropMaxLine = 4096;

std::string maildrop_header(const MaildropEnvelope& env);
// Parses the header; `body_offset` is where the message starts.
common::Result<MaildropEnvelope> parse_maildrop(std::string_view data, size_t& body_offset);

// The message with every line ending made CRLF (a bare CR is kept as it is).
std::string to_crlf(std::string_view in);

}  // namespace tern::mta
