// The LMTP client (RFC 2033) that hands local and virtual-mailbox mail to tern-mda,
// as Postfix's lmtp(8) hands it to Dovecot: one connection per delivery job, LHLO,
// MAIL, one RCPT per recipient, DATA, and one reply per accepted recipient.
//
// The body is streamed from the queue (dot-stuffed on the fly, 64 KB at a time,
// writing only while the socket keeps up), so a 50 MB message costs no more
// memory than a small one.
//
// Exactly once: when the server advertises XTERN-DELIVERY-ID in its LHLO reply,
// MAIL FROM carries XTERN-DELIVERY-ID=<queue id>. The server remembers the
// (id, recipient) pairs it delivered and answers a repeat with 250 without
// delivering again, which closes the window between its 250 and our commit of
// "delivered" (a crash there would otherwise deliver twice after the restart).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/loop.h"
#include "common/smtp_reply.h"
#include "common/unique_fd.h"

namespace tern::mta {

// The Tern-private LMTP extension keyword (and MAIL parameter name).
inline constexpr const char* kDeliveryIdKeyword = "XTERN-DELIVERY-ID";

struct LmtpJob {
  std::string socket_path;          // unix socket of the LMTP server
  std::string lhlo_name;            // our name in LHLO
  std::string queue_id;
  std::string sender;               // "" for <>
  bool body_8bit = false;
  bool smtputf8 = false;
  std::vector<std::string> rcpts;   // addresses
  // The body: inline bytes, or an fd to read `body_size` bytes from.
  std::string inline_body;
  common::UniqueFd body_fd;
  uint64_t body_size = 0;
  uint64_t connect_timeout_ms = 30000;
  uint64_t timeout_ms = 600000;
};

struct LmtpOutcome {
  // Per recipient, in order: the reply (a synthetic 4xx when the session failed).
  std::vector<common::smtp::Reply> replies;
  std::string relay;          // "tern-mda[/run/tern/lmtp]" for the log
  double connect_seconds = 0; // delays= c
  double transfer_seconds = 0;// delays= d
};

// A delivery in flight. abandon() (at shutdown) aborts its connection and drops
// `done` unrun: the message stays queued, and the retry after the next start is
// deduplicated by its delivery id. The handle expires when the delivery finishes.
class LmtpInFlight {
 public:
  virtual ~LmtpInFlight() = default;
  virtual void abandon() = 0;
};

// Runs one delivery; `done` runs once on the loop thread, unless abandoned.
std::weak_ptr<LmtpInFlight> lmtp_deliver(common::ev::Loop& loop, std::unique_ptr<LmtpJob> job,
                                         std::function<void(LmtpOutcome)> done);

// Streaming dot-stuffing for DATA: call feed() with consecutive pieces of the body
// (CRLF line endings), then finish() for the end of the body and the end marker.
class DotStuffer {
 public:
  void feed(std::string_view in, std::string& out);
  void finish(std::string& out);

 private:
  bool line_start_ = true;
  char last_ = '\n';
  char before_last_ = '\r';
};

}  // namespace tern::mta
