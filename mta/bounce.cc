#include "mta/bounce.h"

#include "common/text.h"
#include "mta/cleanup.h"

namespace tern::mta {

std::string_view header_section(std::string_view m) {
  size_t p = m.find("\r\n\r\n");
  if (p != std::string_view::npos) return m.substr(0, p + 4);
  p = m.find("\n\n");
  if (p != std::string_view::npos) return m.substr(0, p + 2);
  return m;
}

namespace {

// Header-safe text: no CR/LF/NUL can break out of a header line.
std::string clean(std::string_view s) {
  std::string out;
  for (char c : s) out += (c == '\r' || c == '\n' || c == 0) ? ' ' : c;
  return out;
}

std::string diagnostic(const Recipient& r) {
  // A reply from the next hop is "smtp; 550 5.1.1 ..." (RFC 3464 2.3.6); our own
  // reasons ("5.7.1 mail to command is restricted") are x-unix.
  if (!r.diagnostic.empty()) return "smtp; " + clean(r.diagnostic);
  std::string t = clean(r.last_reply);
  if (t.size() >= 3 && t[0] >= '2' && t[0] <= '5' && t[1] >= '0' && t[1] <= '9' && t[2] >= '0' && t[2] <= '9') {
    return "smtp; " + t;
  }
  return "x-unix; " + t;
}

std::string status_of(const Recipient& r, DsnInput::Kind kind) {
  if (kind == DsnInput::Kind::kSuccess) return "2.0.0";
  if (!r.dsn_status.empty()) return r.dsn_status;
  return kind == DsnInput::Kind::kDelay ? "4.0.0" : "5.0.0";
}

}  // namespace

std::string make_dsn(const DsnInput& in) {
  const Envelope& e = *in.env;
  const std::string date = rfc5322_date(in.now);
  const std::string boundary = in.queue_id + "." + std::to_string(in.now) + "/" + in.myhostname;
  std::string subject, intro, action;
  switch (in.kind) {
    case DsnInput::Kind::kFailure:
      subject = "Undelivered Mail Returned to Sender";
      intro =
          "I'm sorry to have to inform you that your message could not\r\n"
          "be delivered to one or more recipients. It's attached below.\r\n\r\n"
          "For further assistance, please send mail to postmaster.\r\n\r\n"
          "If you do so, please include this problem report. You can\r\n"
          "delete your own text from the attached returned message.\r\n";
      action = "failed";
      break;
    case DsnInput::Kind::kDelay:
      subject = "Delayed Mail (still being retried)";
      intro =
          "####################################################################\r\n"
          "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n"
          "####################################################################\r\n\r\n"
          "Your message could not be delivered for some time.\r\n"
          "It will be retried until it is too old.\r\n";
      action = "delayed";
      break;
    case DsnInput::Kind::kSuccess:
      subject = "Successful Mail Delivery Report";
      intro = "Your message was successfully delivered to the destination(s)\r\nlisted below.\r\n";
      action = "delivered";
      break;
  }
  if (in.postmaster_copy) subject = "Postmaster Copy: " + subject;
  std::string m;
  m += "From: MAILER-DAEMON@" + in.myhostname + " (Mail Delivery System)\r\n";
  m += "To: " + clean(in.to.empty() ? e.sender : in.to) + "\r\n";
  m += "Subject: " + subject + "\r\n";
  m += "Date: " + date + "\r\n";
  m += "Message-Id: <" + in.queue_id + "@" + in.myhostname + ">\r\n";
  m += "Auto-Submitted: auto-replied\r\n";  // RFC 3834: do not answer this
  m += "MIME-Version: 1.0\r\n";
  m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + boundary + "\"\r\n";
  m += "Content-Transfer-Encoding: 8bit\r\n\r\n";
  m += "This is a MIME-encapsulated message.\r\n\r\n";
  // 1. For people.
  m += "--" + boundary + "\r\n";
  m += "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n";
  m += "This is the mail system at host " + in.myhostname + ".\r\n\r\n" + intro + "\r\n";
  m += "                   The mail system\r\n\r\n";
  for (const Recipient* r : in.rcpts) {
    std::string who = r->kind == Recipient::Kind::kAddress ? r->address : r->orig_address;
    m += "<" + clean(who) + ">";
    if (!r->orig_address.empty() && r->orig_address != who) m += " (expanded from <" + clean(r->orig_address) + ">)";
    m += ": " + clean(in.kind == DsnInput::Kind::kSuccess ? "delivery via " + r->last_reply : r->last_reply) + "\r\n\r\n";
  }
  // 2. For programs (RFC 3464 2.2, 2.3).
  m += "--" + boundary + "\r\n";
  m += "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n";
  m += "Reporting-MTA: dns; " + in.myhostname + "\r\n";
  m += "X-Tern-Queue-ID: " + e.queue_id + "\r\n";
  if (!e.envid.empty()) m += "Original-Envelope-Id: " + clean(e.envid) + "\r\n";
  m += "X-Tern-Sender: rfc822; " + clean(e.sender) + "\r\n";
  m += "Arrival-Date: " + rfc5322_date(static_cast<time_t>(e.arrival_us / 1000000)) + "\r\n";
  for (const Recipient* r : in.rcpts) {
    std::string who = r->kind == Recipient::Kind::kAddress ? r->address : r->orig_address;
    m += "\r\nFinal-Recipient: rfc822; " + clean(who) + "\r\n";
    if (!r->orcpt.empty()) m += "Original-Recipient: " + clean(r->orcpt) + "\r\n";
    // RFC 3461 6.2.2: a success we only handed on to a next hop without DSN is "relayed".
    m += "Action: " + std::string(in.kind == DsnInput::Kind::kSuccess && r->relayed ? "relayed" : action) + "\r\n";
    m += "Status: " + status_of(*r, in.kind) + "\r\n";
    if (!r->remote_mta.empty()) m += "Remote-MTA: dns; " + clean(r->remote_mta) + "\r\n";
    if (!r->last_reply.empty()) m += "Diagnostic-Code: " + diagnostic(*r) + "\r\n";
  }
  m += "\r\n";
  // 3. The message, or its headers (RET=HDRS, and always for success and delay).
  const bool full = in.whole_original || (in.kind == DsnInput::Kind::kFailure && e.ret != "HDRS" && !in.postmaster_copy);
  m += "--" + boundary + "\r\n";
  if (full) {
    m += "Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n";
    m += "Content-Transfer-Encoding: 8bit\r\n\r\n";
    std::string_view orig = in.original;
    if (orig.size() > in.size_limit) {
      // Cut at a line end so the part stays well-formed.
      size_t cut = orig.rfind("\r\n", in.size_limit);
      orig = orig.substr(0, cut == std::string_view::npos ? in.size_limit : cut + 2);
    }
    m += orig;
  } else {
    m += "Content-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n";
    m += "Content-Transfer-Encoding: 8bit\r\n\r\n";
    m += header_section(in.original);
  }
  if (m.size() < 2 || m.compare(m.size() - 2, 2, "\r\n") != 0) m += "\r\n";
  m += "\r\n--" + boundary + "--\r\n";
  return m;
}

}  // namespace tern::mta
