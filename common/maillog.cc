#include "common/maillog.h"

#include <cstdio>

#include "common/log.h"
#include "common/text.h"

namespace tern::common::maillog {
namespace {

std::string esc(std::string_view s) { return log_escape(s, 512); }

std::string emit(std::string_view service, std::string text) {
  log::logf(log::Level::kInfo, service, "%s", text.c_str());
  return text;
}

std::string seconds(double s) {
  // As Postfix prints delays: hundredths below a second, tenths below ten, whole
  // seconds above; trailing zeros dropped ("0.4", "0.05", "3.1", "12", "0").
  char buf[32];
  if (!(s > 0)) return "0";
  if (s >= 10) {
    std::snprintf(buf, sizeof buf, "%.0f", s);
    return buf;
  }
  std::snprintf(buf, sizeof buf, s < 1 ? "%.2f" : "%.1f", s);
  std::string out = buf;
  while (out.back() == '0') out.pop_back();
  if (out.back() == '.') out.pop_back();
  return out;
}

}  // namespace

std::string endpoint(std::string_view name, std::string_view addr) {
  return esc(name.empty() ? "unknown" : name) + "[" + esc(addr) + "]";
}

std::string connect(std::string_view client) { return emit("smtpd", "connect from " + std::string(client)); }

std::string disconnect(std::string_view client, std::string_view counts) {
  std::string t = "disconnect from " + std::string(client);
  if (!counts.empty()) t += " " + std::string(counts);
  return emit("smtpd", t);
}

std::string lost_connection(std::string_view after, std::string_view client) {
  return emit("smtpd", "lost connection after " + std::string(after) + " from " + std::string(client));
}

std::string timeout(std::string_view after, std::string_view client) {
  return emit("smtpd", "timeout after " + std::string(after) + " from " + std::string(client));
}

std::string tls_established(std::string_view service, std::string_view client, std::string_view description,
                            bool to_client) {
  return emit(service, std::string("Anonymous TLS connection established ") + (to_client ? "to " : "from ") +
                           std::string(client) + ": " + std::string(description));
}

std::string tls_established_to(std::string_view service, std::string_view trust, std::string_view server,
                               std::string_view description) {
  return emit(service, std::string(trust) + " TLS connection established to " + std::string(server) + ": " +
                           std::string(description));
}

std::string client(std::string_view queue_id, std::string_view client, std::string_view method,
                   std::string_view user) {
  std::string t = std::string(queue_id) + ": client=" + std::string(client);
  if (!user.empty()) t += ", sasl_method=" + esc(method) + ", sasl_username=" + esc(user);
  return emit("smtpd", t);
}

std::string reject(std::string_view qid, std::string_view stage, std::string_view client, std::string_view reply,
                   std::string_view from, std::string_view to, std::string_view proto, std::string_view helo) {
  std::string t = std::string(qid.empty() ? "NOQUEUE" : qid) + ": reject: " + std::string(stage) + " from " +
                  std::string(client) + ": " + esc(reply) + "; from=<" + esc(from) + ">";
  if (!to.empty()) t += " to=<" + esc(to) + ">";
  t += " proto=" + std::string(proto);
  if (!helo.empty()) t += " helo=<" + esc(helo) + ">";
  return emit("smtpd", t);
}

std::string reject_connect(std::string_view service, std::string_view addr, uint16_t port, std::string_view reason) {
  return emit(service, "NOQUEUE: reject: CONNECT from [" + esc(addr) + "]:" + std::to_string(port) + ": " +
                           std::string(reason));
}

std::string sasl_failed(std::string_view client, std::string_view mechanism, std::string_view reason) {
  // The shape fail2ban's postfix[mode=auth] filter matches.
  std::string t = std::string(client) + ": SASL " + esc(mechanism) + " authentication failed: " + esc(reason);
  log::logf(log::Level::kWarning, "smtpd", "%s", t.c_str());
  return "warning: " + t;
}

std::string message_id(std::string_view qid, std::string_view mid) {
  return emit("cleanup", std::string(qid) + ": message-id=" + esc(mid));
}

std::string pickup(std::string_view qid, unsigned uid, std::string_view from) {
  return emit("pickup", std::string(qid) + ": uid=" + std::to_string(uid) + " from=<" + esc(from) + ">");
}

std::string queue_active(std::string_view qid, std::string_view from, uint64_t size, unsigned nrcpt) {
  return emit("qmgr", std::string(qid) + ": from=<" + esc(from) + ">, size=" + std::to_string(size) +
                          ", nrcpt=" + std::to_string(nrcpt) + " (queue active)");
}

std::string delivery(const Delivery& d) {
  std::string t = std::string(d.queue_id) + ": to=<" + esc(d.to) + ">";
  if (!d.orig_to.empty() && d.orig_to != d.to) t += ", orig_to=<" + esc(d.orig_to) + ">";
  t += ", relay=" + std::string(d.relay.empty() ? "none" : d.relay);
  t += ", delay=" + seconds(d.delay);
  t += ", delays=" + seconds(d.delays[0]) + "/" + seconds(d.delays[1]) + "/" + seconds(d.delays[2]) + "/" +
       seconds(d.delays[3]);
  t += ", dsn=" + std::string(d.dsn) + ", status=" + std::string(d.status) + " (" + esc(d.detail) + ")";
  return emit(d.service, t);
}

std::string removed(std::string_view qid) { return emit("qmgr", std::string(qid) + ": removed"); }

std::string bounce_created(std::string_view qid, std::string_view kind, std::string_view new_qid) {
  return emit("bounce", std::string(qid) + ": sender " + std::string(kind) + " notification: " + std::string(new_qid));
}

}  // namespace tern::common::maillog
