// SMTP and LMTP command lines: one line in (without its CRLF), a Command or the
// reply to send out. Shared by tern-mda's LMTP server and tern-mta's SMTP server.
//
// A parser, no I/O and no session state: whether a command is allowed *now* (MAIL
// before LHLO, RCPT before MAIL) is the session's business. What it does check is
// everything the line itself can be wrong about: the verb, "FROM:"/"TO:" with the
// path (smtp_address.h), the ESMTP parameters of RFC 1870 SIZE, RFC 6152 8BITMIME /
// RFC 3030 BINARYMIME (BODY=), RFC 6531 SMTPUTF8, RFC 3461 DSN (RET, ENVID, NOTIFY,
// ORCPT), RFC 4954 AUTH=, and RFC 3030 BDAT's chunk size. A parameter whose
// extension the server did not advertise is refused (555 5.5.4), as is a parameter
// given twice.
//
// Errors come back as the Reply the server should send, with the enhanced status
// code of RFC 3463 (501 5.5.4 bad syntax, 500 5.5.2 unknown command, 555 5.5.4
// unknown parameter, 501 5.1.7 bad sender, 501 5.1.3 bad recipient).
//
// Lenience: RFC 5321 has no space after "FROM:"; many clients send one, and Postfix
// accepts it (its default smtpd_command_filter-free behaviour), so one optional space
// is allowed there. Verbs are case-insensitive.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "common/smtp_address.h"
#include "common/smtp_reply.h"

namespace tern::common::smtp {

enum class Verb {
  kHelo,      // HELO domain
  kEhlo,      // EHLO domain
  kLhlo,      // LHLO domain (LMTP, RFC 2033)
  kMail,      // MAIL FROM:<path> [params]
  kRcpt,      // RCPT TO:<path> [params]
  kData,      // DATA
  kBdat,      // BDAT size [LAST] (RFC 3030)
  kRset,      // RSET
  kNoop,      // NOOP [text]
  kQuit,      // QUIT
  kVrfy,      // VRFY string
  kExpn,      // EXPN string
  kHelp,      // HELP [topic]
  kStartTls,  // STARTTLS (RFC 3207)
  kAuth,      // AUTH mechanism [initial-response] (RFC 4954)
};

// BODY= (RFC 6152, RFC 3030).
enum class Body {
  kUnspecified,  // no BODY parameter
  k7Bit,         // BODY=7BIT
  k8BitMime,     // BODY=8BITMIME
  kBinaryMime,   // BODY=BINARYMIME (only with BDAT)
};

// RET= (RFC 3461 4.3).
enum class Ret { kUnspecified, kFull, kHdrs };

// NOTIFY= bits (RFC 3461 4.1); kNever excludes the others.
enum Notify : unsigned {
  kNotifyNone = 0,     // no NOTIFY parameter
  kNotifyNever = 1,
  kNotifySuccess = 2,
  kNotifyFailure = 4,
  kNotifyDelay = 8,
};

struct MailParams {
  std::optional<uint64_t> size;       // SIZE=
  Body body = Body::kUnspecified;     // BODY=
  bool smtputf8 = false;              // SMTPUTF8
  Ret ret = Ret::kUnspecified;        // RET=
  std::string envid;                  // ENVID=, xtext-decoded
  std::optional<std::string> auth;    // AUTH=, xtext-decoded; "<>" when the submitter is unknown
  std::string delivery_id;            // XTERN-DELIVERY-ID= (Tern's LMTP, see below)
};

struct RcptParams {
  unsigned notify = kNotifyNone;      // NOTIFY=
  std::string orcpt_type;             // ORCPT=type;... ("rfc822", "utf-8")
  std::string orcpt;                  // ORCPT address, xtext/utf-8-addr decoded
};

struct Command {
  Verb verb = Verb::kNoop;
  std::string argument;               // HELO/EHLO/LHLO domain, AUTH line, VRFY/EXPN/NOOP/HELP text
  Path path;                          // MAIL / RCPT
  MailParams mail;
  RcptParams rcpt;
  uint64_t bdat_size = 0;             // BDAT
  bool bdat_last = false;
};

// What the server advertised; parameters of extensions that are off are refused.
struct CommandOptions {
  bool lmtp = false;              // LHLO instead of HELO/EHLO
  bool size = true;               // SIZE
  bool eightbitmime = true;       // 8BITMIME
  bool binarymime = false;        // BINARYMIME (needs chunking)
  bool chunking = true;           // BDAT
  bool smtputf8 = true;           // SMTPUTF8
  bool dsn = false;               // RET ENVID NOTIFY ORCPT
  bool auth = false;              // AUTH= on MAIL
  // XTERN-DELIVERY-ID=<queue id> on MAIL: Tern's private LMTP extension between
  // tern-mta and tern-mda for exactly-once delivery (mta/lmtp_client.h).
  bool delivery_id = false;
};

// Bound on an XTERN-DELIVERY-ID value: a queue id (common/queue_id.h), letters and
// digits only.
inline constexpr size_t kMaxDeliveryId = 64;

// Bounds on what a client controls (RFC 3461 4.4: ENVID at most 100 characters;
// RFC 3030: we cap a BDAT chunk size at what fits in 64 bits and leave the message
// size limit to the session).
inline constexpr size_t kMaxEnvid = 100;
inline constexpr size_t kMaxOrcpt = 500;
inline constexpr size_t kMaxParams = 16;

using CommandResult = std::variant<Command, Reply>;

CommandResult parse_command(std::string_view line, const CommandOptions& options);

// xtext (RFC 3461 4): "+XX" hex escapes; nullopt when malformed.
std::optional<std::string> xtext_decode(std::string_view s);
std::string xtext_encode(std::string_view s);

}  // namespace tern::common::smtp
