#include "mta/showq.h"

#include <cstdio>
#include <ctime>

#include "common/smtp_address.h"
#include "common/text.h"

namespace tern::mta {

namespace {

// For people reading the queue: valid UTF-8 (SMTPUTF8 addresses) as it is, control
// characters and invalid bytes escaped.
std::string shown(std::string_view s, size_t max) {
  if (!common::smtp::valid_utf8(s)) return common::log_escape(s, max);
  std::string out;
  for (unsigned char c : s) {
    if (out.size() >= max) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof b, "\\%03o", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string arrival(int64_t us) {
  time_t t = static_cast<time_t>(us / 1000000);
  struct tm tm;
  ::localtime_r(&t, &tm);
  char buf[32];
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::snprintf(buf, sizeof buf, "%s %s %2d %02d:%02d:%02d", kDays[tm.tm_wday], kMonths[tm.tm_mon], tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string who(const Recipient& r) {
  switch (r.kind) {
    case Recipient::Kind::kCommand: return "|" + r.address;
    case Recipient::Kind::kFile: return r.address;
    default: return r.address;
  }
}

const char* state_name(Recipient::State s) {
  switch (s) {
    case Recipient::State::kPending: return "pending";
    case Recipient::State::kDelivered: return "delivered";
    case Recipient::State::kBounced: return "bounced";
  }
  return "?";
}

}  // namespace

std::string format_mailq(const std::vector<Envelope>& queue, const std::set<std::string>& active) {
  if (queue.empty()) return "Mail queue is empty\n";
  std::string out = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n";
  uint64_t bytes = 0;
  for (const Envelope& e : queue) {
    bytes += e.size;
    std::string id = e.queue_id + (e.hold ? "!" : active.count(e.queue_id) ? "*" : "");
    char line[512];
    std::snprintf(line, sizeof line, "%-11s %8llu %s  %s\n", id.c_str(), static_cast<unsigned long long>(e.size),
                  arrival(e.arrival_us).c_str(), shown(e.sender.empty() ? "MAILER-DAEMON" : e.sender, 200).c_str());
    out += line;
    std::string last;
    for (const Recipient& r : e.rcpts) {
      if (r.state != Recipient::State::kPending) continue;
      if (!r.last_reply.empty() && r.last_reply != last) {
        out += "                                         (" + shown(r.last_reply, 400) + ")\n";
        last = r.last_reply;
      }
      out += "                                         " + shown(who(r), 300) + "\n";
    }
    out += "\n";
  }
  out += "-- " + std::to_string((bytes + 1023) / 1024) + " Kbytes in " + std::to_string(queue.size()) +
         (queue.size() == 1 ? " Request.\n" : " Requests.\n");
  return out;
}

std::string format_queue_details(const std::vector<Envelope>& queue) {
  std::string out;
  for (const Envelope& e : queue) {
    out += "queue_id: " + e.queue_id + "\n";
    out += "arrival: " + arrival(e.arrival_us) + "\n";
    out += "sender: <" + shown(e.sender, 300) + ">\n";
    out += "size: " + std::to_string(e.size) + "\n";
    out += "origin: " + e.origin + (e.client.empty() ? "" : " " + shown(e.client, 200)) + "\n";
    if (!e.sasl_user.empty()) out += "sasl_username: " + shown(e.sasl_user, 200) + "\n";
    if (e.hold) out += "hold: yes\n";
    if (e.body_8bit) out += "body: 8BITMIME\n";
    if (e.smtputf8) out += "smtputf8: yes\n";
    if (!e.envid.empty()) out += "envid: " + shown(e.envid, 200) + "\n";
    if (!e.ret.empty()) out += "ret: " + e.ret + "\n";
    for (const Recipient& r : e.rcpts) {
      out += "recipient: " + shown(who(r), 300) + " state=" + state_name(r.state) +
             " attempts=" + std::to_string(r.attempts);
      if (!r.orig_address.empty() && r.orig_address != r.address) out += " orig_to=" + shown(r.orig_address, 300);
      if (r.notify) {
        std::string n;
        if (r.notify & kNotifyNever) n += "NEVER,";
        if (r.notify & kNotifySuccess) n += "SUCCESS,";
        if (r.notify & kNotifyFailure) n += "FAILURE,";
        if (r.notify & kNotifyDelay) n += "DELAY,";
        n.pop_back();
        out += " notify=" + n;
      }
      if (!r.orcpt.empty()) out += " orcpt=" + shown(r.orcpt, 300);
      if (!r.dsn_status.empty()) out += " dsn=" + r.dsn_status;
      if (!r.last_reply.empty()) out += " (" + shown(r.last_reply, 400) + ")";
      out += "\n";
    }
    out += "\n";
  }
  return out;
}

}  // namespace tern::mta
