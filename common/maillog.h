// Mail-event log lines in Postfix's exact shapes, one function per event (chasquid
// internal/maillog), so pflogsumm (--syslog_name=tern), fail2ban's postfix filters
// and admins' greps read Tern's log as they read Postfix's. Everything a client
// chose (names, addresses, replies) is escaped here, once.
//
//   tern/smtpd[812]: connect from mx.example.org[192.0.2.7]
//   tern/smtpd[812]: 4Xq9Kp2TyrzK1: client=mx.example.org[192.0.2.7]
//   tern/cleanup[812]: 4Xq9Kp2TyrzK1: message-id=<abc@example.org>
//   tern/qmgr[812]: 4Xq9Kp2TyrzK1: from=<a@example.org>, size=2140, nrcpt=1 (queue active)
//   tern/lmtp[812]: 4Xq9Kp2TyrzK1: to=<b@example.net>, relay=tern-mda[private/lmtp], delay=0.4,
//       delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)
//   tern/qmgr[812]: 4Xq9Kp2TyrzK1: removed
//   tern/smtpd[812]: NOQUEUE: reject: RCPT from x[198.51.100.3]: 554 5.7.1 <c@example.net>:
//       Relay access denied; from=<a@b> to=<c@example.net> proto=ESMTP helo=<x>
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tern::common::maillog {

// "name[addr]" as Postfix prints a client or relay; name "unknown" when not known.
std::string endpoint(std::string_view name, std::string_view addr);

// Each function logs the line and returns its text (after "tern/<svc>[pid]: "),
// which is what tests compare.
std::string connect(std::string_view client);
std::string disconnect(std::string_view client, std::string_view command_counts);
std::string lost_connection(std::string_view after_command, std::string_view client);
std::string timeout(std::string_view after_command, std::string_view client);
std::string tls_established(std::string_view service, std::string_view client, std::string_view description,
                            bool to_client);
// The SMTP client's line: "Untrusted TLS connection established to mx[addr]:25: TLSv1.3 with
// cipher ..."; trust is Postfix's word: Anonymous, Untrusted, Trusted or Verified.
std::string tls_established_to(std::string_view service, std::string_view trust, std::string_view server,
                               std::string_view description);
std::string client(std::string_view queue_id, std::string_view client, std::string_view sasl_method,
                   std::string_view sasl_username);
std::string reject(std::string_view queue_id_or_noqueue, std::string_view stage, std::string_view client,
                   std::string_view reply, std::string_view from, std::string_view to, std::string_view proto,
                   std::string_view helo);
std::string sasl_failed(std::string_view client, std::string_view mechanism, std::string_view reason);
// A connection refused before any session (postscreen's shape):
// "NOQUEUE: reject: CONNECT from [192.0.2.7]:41234: too many connections".
std::string reject_connect(std::string_view service, std::string_view addr, uint16_t port, std::string_view reason);
std::string message_id(std::string_view queue_id, std::string_view message_id);
std::string pickup(std::string_view queue_id, unsigned uid, std::string_view from);
std::string queue_active(std::string_view queue_id, std::string_view from, uint64_t size, unsigned nrcpt);

// Delivery outcomes: status is sent, deferred, bounced or expired.
struct Delivery {
  std::string_view service;    // "lmtp", "smtp", "local", "virtual", "error"
  std::string_view queue_id;
  std::string_view to;
  std::string_view orig_to;    // logged only when different from `to`
  std::string_view relay;      // "mx.example.net[203.0.113.5]:25" or "none"
  double delay = 0;            // seconds since arrival
  double delays[4] = {0, 0, 0, 0};  // before queue, in queue, connection setup, transmission
  std::string_view dsn;        // "2.0.0"
  std::string_view status;     // "sent", "deferred", "bounced", "expired"
  std::string_view detail;     // the reply or reason, in the parentheses
};
std::string delivery(const Delivery& d);
std::string removed(std::string_view queue_id);
std::string bounce_created(std::string_view queue_id, std::string_view kind, std::string_view new_queue_id);

}  // namespace tern::common::maillog
