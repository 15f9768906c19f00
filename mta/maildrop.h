// The maildrop file: what sendmail leaves in $maildrop_directory when tern-mta is
// not running, and what tern-mta's pickup reads at start (Postfix's maildrop queue
// and pickup(8)). One message per file, written to a dot-name, fsynced, then
// renamed, so pickup never sees half a file:
//
//   TERN-MAILDROP 1\n
//   S <sender>\n            envelope sender: an address, "<>", or empty for the user
//   R <recipient>\n         one line per recipient
//   \n
//   <the message, as the program gave it: LF, CRLF or CR line endings>
//
// The submitting user is the file's owner (the directory is sticky and not
// listable, so a user can neither forge another's file nor remove it). The parser
// is strict and bounded: a file from an unprivileged user is untrusted input. Its
// addresses go through the SMTP path grammar (RFC 5321 4.1.2) like a MAIL FROM or
// RCPT TO, so that "S a@b> AUTH=<x>" can never become ESMTP parameters when the
// sender is written into the next hop's MAIL FROM; a file with one bad address is
// refused whole.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/smtp_address.h"

namespace tern::mta {

struct MaildropEnvelope {
  std::string sender;
  std::vector<std::string> rcpts;
};

// Bounds: a maildrop file names at most this many recipients, each line this long.
inline constexpr size_t kMaildropMaxRcpts = 10000;
inline constexpr size_t kMaildropMaxLine = 4096;

// sendmail's temporary files in the maildrop directory are dot-names; one older
// than this was left by a sendmail that died before its rename (postsuper(1)
// removes Postfix's old temporary files the same way).
inline constexpr int64_t kMaildropStaleTempSeconds = 3600;

std::string maildrop_header(const MaildropEnvelope& env);
// Parses the header; `body_offset` is where the message starts. The sender and
// every recipient must pass parse_local_address().
common::Result<MaildropEnvelope> parse_maildrop(std::string_view data, size_t& body_offset);

// An address as a local program gives it (sendmail -f and its arguments, a maildrop
// S or R record): "user@domain", "<user@domain>", or a bare "user" that gets
// "@origin". Parsed with the SMTP grammar (RFC 5321 4.1.2, with RFC 6531 UTF-8):
// anything after the address, a second '@', CR, LF, NUL or other control bytes are
// errors. An empty origin checks the syntax only.
common::Result<common::smtp::Mailbox> parse_local_address(std::string_view text, std::string_view origin);

// Whether a maildrop directory entry is a sendmail temporary file old enough to be
// removed: a dot-name (not "." or "..") last changed kMaildropStaleTempSeconds ago.
bool stale_maildrop_temp(std::string_view name, int64_t mtime, int64_t now);

}  // namespace tern::mta
