// Delivery status notifications (RFC 3464 multipart/report, RFC 3461 DSN): the
// bounce for recipients that failed permanently, the notice for recipients that
// asked for NOTIFY=SUCCESS, in the layout Postfix's bounce(8) uses so people and
// scripts recognise them. Pure: envelope and message bytes in, a message out.
//
// A notification goes to the envelope sender, never to the null sender <> (RFC
// 5321 6.1: no bounce loops); the caller checks that and NOTIFY=NEVER.
#pragma once

#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "mta/queue_store.h"

namespace tern::mta {

struct DsnInput {
  enum class Kind {
    kFailure,  // permanent failure ("Undelivered Mail Returned to Sender")
    kDelay,    // still trying ("Delayed Mail (still being retried)")
    kSuccess,  // NOTIFY=SUCCESS ("Successful Mail Delivery Report")
  };
  Kind kind = Kind::kFailure;
  std::string myhostname;
  std::string mail_name = "Tern";
  const Envelope* env = nullptr;
  std::vector<const Recipient*> rcpts;  // those this notice is about
  std::string_view original;            // the queued message (headers + body)
  size_t size_limit = 50000;            // bounce_size_limit: most bytes of the original returned
  time_t now = 0;
  std::string queue_id;                 // of the notification itself, for Message-Id
  // A copy for the postmaster (notify_classes): "Postmaster Copy: ..." to `to`, with
  // the original's headers only, or the whole original for an undeliverable bounce.
  bool postmaster_copy = false;
  bool whole_original = false;
  std::string to;                       // the To: field; empty: the envelope sender
};

// The complete notification message, CRLF line endings.
std::string make_dsn(const DsnInput& in);

// The header section of a message (up to and including the blank line), for
// RET=HDRS and Content-Type: text/rfc822-headers.
std::string_view header_section(std::string_view message);

}  // namespace tern::mta
