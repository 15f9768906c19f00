#include "mta/smtpd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/fault.h"
#include "common/connection.h"
#include "common/line_reader.h"
#include "common/log.h"
#include "common/maillog.h"
#include "common/smtp_command.h"
#include "common/smtp_data.h"
#include "common/smtp_reply.h"
#include "common/text.h"
#include "mta/cleanup.h"

namespace tern::mta {

using common::Result;
using common::Status;
using common::smtp::Reply;
using common::smtp::Verb;
namespace smtp = common::smtp;
namespace maillog = common::maillog;

namespace {

// A queue write that failed for want of space is 452 4.3.1 (RFC 3463 "mail system
// full"), what Postfix answers; any other write error stays 451 4.3.0. Both are
// temporary: the client keeps the message and tries again.
Reply queue_write_error(const std::string& detail) {
  if (detail.find("No space left") != std::string::npos || detail.find("Disk quota") != std::string::npos) {
    return Reply(452, "4.3.1", "Insufficient system storage");
  }
  return Reply(451, "4.3.0", "Error: queue file write error");
}

// Postfix's smtpd_check_queue(): the queue file system must keep queue_minfree
// bytes free, and a message announced with SIZE= must fit above that. One statvfs
// per MAIL FROM; a statvfs that fails says nothing, and the write decides.
bool queue_has_room(const SmtpdSettings& s, uint64_t announced) {
  if (s.queue_minfree == 0 && announced == 0) return true;
  struct statvfs fs;
  if (s.queue_directory.empty() || ::statvfs(s.queue_directory.c_str(), &fs) != 0) return true;
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes < s.queue_minfree) return false;
  return announced <= free_bytes - s.queue_minfree;
}

}  // namespace

// --- settings --------------------------------------------------------------------

Result<SmtpdSettings> SmtpdSettings::from_config(const common::Config& cfg) {
  SmtpdSettings s;
  s.myhostname = cfg.str("myhostname");
  s.banner = cfg.str("smtpd_banner");
  s.mail_name = cfg.str("mail_name");
  s.message_size_limit = cfg.bytes("message_size_limit");
  s.queue_minfree = cfg.bytes("queue_minfree");
  s.queue_directory = cfg.str("queue_directory");
  s.recipient_limit = static_cast<size_t>(cfg.integer("smtpd_recipient_limit"));
  s.conn_limit = static_cast<uint64_t>(cfg.integer("smtpd_client_connection_limit"));
  s.conn_count_limit = cfg.integer("smtpd_client_connection_count_limit");
  s.conn_rate_limit = cfg.integer("smtpd_client_connection_rate_limit");
  s.msg_rate_limit = cfg.integer("smtpd_client_message_rate_limit");
  s.rcpt_rate_limit = cfg.integer("smtpd_client_recipient_rate_limit");
  s.rate_unit_ms = static_cast<uint64_t>(cfg.seconds("anvil_rate_time_unit")) * 1000;
  auto nets = [&](const char* key, common::NetworkList& out) -> Status {
    Result<common::NetworkList> n = common::NetworkList::parse(cfg.list(key));
    if (!n) return common::make_error(common::ErrorKind::kConfig, cfg.origin(key) + ": " + key + ": " + n.error().message);
    out = std::move(n).value();
    return {};
  };
  if (Status st = nets("mynetworks", s.mynetworks); !st) return st.take_error();
  if (Status st = nets("smtpd_client_event_limit_exceptions", s.limit_exceptions); !st) return st.take_error();
  if (Status st = nets("smtpd_forbid_bare_newline_exclusions", s.bare_newline_exclusions); !st) return st.take_error();
  s.timeout_ms = static_cast<uint64_t>(cfg.seconds("smtpd_timeout")) * 1000;
  s.error_sleep_ms = static_cast<uint64_t>(cfg.seconds("smtpd_error_sleep_time")) * 1000;
  s.soft_error_limit = static_cast<int>(cfg.integer("smtpd_soft_error_limit"));
  s.hard_error_limit = static_cast<int>(cfg.integer("smtpd_hard_error_limit"));
  s.junk_limit = static_cast<int>(cfg.integer("smtpd_junk_command_limit"));
  s.delay_reject = cfg.boolean("smtpd_delay_reject");
  s.helo_required = cfg.boolean("smtpd_helo_required");
  s.forbid_bare_newline = cfg.boolean("smtpd_forbid_bare_newline");
  s.disable_vrfy = cfg.boolean("disable_vrfy_command");
  s.reject_unlisted_recipient = cfg.boolean("smtpd_reject_unlisted_recipient");
  struct ListKey {
    const char* key;
    Restrictions* out;
  };
  for (const ListKey& lk : {ListKey{"smtpd_client_restrictions", &s.client}, ListKey{"smtpd_helo_restrictions", &s.helo},
                            ListKey{"smtpd_sender_restrictions", &s.sender},
                            ListKey{"smtpd_relay_restrictions", &s.relay},
                            ListKey{"smtpd_recipient_restrictions", &s.recipient},
                            ListKey{"smtpd_data_restrictions", &s.data}}) {
    Result<Restrictions> r = Restrictions::parse(cfg.list(lk.key), cfg.origin(lk.key) + ": " + lk.key);
    if (!r) return r.take_error();
    *lk.out = std::move(r).value();
  }
  // Postfix refuses to start when neither list can stop relaying ("need
  // reject_unauth_destination"): an open relay is never the result of a config.
  {
    auto has = [&](const char* key, const char* what) {
      for (const std::string& i : cfg.list(key)) {
        if (common::iequals(i, what)) return true;
      }
      return false;
    };
    bool guarded = false;
    for (const char* k : {"smtpd_relay_restrictions", "smtpd_recipient_restrictions"}) {
      guarded = guarded || has(k, "reject_unauth_destination") || has(k, "defer_unauth_destination") ||
                has(k, "reject") || has(k, "defer");
    }
    if (!guarded) {
      return common::make_error(common::ErrorKind::kConfig,
                                "smtpd_relay_restrictions and smtpd_recipient_restrictions: one of them must contain "
                                "reject_unauth_destination, defer_unauth_destination or reject (open relay refused)");
    }
  }
  for (const char* k : {"allow_percent_hack", "swap_bangpath"}) {
    if (cfg.boolean(k)) {
      return common::make_error(common::ErrorKind::kConfig, cfg.origin(k) + ": " + k +
                                                                " = yes is not supported: Tern never rewrites sender-specified "
                                                                "routing (user%host@domain, host!user) into a relay");
    }
  }
  Result<CheckCodes> codes = CheckCodes::load(cfg);
  if (!codes) return codes.take_error();
  s.codes = std::move(codes).value();
  s.tls_level = common::to_lower(cfg.str("smtpd_tls_security_level"));
  if (s.tls_level != "none" && s.tls_level != "may" && s.tls_level != "encrypt") {
    return common::make_error(common::ErrorKind::kConfig, cfg.origin("smtpd_tls_security_level") +
                                                              ": smtpd_tls_security_level: expected none, may or encrypt");
  }
  s.tls_auth_only = cfg.boolean("smtpd_tls_auth_only");
  s.sasl_on_mx = cfg.boolean("smtpd_sasl_auth_enable");
  s.broken_sasl_auth_clients = cfg.boolean("broken_sasl_auth_clients");
  for (const std::string& o : common::split_any(cfg.str("smtpd_sasl_security_options"), ", \t")) {
    if (o == "noanonymous") s.sasl_noanonymous = true;
    if (o == "noplaintext") s.sasl_noplaintext = true;
  }
  s.sasl_authenticated_header = cfg.boolean("smtpd_sasl_authenticated_header");
  s.auth_failure_limit = static_cast<int>(cfg.integer("smtpd_sasl_auth_failure_limit"));
  s.header_size_limit = static_cast<size_t>(cfg.bytes("header_size_limit"));
  for (const std::string& h : cfg.list("message_drop_headers")) s.message_drop_headers.push_back(common::to_lower(h));
  s.always_add_missing_headers = cfg.boolean("always_add_missing_headers");
  s.message_id_domain = cfg.str("message_id_domain");
  s.myorigin = common::to_lower(cfg.str("myorigin"));
  s.peername_lookup = cfg.boolean("smtpd_peername_lookup");
  s.dns_configured = !cfg.str("dns_servers").empty();
  return s;
}

// --- anvil -------------------------------------------------------------------------

void Anvil::gc(uint64_t now) {
  if (now - last_gc_ < unit_ms_) return;
  last_gc_ = now;
  for (auto it = clients_.begin(); it != clients_.end();) {
    bool idle = it->second.count == 0;
    for (int i = 0; i < 3; ++i) idle = idle && now - it->second.window_start[i] >= unit_ms_;
    it = idle ? clients_.erase(it) : std::next(it);
  }
}

void Anvil::connect(const std::string& addr, uint64_t now) {
  gc(now);
  ++clients_[addr].count;
}

void Anvil::disconnect(const std::string& addr) {
  auto it = clients_.find(addr);
  if (it != clients_.end() && it->second.count > 0) --it->second.count;
}

int64_t Anvil::connections(const std::string& addr) const {
  auto it = clients_.find(addr);
  return it == clients_.end() ? 0 : it->second.count;
}

int64_t Anvil::rate(const std::string& addr, int which, uint64_t now, int64_t n) {
  Client& c = clients_[addr];
  if (now - c.window_start[which] >= unit_ms_) {
    c.window_start[which] = now;
    c.in_window[which] = 0;
  }
  c.in_window[which] += n;
  return c.in_window[which];
}

// --- the session ---------------------------------------------------------------------

namespace {

// Bound on a command line: RFC 5321 4.5.3.1.4 says 512 octets; ESMTP parameters and
// SASL initial responses make real ones longer (Postfix line_length_limit 2048, and
// AUTH lines carry base64 tokens); beyond this a client is misbehaving.
constexpr size_t kMaxCommandLine = 16384;
// Bound on a BDAT chunk header number is the message size limit (checked per chunk).

const char* verb_name(Verb v) {
  switch (v) {
    case Verb::kHelo: return "helo";
    case Verb::kEhlo: return "ehlo";
    case Verb::kLhlo: return "lhlo";
    case Verb::kMail: return "mail";
    case Verb::kRcpt: return "rcpt";
    case Verb::kData: return "data";
    case Verb::kBdat: return "bdat";
    case Verb::kRset: return "rset";
    case Verb::kNoop: return "noop";
    case Verb::kQuit: return "quit";
    case Verb::kVrfy: return "vrfy";
    case Verb::kExpn: return "expn";
    case Verb::kHelp: return "help";
    case Verb::kStartTls: return "starttls";
    case Verb::kAuth: return "auth";
  }
  return "unknown";
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

bool is_loopback(const std::string& a) {
  return a.rfind("127.", 0) == 0 || a == "::1" || a.rfind("::ffff:127.", 0) == 0;
}

}  // namespace

struct AcceptedRcpt {
  smtp::Path path;
  smtp::RcptParams params;
  std::vector<Destination> dests;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(SmtpServer& server, std::shared_ptr<common::net::Connection> conn, Port port)
      : server_(server), s_(server.settings()), conn_(std::move(conn)), port_(port), in_(kMaxCommandLine),
        sleep_timer_(server.loop()) {}

  void start();
  void shutdown_now() {
    if (!conn_->closed()) conn_->close();
  }

 private:
  enum class Phase { kStart, kCommands, kData, kBdat, kAuth, kClosed };

  // Input.
  void on_data(std::string_view data);
  void process();
  void handle_line(std::string_view line);
  void dispatch(smtp::Command& cmd);
  void data_bytes(std::string_view data);
  void bdat_bytes(std::string_view data);

  // Output.
  void reply(const Reply& r, bool counts_as_error = true);
  void reply_raw(const std::string& text) { conn_->write(text); }
  void fatal_reply(const Reply& r);  // send and disconnect

  // Commands.
  void cmd_helo(smtp::Command& c, bool esmtp);
  void helo_reply(bool esmtp);
  void cmd_mail(smtp::Command& c);
  void cmd_rcpt(smtp::Command& c);
  void cmd_data();
  void cmd_bdat(smtp::Command& c);
  void cmd_rset();
  void cmd_starttls();
  void cmd_auth(smtp::Command& c);
  void cmd_vrfy(smtp::Command& c);

  // Steps.
  void greet();
  void lookup_client_name(std::function<void()> then);
  void gather_dns(const std::string& domain, DomainDns& out, std::function<void()> then);
  void rcpt_checks(std::shared_ptr<AcceptedRcpt> r);
  void rcpt_accept(std::shared_ptr<AcceptedRcpt> r);
  bool begin_body();
  void body_append(std::string_view bytes);
  void end_body(bool bare_newline);
  void reset_transaction();
  void auth_step(std::string_view line);
  void auth_done(Result<std::string> user);
  std::vector<SaslServer::Mechanism> offered_mechanisms();
  bool auth_offered();

  void begin_wait();
  void end_wait();
  // Starts the DNS list queries these lists need with these facts (those not yet
  // answered in this session) and runs `then` when all are answered. Returns true,
  // without calling `then`, when there is nothing to look up.
  bool gather_dnsxl(std::initializer_list<const Restrictions*> lists, const CheckFacts& f, std::function<void()> then);
  // Logs what access-table actions did (Postfix log_whatsup) and keeps HOLD/DISCARD.
  void apply_effects(const Effects& e, const std::string& stage, const std::string& to);
  // Postfix SMTPD_FLAG_ILL_PIPELINING: `after` is the command (or CONNECT).
  void note_pipelining(std::string_view after, std::string_view pending);
  CheckFacts facts() const;
  std::string protocol() const;
  std::string received_protocol() const;
  void log_reject(const std::string& stage, const Reply& r, const std::string& to);
  void count(Verb v, bool ok);
  void count_name(const std::string& name, bool ok);
  std::string counts() const;
  void on_close(common::net::CloseReason reason, const std::string& detail);
  bool bare_newline_forbidden() const {
    return s_.forbid_bare_newline && !s_.bare_newline_exclusions.contains(client_addr_);
  }

  SmtpServer& server_;
  const SmtpdSettings& s_;
  std::shared_ptr<common::net::Connection> conn_;
  Port port_;
  common::LineReader in_;
  common::ev::Timer sleep_timer_;
  Phase phase_ = Phase::kStart;
  bool waiting_ = false;
  bool quit_ = false;
  bool greeted_ = false;  // "connect from" was logged, so "disconnect from" will be
  std::string last_command_ = "CONNECT";

  // The client.
  std::string client_addr_;
  std::string client_name_ = "unknown";
  std::string reverse_name_ = "unknown";
  bool name_tempfail_ = false;
  std::string client_;  // "name[addr]"
  bool in_mynetworks_ = false;
  bool anvil_counted_ = false;
  bool ill_pipelining_ = false;  // commands sent ahead of time where not allowed (whole session)
  DnsxlCache dnsxl_;             // DNS list answers of this session
  std::optional<std::string> helo_;
  bool esmtp_ = false;
  bool tls_ = false;
  std::string tls_description_;
  std::string sasl_user_, sasl_method_;
  int auth_failures_ = 0;
  SaslServer::Id auth_id_ = 0;
  bool auth_active_ = false;
  uid_t local_uid_ = static_cast<uid_t>(-1);

  // The transaction.
  std::optional<smtp::Path> mail_;
  smtp::MailParams mail_params_;
  DomainDns sender_dns_;
  AddressClass sender_class_ = AddressClass::kDefault;
  std::vector<std::shared_ptr<AcceptedRcpt>> rcpts_;
  bool hold_ = false;     // an access table said HOLD: queue the message on hold
  bool discard_ = false;  // an access table said DISCARD: accept and throw away
  std::unique_ptr<BodyWriter> body_;
  std::unique_ptr<HeaderFilter> filter_;
  smtp::DataReader data_;
  uint64_t body_bytes_ = 0;    // client bytes of the message (size limit)
  bool too_big_ = false;
  bool write_failed_ = false;
  std::string write_error_;
  std::string filtered_;       // scratch for the header filter's output
  // BDAT.
  uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  bool bdat_active_ = false;   // a BDAT transaction has started
  smtp::LineEndings bdat_endings_;
  bool bdat_failed_ = false;

  // Error and command counters.
  int errors_ = 0;
  int junk_ = 0;
  std::map<std::string, std::pair<int, int>> counts_;  // verb -> (ok, total)
  std::vector<std::string> count_order_;
};

void Session::start() {
  const common::net::PeerInfo& p = conn_->peer();
  client_addr_ = p.is_unix ? "127.0.0.1" : p.address;
  if (p.is_unix) {
    client_name_ = reverse_name_ = "localhost";
    local_uid_ = p.uid;
  }
  client_ = maillog::endpoint(client_name_, client_addr_);
  in_mynetworks_ = port_ == Port::kLocal || s_.mynetworks.contains(client_addr_);
  std::weak_ptr<Session> weak = weak_from_this();
  common::net::Connection::Callbacks cb;
  cb.on_data = [weak](std::string_view d) {
    if (auto s = weak.lock()) s->on_data(d);
  };
  cb.on_close = [weak](common::net::CloseReason r, const std::string& detail) {
    if (auto s = weak.lock()) s->on_close(r, detail);
  };
  cb.on_tls_ready = [weak] {
    auto s = weak.lock();
    if (!s) return;
    s->tls_ = true;
    if (const common::net::StreamFilter* f = s->conn_->filter()) s->tls_description_ = f->description();
    maillog::tls_established("smtpd", s->client_, s->tls_description_, false);
  };
  cb.on_timeout = [weak](common::net::TimeoutKind) {
    auto s = weak.lock();
    if (!s) return;
    maillog::timeout(s->last_command_, s->client_);
    s->conn_->write(Reply(421, "4.4.2", s->s_.myhostname + " Error: timeout exceeded").format());
    s->phase_ = Phase::kClosed;
    s->conn_->close();
  };
  conn_->set_idle_timeout(s_.timeout_ms);
  conn_->start(std::move(cb));
  if (port_ == Port::kSmtps) {
    if (!server_.tls()) {
      common::log::warning("smtps connection from %s but no smtpd_tls_cert_file: closing", client_.c_str());
      conn_->abort();
      return;
    }
    conn_->start_tls(common::tls::server_filter(*server_.tls_for(port_)));
  }
  conn_->pause_reading();
  waiting_ = true;
  lookup_client_name([this] { greet(); });
}

void Session::lookup_client_name(std::function<void()> then) {
  if (conn_->peer().is_unix || !s_.peername_lookup) {
    then();
    return;
  }
  if (is_loopback(client_addr_) && !s_.dns_configured) {
    // /etc/hosts names loopback "localhost"; without a configured DNS server we do
    // not ask the system resolver about it (and never send loopback PTR queries out).
    client_name_ = reverse_name_ = "localhost";
    client_ = maillog::endpoint(client_name_, client_addr_);
    then();
    return;
  }
  common::dns::Resolver* r = server_.resolver();
  if (!r) {
    then();
    return;
  }
  std::weak_ptr<Session> weak = weak_from_this();
  r->ptr(client_addr_, [weak, then](const common::dns::Answer& a) {
    auto s = weak.lock();
    if (!s) return;
    if (a.status != common::dns::Status::kOk || a.names.empty()) {
      s->name_tempfail_ = a.status == common::dns::Status::kTempFail;
      then();
      return;
    }
    std::string name = a.names.front();
    if (!name.empty() && name.back() == '.') name.pop_back();
    s->reverse_name_ = name;
    // Forward-confirm: the name must resolve back to the client's address (Postfix).
    s->server_.resolver()->addresses(name, true, true, [weak, name, then](const common::dns::Answer& f) {
      auto s2 = weak.lock();
      if (!s2) return;
      if (f.status == common::dns::Status::kOk &&
          std::find(f.addresses.begin(), f.addresses.end(), s2->client_addr_) != f.addresses.end()) {
        s2->client_name_ = name;
      } else if (f.status == common::dns::Status::kTempFail) {
        s2->name_tempfail_ = true;
      } else {
        common::log::warning("hostname %s does not resolve to address %s", common::log_escape(name).c_str(),
                             s2->client_addr_.c_str());
      }
      s2->client_ = maillog::endpoint(s2->client_name_, s2->client_addr_);
      then();
    });
  });
}

void Session::greet() {
  maillog::connect(client_);
  greeted_ = true;
  Anvil& anvil = server_.anvil();
  const uint64_t now = server_.loop().now_ms();
  const bool exempt = port_ == Port::kLocal || s_.limit_exceptions.contains(client_addr_);
  if (!exempt) {
    anvil.connect(client_addr_, now);
    anvil_counted_ = true;
    int64_t rate = anvil.rate(client_addr_, Anvil::kConnRate, now);
    bool too_many = s_.conn_count_limit > 0 && anvil.connections(client_addr_) > s_.conn_count_limit;
    bool too_fast = s_.conn_rate_limit > 0 && rate > s_.conn_rate_limit;
    if (too_many || too_fast) {
      common::log::warning("%s connection %s %s for service %s", too_many ? "Connection concurrency limit exceeded:"
                                                                          : "Connection rate limit exceeded:",
                           std::to_string(too_many ? anvil.connections(client_addr_) : rate).c_str(),
                           ("from " + client_).c_str(), "smtp");
      fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many connections from " + client_addr_));
      return;
    }
  }
  phase_ = Phase::kCommands;
  // A client that talks before the greeting (Postfix "improper command pipelining
  // after CONNECT"). Reading is paused until now, so whatever it sent waits in the
  // socket. Not on smtps, where the client rightly speaks first (TLS), nor locally.
  if (port_ != Port::kSmtps && port_ != Port::kLocal && !conn_->peer().is_unix) {
    int pending = 0;
    if (::ioctl(conn_->fd(), FIONREAD, &pending) == 0 && pending > 0) {
      char peek[100];
      ssize_t n = ::recv(conn_->fd(), peek, sizeof peek, MSG_PEEK | MSG_DONTWAIT);
      note_pipelining("CONNECT", n > 0 ? std::string_view(peek, static_cast<size_t>(n)) : std::string_view());
    }
  }
  reply(Reply(220, "", s_.banner), false);
  end_wait();
}

void Session::note_pipelining(std::string_view after, std::string_view pending) {
  if (ill_pipelining_) return;
  ill_pipelining_ = true;
  // Postfix logs the first pending line. Not after STARTTLS: those plaintext bytes
  // are thrown away unread (CVE-2011-0411), so only their count is logged.
  std::string what;
  if (after == "STARTTLS") {
    what = std::to_string(pending.size()) + " bytes discarded";
  } else {
    what = common::log_escape(pending.substr(0, pending.find_first_of("\r\n")), 100);
  }
  common::log::logf(common::log::Level::kInfo, "smtpd", "improper command pipelining after %s from %s: %s",
                    std::string(after).c_str(), client_.c_str(), what.c_str());
}

void Session::begin_wait() {
  waiting_ = true;
  conn_->pause_reading();
}

void Session::end_wait() {
  waiting_ = false;
  if (phase_ == Phase::kClosed) return;
  conn_->resume_reading();
  process();
}

void Session::on_data(std::string_view data) {
  if (phase_ == Phase::kClosed) return;
  // Straight to the body unless earlier bytes still wait in the line buffer (their
  // order must be kept).
  if (phase_ == Phase::kData && !waiting_ && in_.buffered() == 0) {
    data_bytes(data);
    return;
  }
  if (phase_ == Phase::kBdat && !waiting_ && bdat_remaining_ > 0 && in_.buffered() == 0) {
    bdat_bytes(data);
    return;
  }
  in_.feed(data);
  process();
}

void Session::process() {
  auto self = shared_from_this();  // a handler may end the session
  while (!waiting_ && phase_ != Phase::kClosed && !sleep_timer_.active()) {
    if (phase_ == Phase::kData) {
      if (in_.buffered() == 0) return;
      std::string rest(in_.take_raw(in_.buffered()));
      data_bytes(rest);
      continue;
    }
    if (phase_ == Phase::kBdat && bdat_remaining_ > 0) {
      if (in_.buffered() == 0) return;
      std::string chunk(in_.take_raw(std::min<uint64_t>(in_.buffered(), bdat_remaining_)));
      bdat_bytes(chunk);
      continue;
    }
    common::LineReader::Line line;
    common::LineReader::Status st = in_.next(line);
    if (st == common::LineReader::Status::kNeedMore) return;
    if (st == common::LineReader::Status::kTooLong) {
      reply(Reply(500, "5.5.2", "Error: line too long"));
      continue;
    }
    if (line.ending == common::LineReader::Ending::kLf ||
        line.text.find('\r') != std::string_view::npos) {
      if (bare_newline_forbidden()) {
        // Postfix smtpd_forbid_bare_newline = yes: whatever follows a bare newline
        // may be a smuggled command; refuse and hang up rather than guess.
        fatal_reply(Reply(550, "5.5.2", std::string("Error: bare <") +
                                            (line.ending == common::LineReader::Ending::kLf ? "LF" : "CR") +
                                            "> received"));
        return;
      }
    }
    std::string text(line.text);
    if (!ill_pipelining_ && phase_ == Phase::kCommands && in_.buffered() > 0) {
      // RFC 2920 3.1: these commands end a group; and without PIPELINING (seen only
      // in our EHLO reply) no command may be sent ahead of time. BDAT's chunk is not
      // a command. (Postfix sets the same flag for reject_unauth_pipelining.)
      std::string verb = upper(text.substr(0, std::min<size_t>(text.find(' '), 16)));
      static const char* const kLast[] = {"HELO", "EHLO", "DATA", "QUIT", "STARTTLS", "NOOP", "VRFY", "EXPN", "ETRN", "TURN"};
      bool last = false;
      for (const char* k : kLast) last = last || verb == k;
      if (verb != "BDAT" && (last || !esmtp_)) {
        std::string_view rest = in_.peek();
        note_pipelining(verb, rest);
      }
    }
    handle_line(text);
  }
}

void Session::handle_line(std::string_view line) {
  if (phase_ == Phase::kAuth) {
    auth_step(line);
    return;
  }
  if (port_ == Port::kLocal && server_.queue_admin) {
    // Tern-private commands for ternctl queue: "XFLUSH id", "XHOLD id", "XRELEASE
    // id", "XDELETE id" (id or ALL). Flushing is for anyone, as Postfix's postqueue
    // -f is; changing the queue is for root and the mail owner (postsuper).
    static const char* const kVerbs[] = {"XFLUSH ", "XHOLD ", "XRELEASE ", "XDELETE "};
    for (const char* v : kVerbs) {
      std::string_view verb(v);
      if (line.size() <= verb.size() || line.substr(0, verb.size()) != verb) continue;
      std::string arg(line.substr(verb.size()));
      std::string name(verb.substr(1, verb.size() - 2));
      if (name != "FLUSH" && local_uid_ != 0 && local_uid_ != ::getuid()) {
        reply(Reply(550, "5.7.1", "only root and the mail owner may change the queue"), false);
        return;
      }
      begin_wait();
      std::weak_ptr<Session> weak = weak_from_this();
      server_.queue_admin(name, arg, [weak](Reply r) {
        auto s = weak.lock();
        if (!s || s->phase_ == Phase::kClosed) return;
        s->reply(r, false);
        s->end_wait();
      });
      return;
    }
  }
  if (port_ == Port::kLocal && (line == "XSHOWQ" || line == "XFLUSH")) {
    // Tern-private commands of the local socket: the queue listing for mailq and a
    // queue flush for sendmail -q (Postfix's showq and postqueue -f), for any local
    // user, as Postfix allows by default.
    if (line == "XFLUSH") {
      server_.flush();
      reply(Reply(250, "2.0.0", "Queue flush started"), false);
    } else {
      std::string text = server_.showq();
      std::vector<std::string> lines = common::split(text, '\n');
      if (!lines.empty() && lines.back().empty()) lines.pop_back();
      reply(Reply(250, "", lines), false);
    }
    return;
  }
  smtp::CommandOptions opt;
  opt.dsn = true;
  opt.auth = true;
  opt.chunking = true;
  opt.smtputf8 = true;
  smtp::CommandResult r = smtp::parse_command(line, opt);
  if (std::holds_alternative<Reply>(r)) {
    std::string_view verb = line.substr(0, line.find(' '));
    last_command_ = upper(std::string(verb.substr(0, 16)));
    const Reply& rep = std::get<Reply>(r);
    std::string name = "unknown";
    for (Verb v : {Verb::kHelo, Verb::kEhlo, Verb::kMail, Verb::kRcpt, Verb::kData, Verb::kBdat, Verb::kRset,
                   Verb::kNoop, Verb::kQuit, Verb::kVrfy, Verb::kExpn, Verb::kHelp, Verb::kStartTls, Verb::kAuth}) {
      if (common::iequals(verb, verb_name(v))) name = verb_name(v);
    }
    count_name(name, false);
    if (name == "unknown") {
      common::log::warning("non-SMTP command from %s: %s", client_.c_str(), common::log_escape(line, 100).c_str());
    }
    reply(rep);
    return;
  }
  smtp::Command& cmd = std::get<smtp::Command>(r);
  last_command_ = upper(verb_name(cmd.verb));
  dispatch(cmd);
}

void Session::count(Verb v, bool ok) { count_name(verb_name(v), ok); }

void Session::count_name(const std::string& n, bool ok) {
  auto it = counts_.find(n);
  if (it == counts_.end()) {
    count_order_.push_back(n);
    it = counts_.emplace(n, std::make_pair(0, 0)).first;
  }
  it->second.second++;
  if (ok) it->second.first++;
}

std::string Session::counts() const {
  // Postfix 3: "ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=3/5".
  std::string out;
  int ok = 0, total = 0;
  std::vector<std::string> seen;
  for (const std::string& n : count_order_) {
    if (std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
    seen.push_back(n);
    auto it = counts_.find(n);
    if (it == counts_.end()) continue;
    const auto& [good, all] = it->second;
    ok += good;
    total += all;
    if (!out.empty()) out += ' ';
    out += n + "=" + (good == all ? std::to_string(all) : std::to_string(good) + "/" + std::to_string(all));
  }
  if (!out.empty()) out += ' ';
  out += "commands=" + (ok == total ? std::to_string(total) : std::to_string(ok) + "/" + std::to_string(total));
  return out;
}

void Session::reply(const Reply& r, bool counts_as_error) {
  if (phase_ == Phase::kClosed) return;
  if (counts_as_error && r.code >= 400) {
    ++errors_;
    if (errors_ >= s_.hard_error_limit) {
      conn_->write(r.format());
      fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many errors"));
      return;
    }
    if (errors_ > s_.soft_error_limit && s_.error_sleep_ms > 0) {
      // Tarpit a client that keeps making errors (Postfix smtpd_error_sleep_time):
      // the reply goes out after the pause and no input is read meanwhile.
      std::string text = r.format();
      std::weak_ptr<Session> weak = weak_from_this();
      conn_->pause_reading();
      sleep_timer_.start(s_.error_sleep_ms, [weak, text] {
        auto s = weak.lock();
        if (!s || s->phase_ == Phase::kClosed) return;
        s->conn_->write(text);
        if (!s->waiting_) s->conn_->resume_reading();
        s->process();
      });
      return;
    }
  }
  conn_->write(r.format());
}

void Session::fatal_reply(const Reply& r) {
  if (phase_ == Phase::kClosed) return;
  conn_->write(r.format());
  phase_ = Phase::kClosed;
  in_.clear();
  reset_transaction();
  conn_->close();
}

void Session::on_close(common::net::CloseReason reason, const std::string& detail) {
  if (auth_active_ && server_.sasl()) server_.sasl()->cancel(auth_id_);
  if (phase_ != Phase::kClosed && !quit_ && reason != common::net::CloseReason::kIdleTimeout) {
    maillog::lost_connection(last_command_, client_);
  }
  phase_ = Phase::kClosed;
  if (!quit_ && greeted_) maillog::disconnect(client_, counts());
  if (anvil_counted_) server_.anvil().disconnect(client_addr_);
  reset_transaction();
  server_.session_ended(this);
}

std::string Session::protocol() const {
  // RFC 3848 with-protocol types (the log's proto= as Postfix's).
  if (!esmtp_) return "SMTP";
  std::string p = "ESMTP";
  if (tls_) p += "S";
  if (!sasl_user_.empty()) p += "A";
  return p;
}

// In the Received header, SMTPUTF8 mail is UTF8SMTP, UTF8SMTPS, UTF8SMTPA or
// UTF8SMTPSA (RFC 6531 3.7.3, registered in the RFC 3848 table).
std::string Session::received_protocol() const {
  std::string p = protocol();
  if (esmtp_ && mail_params_.smtputf8) p.replace(0, 5, "UTF8SMTP");
  return p;
}

CheckFacts Session::facts() const {
  CheckFacts f;
  f.client_addr = client_addr_;
  f.client_name = client_name_;
  f.reverse_name = reverse_name_;
  f.name_tempfail = name_tempfail_;
  f.in_mynetworks = in_mynetworks_;
  f.sasl_authenticated = !sasl_user_.empty() || port_ == Port::kLocal;
  f.helo = helo_;
  if (mail_) f.sender = &*mail_;
  f.sender_class = sender_class_;
  f.sender_dns = sender_dns_;
  f.recipients_accepted = rcpts_.size();
  f.ill_pipelining = ill_pipelining_;
  f.dnsxl = &dnsxl_;
  return f;
}

bool Session::gather_dnsxl(std::initializer_list<const Restrictions*> lists, const CheckFacts& f,
                           std::function<void()> then) {
  std::vector<std::string> names;
  for (const Restrictions* l : lists) {
    for (std::string& n : l->dnsxl_queries(f)) {
      if (dnsxl_.count(n) == 0 && std::find(names.begin(), names.end(), n) == names.end()) names.push_back(std::move(n));
    }
  }
  if (names.empty()) return true;
  // Bound what a client can make us remember: the names come from its HELO, sender
  // and recipients (and the configured lists). Forgetting only costs a new query.
  if (dnsxl_.size() > 256) dnsxl_.clear();
  common::dns::Resolver* r = server_.resolver();
  if (!r) {
    for (const std::string& n : names) {
      common::log::warning("%s: RBL lookup error: no DNS resolver", n.c_str());
      dnsxl_[n].status = common::dns::Status::kTempFail;
    }
    return true;
  }
  auto pending = std::make_shared<size_t>(names.size());
  std::weak_ptr<Session> weak = weak_from_this();
  auto one_done = [pending, then] {
    if (--*pending == 0) then();
  };
  for (const std::string& n : names) {
    r->addresses(n, true, false, [weak, n, one_done](const common::dns::Answer& a) {
      auto s = weak.lock();
      if (!s) return;
      DnsxlAnswer& out = s->dnsxl_[n];
      out.status = a.status;
      if (a.status != common::dns::Status::kOk) {
        // Postfix: no definitive answer means not listed; mail is not refused because
        // a DNS list server is down.
        if (a.status != common::dns::Status::kNxDomain && a.status != common::dns::Status::kNoData) {
          common::log::warning("%s: RBL lookup error: %s", n.c_str(),
                               a.error.empty() ? common::dns::status_name(a.status) : a.error.c_str());
        }
        one_done();
        return;
      }
      out.addresses = a.addresses;
      s->server_.resolver()->txt(n, [weak, n, one_done](const common::dns::Answer& t) {
        auto s2 = weak.lock();
        if (!s2) return;
        if (t.status == common::dns::Status::kOk) {
          // Postfix joins the TXT records with " / ", up to 500 bytes.
          std::string txt;
          for (const std::string& one : t.texts) {
            if (!txt.empty()) txt += " / ";
            txt += one;
            if (txt.size() >= 500) break;
          }
          if (txt.size() > 500) txt.resize(500);
          s2->dnsxl_[n].txt = common::log_escape(txt, 500);
        }
        one_done();
      });
    });
  }
  return false;
}

void Session::apply_effects(const Effects& e, const std::string& stage, const std::string& to) {
  std::string from = mail_ ? (mail_->null ? "" : mail_->mailbox.address()) : "";
  for (const auto& [action, text] : e.whatsup) {
    // Postfix log_whatsup(): the reject line's shape with the action's name.
    std::string t = std::string(body_ ? body_->queue_id() : "NOQUEUE") + ": " + action + ": " + stage + " from " +
                    client_ + ": " + common::log_escape(text, 500) + "; from=<" + common::log_escape(from, 300) + ">";
    if (!to.empty()) t += " to=<" + common::log_escape(to, 300) + ">";
    t += " proto=" + protocol();
    if (helo_) t += " helo=<" + common::log_escape(*helo_, 255) + ">";
    common::log::logf(common::log::Level::kInfo, "smtpd", "%s", t.c_str());
  }
  if (e.hold) hold_ = true;
  if (e.discard) discard_ = true;
}

void Session::log_reject(const std::string& stage, const Reply& r, const std::string& to) {
  std::string from = mail_ ? (mail_->null ? "" : mail_->mailbox.address()) : "";
  maillog::reject(body_ ? body_->queue_id() : "", stage, client_, r.summary(), from, to, protocol(),
                  helo_.value_or(""));
}

// --- commands ------------------------------------------------------------------

void Session::dispatch(smtp::Command& c) {
  // RFC 3207 4.2 / Postfix: after "Must issue a STARTTLS command first", only a few
  // commands are allowed in the clear.
  const bool need_tls = !tls_ && (port_ == Port::kSubmission ? server_.tls() != nullptr : s_.tls_level == "encrypt");
  switch (c.verb) {
    case Verb::kHelo: cmd_helo(c, false); return;
    case Verb::kEhlo: cmd_helo(c, true); return;
    case Verb::kLhlo: reply(Reply(500, "5.5.2", "Error: command not recognized")); count(c.verb, false); return;
    case Verb::kQuit:
      count(c.verb, true);
      quit_ = true;
      conn_->write(Reply(221, "2.0.0", "Bye").format());
      phase_ = Phase::kClosed;
      maillog::disconnect(client_, counts());
      in_.clear();
      conn_->close();
      return;
    case Verb::kNoop:
      count(c.verb, true);
      if (++junk_ > s_.junk_limit) {
        fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many errors"));
        return;
      }
      reply(Reply(250, "2.0.0", "Ok"));
      return;
    case Verb::kRset:
      count(c.verb, true);
      if (++junk_ > s_.junk_limit) {
        fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many errors"));
        return;
      }
      cmd_rset();
      return;
    case Verb::kHelp:
      count(c.verb, true);
      reply(Reply(214, "2.0.0", "Help: see RFC 5321"));
      return;
    case Verb::kStartTls: cmd_starttls(); return;
    case Verb::kAuth:
      if (need_tls) {
        count(c.verb, false);
        reply(Reply(530, "5.7.0", "Must issue a STARTTLS command first"));
        return;
      }
      cmd_auth(c);
      return;
    case Verb::kVrfy: cmd_vrfy(c); return;
    case Verb::kExpn:
      count(c.verb, false);
      reply(Reply(502, "5.5.1", "Error: command not implemented"));
      return;
    default: break;
  }
  if (need_tls) {
    count(c.verb, false);
    reply(Reply(530, "5.7.0", "Must issue a STARTTLS command first"));
    return;
  }
  switch (c.verb) {
    case Verb::kMail: cmd_mail(c); return;
    case Verb::kRcpt: cmd_rcpt(c); return;
    case Verb::kData: cmd_data(); return;
    case Verb::kBdat: cmd_bdat(c); return;
    default: break;
  }
}

bool Session::auth_offered() {
  if (!server_.sasl() || !sasl_user_.empty()) return false;
  if (port_ == Port::kLocal) return false;
  if (port_ == Port::kMx && !s_.sasl_on_mx) return false;
  if (s_.tls_auth_only && !tls_) return false;
  return !offered_mechanisms().empty();
}

std::vector<SaslServer::Mechanism> Session::offered_mechanisms() {
  std::vector<SaslServer::Mechanism> out;
  if (!server_.sasl()) return out;
  for (const SaslServer::Mechanism& m : server_.sasl()->mechanisms()) {
    if (m.anonymous && s_.sasl_noanonymous) continue;
    if (m.plaintext && !tls_ && (s_.sasl_noplaintext || port_ != Port::kMx)) continue;
    out.push_back(m);
  }
  return out;
}

void Session::cmd_helo(smtp::Command& c, bool esmtp) {
  count(c.verb, true);
  // RFC 5321 4.1.4: HELO/EHLO resets the transaction.
  reset_transaction();
  helo_ = c.argument.substr(0, 255);
  esmtp_ = esmtp;
  if (!s_.delay_reject && !s_.helo.empty()) {
    std::weak_ptr<Session> weak = weak_from_this();
    auto checked = [weak, esmtp] {
      auto s = weak.lock();
      if (!s || s->phase_ == Phase::kClosed) return;
      CheckFacts f = s->facts();
      Effects e;
      Verdict v = s->s_.helo.evaluate(CheckStage::kHelo, f, s->s_.codes, &e);
      s->apply_effects(e, esmtp ? "EHLO" : "HELO", "");
      if (v.refused()) {
        s->log_reject(esmtp ? "EHLO" : "HELO", v.reply, "");
        s->helo_.reset();
        s->reply(v.reply);
        return;
      }
      s->helo_reply(esmtp);
    };
    if (!gather_dnsxl({&s_.helo}, facts(), [weak, checked] {
          checked();
          if (auto s = weak.lock(); s && s->phase_ != Phase::kClosed) s->end_wait();
        })) {
      begin_wait();
      return;
    }
    checked();
    return;
  }
  helo_reply(esmtp);
}

void Session::helo_reply(bool esmtp) {
  if (!esmtp) {
    reply(Reply(250, "", s_.myhostname), false);
    return;
  }
  std::vector<std::string> lines = {s_.myhostname, "PIPELINING"};
  if (s_.message_size_limit > 0) {
    lines.push_back("SIZE " + std::to_string(s_.message_size_limit));
  } else {
    lines.push_back("SIZE");
  }
  lines.push_back("VRFY");
  lines.push_back("ETRN");
  // Not on the local socket (sendmail -bs), which refuses STARTTLS with 502.
  if (!tls_ && server_.tls() && port_ != Port::kLocal && (port_ != Port::kMx || s_.tls_level != "none")) {
    lines.push_back("STARTTLS");
  }
  if (auth_offered()) {
    std::string mechs;
    for (const auto& m : offered_mechanisms()) mechs += (mechs.empty() ? "" : " ") + m.name;
    lines.push_back("AUTH " + mechs);
    if (s_.broken_sasl_auth_clients) lines.push_back("AUTH=" + mechs);
  }
  lines.push_back("ENHANCEDSTATUSCODES");
  lines.push_back("8BITMIME");
  lines.push_back("DSN");
  lines.push_back("SMTPUTF8");
  lines.push_back("CHUNKING");
  // ETRN is listed by Postfix but we have no fast-flush; keep the list honest.
  lines.erase(std::remove(lines.begin(), lines.end(), "ETRN"), lines.end());
  if (s_.disable_vrfy) lines.erase(std::remove(lines.begin(), lines.end(), "VRFY"), lines.end());
  reply(Reply(250, "", lines), false);
}

void Session::cmd_starttls() {
  if (tls_ || conn_->tls_active()) {
    count(Verb::kStartTls, false);
    reply(Reply(554, "5.5.1", "Error: TLS already active"));
    return;
  }
  if (!server_.tls() || (port_ == Port::kMx && s_.tls_level == "none") || port_ == Port::kLocal) {
    count(Verb::kStartTls, false);
    reply(Reply(502, "5.5.1", "Error: command not implemented"));
    return;
  }
  count(Verb::kStartTls, true);
  conn_->write(Reply(220, "2.0.0", "Ready to start TLS").format());
  // CVE-2011-0411: anything the client sent after STARTTLS, before the handshake,
  // must never be executed as if it came through TLS.
  in_.clear();
  conn_->start_tls(common::tls::server_filter(*server_.tls_for(port_)));
  // RFC 3207 4.2: forget everything learnt from the client before TLS.
  reset_transaction();
  helo_.reset();
  esmtp_ = false;
}

void Session::cmd_vrfy(smtp::Command& c) {
  if (s_.disable_vrfy) {
    count(c.verb, false);
    reply(Reply(502, "5.5.1", "VRFY command is disabled"));
    return;
  }
  count(c.verb, true);
  if (++junk_ > s_.junk_limit) {
    fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many errors"));
    return;
  }
  // RFC 5321 3.5.3: 252 when we will accept but do not verify (Postfix answers 252
  // for addresses that pass its checks; we do not help address harvesting further).
  reply(Reply(252, "2.0.0", common::log_escape(c.argument, 256)), false);
}

void Session::cmd_rset() {
  reset_transaction();
  reply(Reply(250, "2.0.0", "Ok"), false);
}

void Session::reset_transaction() {
  mail_.reset();
  mail_params_ = smtp::MailParams{};
  sender_dns_ = DomainDns{};
  sender_class_ = AddressClass::kDefault;
  rcpts_.clear();
  hold_ = false;
  discard_ = false;
  body_.reset();
  filter_.reset();
  data_.reset();
  body_bytes_ = 0;
  too_big_ = false;
  write_failed_ = false;
  write_error_.clear();
  bdat_remaining_ = 0;
  bdat_last_ = false;
  bdat_active_ = false;
  bdat_endings_ = smtp::LineEndings{};
  bdat_failed_ = false;
}

void Session::cmd_mail(smtp::Command& c) {
  if (s_.helo_required && !helo_) {
    count(c.verb, false);
    reply(Reply(503, "5.5.1", "Error: send HELO/EHLO first"));
    return;
  }
  if (mail_) {
    count(c.verb, false);
    reply(Reply(503, "5.5.1", "Error: nested MAIL command"));
    return;
  }
  if ((port_ == Port::kSubmission || port_ == Port::kSmtps) && sasl_user_.empty()) {
    // RFC 6409 4.3 / RFC 4954 6: submission needs an authenticated client.
    count(c.verb, false);
    reply(Reply(530, "5.7.0", "Authentication required"));
    return;
  }
  if (c.mail.size && s_.message_size_limit > 0 && *c.mail.size > s_.message_size_limit) {
    count(c.verb, false);
    Reply r(552, "5.3.4", "Message size exceeds fixed limit");
    log_reject("MAIL", r, "");
    reply(r);
    return;
  }
  if (!queue_has_room(s_, c.mail.size ? *c.mail.size : 0)) {
    // Postfix's smtpd_check_queue(): RFC 1870 6.1 and RFC 5321 4.5.3.1.10 both
    // make a full disk a temporary refusal, so the client keeps the message.
    count(c.verb, false);
    Reply r(452, "4.3.1", "Insufficient system storage");
    log_reject("MAIL", r, "");
    reply(r);
    return;
  }
  if (c.mail.smtputf8 && !esmtp_) {
    count(c.verb, false);
    reply(Reply(555, "5.5.4", "Unsupported option: SMTPUTF8"));
    return;
  }
  if (!c.path.null && c.path.mailbox.utf8 && !c.mail.smtputf8) {
    count(c.verb, false);
    reply(Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"));
    return;
  }
  if (port_ == Port::kLocal && c.path.null == false && c.path.mailbox.empty()) {
    count(c.verb, false);
    reply(Reply(501, "5.1.7", "Bad sender address syntax"));
    return;
  }
  Result<AddressClass> cls =
      c.path.null ? Result<AddressClass>(AddressClass::kDefault) : server_.tables().classify(c.path.mailbox);
  if (!cls) {
    count(c.verb, false);
    common::log::warning("%s", cls.error().message.c_str());
    reply(Reply(451, "4.3.0", "<" + c.path.mailbox.address() + ">: Temporary lookup failure"));
    return;
  }
  // Message rate (anvil).
  if (s_.msg_rate_limit > 0 && anvil_counted_) {
    int64_t n = server_.anvil().rate(client_addr_, Anvil::kMsgRate, server_.loop().now_ms());
    if (n > s_.msg_rate_limit) {
      count(c.verb, false);
      common::log::warning("Message delivery request rate limit exceeded: %lld from %s for service smtp",
                           static_cast<long long>(n), client_.c_str());
      reply(Reply(450, "4.7.1", "Error: too much mail from " + client_addr_));
      return;
    }
  }
  mail_ = c.path;
  mail_params_ = c.mail;
  sender_class_ = *cls;
  auto finish = [this, verb = c.verb] {
    if (!s_.delay_reject) {
      CheckFacts f = facts();
      Effects e;
      Verdict v;
      for (auto [list, stage] : {std::pair{&s_.client, CheckStage::kClient}, std::pair{&s_.helo, CheckStage::kHelo},
                                 std::pair{&s_.sender, CheckStage::kSender}}) {
        v = list->evaluate(stage, f, s_.codes, &e);
        if (v.refused()) break;
      }
      // Postfix DEFER_IF_PERMIT: what would be accepted is deferred instead.
      if (!v.refused() && e.defer_if_permit) {
        v.kind = Verdict::Kind::kDefer;
        v.reply = *e.defer_if_permit;
      }
      apply_effects(e, "MAIL", "");
      if (v.refused()) {
        log_reject("MAIL", v.reply, "");
        mail_.reset();
        hold_ = discard_ = false;  // Postfix resets access-table side effects with MAIL
        count(verb, false);
        reply(v.reply);
        return;
      }
    }
    count(verb, true);
    reply(Reply(250, "2.1.0", "Ok"), false);
  };
  std::weak_ptr<Session> weak = weak_from_this();
  auto pending = std::make_shared<int>(1);
  auto done_one = [weak, pending, finish] {
    if (--*pending != 0) return;
    auto s = weak.lock();
    if (!s || s->phase_ == Phase::kClosed) return;
    finish();
    s->end_wait();
  };
  bool wait = false;
  Needs n = s_.sender.needs();
  if (n.sender_dns && !mail_->null && !mail_->mailbox.domain_is_literal && sender_class_ == AddressClass::kDefault) {
    ++*pending;
    wait = true;
    gather_dns(mail_->mailbox.domain, sender_dns_, done_one);
  }
  if (!s_.delay_reject && !gather_dnsxl({&s_.client, &s_.helo, &s_.sender}, facts(), done_one)) {
    ++*pending;
    wait = true;
  }
  if (wait) {
    begin_wait();
    done_one();
    return;
  }
  finish();
}

void Session::gather_dns(const std::string& domain, DomainDns& out, std::function<void()> then) {
  common::dns::Resolver* r = server_.resolver();
  if (!r) {
    out.looked_up = true;
    out.status = common::dns::Status::kTempFail;
    then();
    return;
  }
  DomainDns* target = &out;
  std::weak_ptr<Session> weak = weak_from_this();
  r->mx(domain, [weak, target, domain, then](const common::dns::Answer& a) {
    auto s = weak.lock();
    if (!s) return;
    target->looked_up = true;
    target->status = a.status;
    target->null_mx = a.status == common::dns::Status::kOk && a.null_mx();
    if (a.status != common::dns::Status::kNoData) {
      then();
      return;
    }
    // RFC 5321 5.1: no MX, so the domain's address is its mail exchanger.
    s->server_.resolver()->addresses(domain, true, true, [weak, target, then](const common::dns::Answer& b) {
      if (!weak.lock()) return;
      target->status = b.status;
      then();
    });
  });
}

void Session::cmd_rcpt(smtp::Command& c) {
  if (!mail_) {
    count(c.verb, false);
    reply(Reply(503, "5.5.1", "Error: need MAIL command"));
    return;
  }
  if (rcpts_.size() >= s_.recipient_limit) {
    count(c.verb, false);
    reply(Reply(452, "4.5.3", "Error: too many recipients"));
    return;
  }
  if (!c.path.postmaster && c.path.mailbox.utf8 && !mail_params_.smtputf8) {
    count(c.verb, false);
    reply(Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"));
    return;
  }
  if (s_.rcpt_rate_limit > 0 && anvil_counted_) {
    int64_t n = server_.anvil().rate(client_addr_, Anvil::kRcptRate, server_.loop().now_ms());
    if (n > s_.rcpt_rate_limit) {
      count(c.verb, false);
      common::log::warning("Recipient address rate limit exceeded: %lld from %s for service smtp",
                           static_cast<long long>(n), client_.c_str());
      reply(Reply(450, "4.7.1", "Error: too many recipients from " + client_addr_));
      return;
    }
  }
  auto r = std::make_shared<AcceptedRcpt>();
  r->path = c.path;
  r->params = c.rcpt;
  if (r->path.postmaster) {
    // RFC 5321 4.5.1: <Postmaster> without a domain is always ours.
    r->path.mailbox.local_part = "postmaster";
    r->path.mailbox.domain = s_.myorigin;
  }
  rcpt_checks(r);
}

void Session::rcpt_checks(std::shared_ptr<AcceptedRcpt> r) {
  const std::string to = r->path.mailbox.address();
  Result<AddressClass> cls = server_.tables().classify(r->path.mailbox);
  if (!cls) {
    common::log::warning("%s", cls.error().message.c_str());
    Reply rep(451, "4.3.0", "<" + to + ">: Temporary lookup failure");
    log_reject("RCPT", rep, to);
    count(Verb::kRcpt, false);
    reply(rep);
    return;
  }
  // Everything the lists and the unlisted-recipient check need, gathered first.
  struct Gather {
    CheckFacts facts;
    DomainDns rcpt_dns;
    Known known = Known::kUnchecked;
    int pending = 1;
  };
  auto g = std::make_shared<Gather>();
  const AddressClass rc = *cls;
  Needs need_all;
  for (const Restrictions* l : {&s_.client, &s_.helo, &s_.sender, &s_.relay, &s_.recipient}) {
    Needs n = l->needs();
    need_all.recipient_dns = need_all.recipient_dns || n.recipient_dns;
    need_all.recipient_known = need_all.recipient_known || n.recipient_known;
  }
  const bool postmaster = r->path.postmaster || common::iequals(r->path.mailbox.local_part, "postmaster");
  // Local submission (sendmail) is never refused for an unknown user: the program
  // handing mail off could not act on it; the recipient bounces (Postfix pickup).
  const bool check_known = port_ != Port::kLocal && (s_.reject_unlisted_recipient || need_all.recipient_known) && !postmaster &&
                           !is_routed(r->path.mailbox) && rc != AddressClass::kDefault;
  std::weak_ptr<Session> weak = weak_from_this();
  auto decide = [weak, r, rc, g, postmaster]() {
    auto s = weak.lock();
    if (!s || s->phase_ == Phase::kClosed) return;
    const std::string to = r->path.mailbox.address();
    CheckFacts f = s->facts();
    f.recipient = &r->path;
    f.recipient_class = rc;
    f.recipient_dns = g->rcpt_dns;
    f.recipient_known = postmaster ? Known::kYes : g->known;
    Effects e;
    auto refuse = [&](const Verdict& v) {
      s->apply_effects(e, "RCPT", to);
      s->log_reject("RCPT", v.reply, to);
      s->count(Verb::kRcpt, false);
      s->reply(v.reply);
      s->end_wait();
    };
    if (s->discard_) {
      // Postfix: once DISCARD was decided the message goes nowhere; no more checks.
      s->rcpt_accept(r);
      s->end_wait();
      return;
    }
    const SmtpdSettings& st = s->s_;
    if (st.delay_reject) {
      for (auto [list, stage] : {std::pair{&st.client, CheckStage::kClient}, std::pair{&st.helo, CheckStage::kHelo},
                                 std::pair{&st.sender, CheckStage::kSender}}) {
        Verdict v = list->evaluate(stage, f, st.codes, &e);
        if (v.refused()) return refuse(v);
      }
    }
    Verdict v = st.relay.evaluate(CheckStage::kRelay, f, st.codes, &e);
    if (v.refused()) return refuse(v);
    v = st.recipient.evaluate(CheckStage::kRecipient, f, st.codes, &e);
    if (v.refused()) return refuse(v);
    // Relay control again, independent of how the lists were written: no
    // authorised destination, no AUTH, not from mynetworks means no.
    const bool authorised = rc != AddressClass::kDefault && !is_routed(r->path.mailbox) &&
                            !r->path.mailbox.domain_is_literal;
    if (!authorised && !f.in_mynetworks && !f.sasl_authenticated) {
      bool permitted_by_list = false;
      for (const Restrictions* l : {&st.relay, &st.recipient}) {
        Verdict pv = l->evaluate(CheckStage::kRelay, f, st.codes);
        permitted_by_list = permitted_by_list || pv.kind == Verdict::Kind::kPermit;
      }
      if (!permitted_by_list || is_routed(r->path.mailbox)) {
        Verdict rv;
        rv.kind = Verdict::Kind::kReject;
        rv.reply = Reply(st.codes.relay, st.codes.relay >= 500 ? "5.7.1" : "4.7.1", "<" + to + ">: Relay access denied");
        return refuse(rv);
      }
    }
    if (st.reject_unlisted_recipient && s->port_ != Port::kLocal) {
      Verdict u = unlisted_recipient(f, st.codes);
      if (u.refused()) return refuse(u);
    }
    // Postfix DEFER_IF_PERMIT: what would be accepted is deferred instead.
    if (e.defer_if_permit) {
      Verdict d;
      d.kind = Verdict::Kind::kDefer;
      d.reply = *e.defer_if_permit;
      return refuse(d);
    }
    s->apply_effects(e, "RCPT", to);
    s->rcpt_accept(r);
    s->end_wait();
  };
  begin_wait();
  auto done_one = [g, decide] {
    if (--g->pending == 0) decide();
  };
  if (need_all.recipient_dns && rc == AddressClass::kDefault && !r->path.mailbox.domain_is_literal) {
    ++g->pending;
    gather_dns(r->path.mailbox.domain, g->rcpt_dns, done_one);
  }
  {
    CheckFacts pre = facts();
    pre.recipient = &r->path;
    pre.recipient_class = rc;
    if (!gather_dnsxl({&s_.client, &s_.helo, &s_.sender, &s_.relay, &s_.recipient, &s_.data}, pre, done_one)) {
      ++g->pending;
    }
  }
  if (check_known) {
    ++g->pending;
    server_.tables().verify(r->path.mailbox, rc, [weak, g, done_one](Known k) {
      if (!weak.lock()) return;
      g->known = k;
      done_one();
    });
  }
  done_one();
}

void Session::rcpt_accept(std::shared_ptr<AcceptedRcpt> r) {
  const std::string addr = canonical_address(r->path.mailbox);
  Result<std::vector<Destination>> d = server_.tables().expand(addr);
  if (!d) {
    common::log::warning("%s", d.error().message.c_str());
    Reply rep(451, "4.3.0", "<" + r->path.mailbox.address() + ">: Temporary lookup failure");
    log_reject("RCPT", rep, r->path.mailbox.address());
    count(Verb::kRcpt, false);
    reply(rep);
    return;
  }
  r->dests = std::move(d).value();
  for (Destination& dest : r->dests) dest.orig = addr;
  if (!body_) {
    body_ = server_.queue().new_body();
    if (port_ == Port::kLocal) {
      // Local submission logs like Postfix's pickup: who (uid) and the sender.
      maillog::pickup(body_->queue_id(), static_cast<unsigned>(local_uid_),
                      mail_ && !mail_->null ? mail_->mailbox.address() : "");
    } else {
      maillog::client(body_->queue_id(), client_, sasl_method_, sasl_user_);
    }
  }
  rcpts_.push_back(std::move(r));
  count(Verb::kRcpt, true);
  reply(Reply(250, "2.1.5", "Ok"), false);
}

// --- the body ---------------------------------------------------------------------

bool Session::begin_body() {
  if (!mail_) {
    reply(Reply(503, "5.5.1", "Error: need RCPT command"));
    return false;
  }
  if (rcpts_.empty()) {
    reply(Reply(554, "5.5.1", "Error: no valid recipients"));
    return false;
  }
  if (!discard_) {
    // The DNS list answers this list needs were gathered at RCPT TO.
    CheckFacts f = facts();
    Effects e;
    Verdict v = s_.data.evaluate(CheckStage::kData, f, s_.codes, &e);
    if (!v.refused() && e.defer_if_permit) {
      v.kind = Verdict::Kind::kDefer;
      v.reply = *e.defer_if_permit;
    }
    const std::string one = rcpts_.size() == 1 ? rcpts_[0]->path.mailbox.address() : "";
    apply_effects(e, "DATA", one);
    if (v.refused()) {
      log_reject("DATA", v.reply, one);
      reply(v.reply);
      return false;
    }
  }
  // The Received header (RFC 5321 4.4), in Postfix's layout.
  const std::string qid = body_->queue_id();
  std::string rcv = "Received: from " + common::log_escape(helo_.value_or(client_name_), 255) + " (" + client_name_ +
                    " [" + client_addr_ + "])\r\n";
  if (port_ == Port::kLocal) {
    rcv = "Received: by " + s_.myhostname + " (" + s_.mail_name + ", from userid " + std::to_string(local_uid_) +
          ")\r\n\tid " + qid;
  } else {
    if (tls_) rcv += "\t(using " + tls_description_ + ")\r\n";
    if (!sasl_user_.empty() && s_.sasl_authenticated_header) {
      rcv += "\t(Authenticated sender: " + common::log_escape(sasl_user_, 128) + ")\r\n";
    }
    rcv += "\tby " + s_.myhostname + " (" + s_.mail_name + ") with " + received_protocol() + " id " + qid;
  }
  const time_t now = ::time(nullptr);
  if (rcpts_.size() == 1) {
    rcv += "\r\n\tfor <" + rcpts_[0]->path.mailbox.address() + ">; " + rfc5322_date(now) + "\r\n";
  } else {
    rcv += ";\r\n\t" + rfc5322_date(now) + "\r\n";
  }
  HeaderFilter::Options o;
  o.prepend = rcv;
  const bool submission = port_ != Port::kMx || !sasl_user_.empty() || s_.always_add_missing_headers;
  o.add_message_id = submission;
  o.add_date = submission;
  char stamp[32];
  struct tm tm;
  ::gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  o.message_id = "<" + std::string(stamp) + "." + qid + "@" + s_.message_id_domain + ">";
  o.now = now;
  o.header_size_limit = s_.header_size_limit;
  o.drop_headers = s_.message_drop_headers;
  filter_ = std::make_unique<HeaderFilter>(o);
  body_bytes_ = 0;
  return true;
}

void Session::body_append(std::string_view bytes) {
  body_bytes_ += bytes.size();
  if (s_.message_size_limit > 0 && body_bytes_ > s_.message_size_limit) too_big_ = true;
  if (too_big_ || write_failed_) return;  // keep reading to the end, store nothing more
  filtered_.clear();
  filter_->feed(bytes, filtered_);
  if (Status st = body_->append(filtered_); !st) {
    write_failed_ = true;
    write_error_ = st.error().message;
    common::log::warning("%s: queue file write error: %s", body_->queue_id().c_str(), write_error_.c_str());
  }
  if (filtered_.capacity() > (1u << 20)) std::string().swap(filtered_);
}

void Session::cmd_data() {
  if (bdat_active_) {
    count(Verb::kData, false);
    reply(Reply(503, "5.5.1", "Error: DATA after BDAT"));
    return;
  }
  if (!begin_body()) {
    count(Verb::kData, false);
    return;
  }
  reply(Reply(354, "", "End data with <CR><LF>.<CR><LF>"), false);
  phase_ = Phase::kData;
  data_.reset();
}

void Session::data_bytes(std::string_view in) {
  std::string out;
  // Hand the DATA reader at most 64 KB at a time so `out` stays small.
  while (!in.empty() && phase_ == Phase::kData) {
    std::string_view piece = in.substr(0, 65536);
    out.clear();
    smtp::DataReader::Feed f = data_.feed(piece, out);
    body_append(out);
    in.remove_prefix(f.consumed);
    if (f.done) {
      phase_ = Phase::kCommands;
      std::string rest(in);
      const bool bare = data_.bare_lf() || data_.bare_cr();
      end_body(bare && bare_newline_forbidden());
      if (phase_ != Phase::kClosed && !rest.empty()) in_.feed(rest);
      return;
    }
  }
}

void Session::cmd_bdat(smtp::Command& c) {
  if (!bdat_active_) {
    if (!mail_ || rcpts_.empty()) {
      // RFC 3030 2: the chunk is read and thrown away, then the error.
      bdat_failed_ = true;
    } else if (!begin_body()) {
      count(Verb::kBdat, false);
      bdat_failed_ = true;
    }
    bdat_active_ = true;
  }
  bdat_remaining_ = c.bdat_size;
  bdat_last_ = c.bdat_last;
  phase_ = Phase::kBdat;
  if (bdat_remaining_ == 0) bdat_bytes("");
}

void Session::bdat_bytes(std::string_view data) {
  std::string_view take = data.substr(0, std::min<uint64_t>(data.size(), bdat_remaining_));
  bdat_remaining_ -= take.size();
  if (!bdat_failed_) {
    bdat_endings_.feed(take);
    body_append(take);
  }
  std::string rest(data.substr(take.size()));
  if (bdat_remaining_ > 0) return;
  // The chunk is complete.
  phase_ = Phase::kCommands;
  if (bdat_failed_) {
    count(Verb::kBdat, false);
    if (!mail_) {
      reply(Reply(503, "5.5.1", "Error: need MAIL command"));
      // No transaction to poison: a MAIL that follows starts a fresh one.
      bdat_active_ = false;
      bdat_failed_ = false;
    } else {
      reply(Reply(554, "5.5.1", "Error: no valid recipients"));
    }
    if (bdat_last_) reset_transaction();
  } else if (!bdat_last_) {
    count(Verb::kBdat, true);
    reply(Reply(250, "2.0.0", "Ok: " + std::to_string(body_bytes_) + " bytes"), false);
  } else {
    bdat_endings_.finish();
    const bool bare = bdat_endings_.bare_lf() || bdat_endings_.bare_cr();
    end_body(bare && bare_newline_forbidden());
  }
  if (phase_ != Phase::kClosed && !rest.empty()) in_.feed(rest);
}

void Session::end_body(bool bare_newline) {
  const Verb verb = bdat_active_ ? Verb::kBdat : Verb::kData;
  const std::string qid = body_ ? body_->queue_id() : "";
  const std::string one_rcpt = rcpts_.size() == 1 ? rcpts_[0]->path.mailbox.address() : "";
  if (bare_newline) {
    count(verb, false);
    Reply r(550, "5.5.2", "Error: bare <LF> received");
    if (!data_.bare_lf() && !bdat_endings_.bare_lf()) r = Reply(550, "5.5.2", "Error: bare <CR> received");
    log_reject("END-OF-MESSAGE", r, one_rcpt);
    fatal_reply(r);
    return;
  }
  if (too_big_) {
    count(verb, false);
    Reply r(552, "5.3.4", "Message size exceeds fixed limit");
    log_reject("END-OF-MESSAGE", r, one_rcpt);
    reset_transaction();
    reply(r);
    return;
  }
  if (write_failed_) {
    count(verb, false);
    Reply r = queue_write_error(write_error_);
    reset_transaction();
    reply(r);
    return;
  }
  filtered_.clear();
  filter_->finish(filtered_);
  if (Status st = body_->append(filtered_); !st) {
    count(verb, false);
    common::log::warning("%s: queue file write error: %s", qid.c_str(), st.error().message.c_str());
    reset_transaction();
    reply(queue_write_error(st.error().message));
    return;
  }
  Envelope env;
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  env.arrival_us = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  env.sender = mail_->null ? "" : mail_->mailbox.address();
  env.body_8bit = mail_params_.body == smtp::Body::k8BitMime || data_.eight_bit();
  env.smtputf8 = mail_params_.smtputf8;
  env.envid = mail_params_.envid;
  env.ret = mail_params_.ret == smtp::Ret::kFull ? "FULL" : mail_params_.ret == smtp::Ret::kHdrs ? "HDRS" : "";
  env.origin = port_ == Port::kLocal ? "sendmail" : "smtpd";
  env.client = client_;
  env.sasl_user = sasl_user_;
  env.hold = hold_;
  if (discard_) {
    // An access table said DISCARD: the client is told the message was queued (as
    // Postfix's cleanup does), and nothing is stored or delivered.
    common::log::logf(common::log::Level::kInfo, "smtpd", "%s: discarded: an access table DISCARD action; from=<%s>",
                      qid.c_str(), common::log_escape(env.sender, 300).c_str());
    count(verb, true);
    reset_transaction();
    reply(Reply(250, "2.0.0", "Ok: queued as " + qid), false);
    return;
  }
  if (hold_) {
    common::log::logf(common::log::Level::kInfo, "smtpd", "%s: placed on hold by an access table HOLD action", qid.c_str());
  }
  for (const auto& r : rcpts_) {
    for (const Destination& d : r->dests) {
      Recipient q;
      q.address = d.value;
      q.orig_address = d.orig;
      q.kind = d.kind == Destination::Kind::kCommand ? Recipient::Kind::kCommand
               : d.kind == Destination::Kind::kFile  ? Recipient::Kind::kFile
               : d.kind == Destination::Kind::kError ? Recipient::Kind::kError
                                                      : Recipient::Kind::kAddress;
      q.owner = d.owner;
      if (d.kind == Destination::Kind::kError) q.last_reply = d.value;
      if (!r->params.orcpt.empty()) q.orcpt = r->params.orcpt_type + ";" + r->params.orcpt;
      q.notify = static_cast<uint8_t>(r->params.notify);
      bool dup = false;
      for (const Recipient& e : env.rcpts) dup = dup || (e.kind == q.kind && common::iequals(e.address, q.address));
      if (!dup) env.rcpts.push_back(std::move(q));
    }
  }
  const std::string message_id = filter_->message_id();
  begin_wait();
  std::weak_ptr<Session> weak = weak_from_this();
  SmtpServer* server = &server_;
  server_.queue().enqueue(std::move(env), std::move(body_),
                          [weak, server, qid, message_id, verb](Status st) {
    // The message is durable (or not) now; the client may be gone, the message
    // is queued either way.
    if (st) {
      if (!message_id.empty()) maillog::message_id(qid, message_id);
      server->queued(qid);
    }
    auto s = weak.lock();
    if (!s || s->phase_ == Phase::kClosed) return;
    if (st) {
      s->count(verb, true);
      s->reset_transaction();
      s->reply(Reply(250, "2.0.0", "Ok: queued as " + qid), false);
    } else {
      common::log::warning("%s: cannot queue: %s", qid.c_str(), st.error().message.c_str());
      s->count(verb, false);
      s->reset_transaction();
      s->reply(queue_write_error(st.error().message));
    }
    s->end_wait();
  });
}

// --- AUTH ----------------------------------------------------------------------------

void Session::cmd_auth(smtp::Command& c) {
  if (!auth_offered()) {
    count(c.verb, false);
    if (!sasl_user_.empty()) {
      reply(Reply(503, "5.5.1", "Error: already authenticated"));
    } else {
      reply(Reply(503, "5.5.1", "Error: authentication not enabled"));
    }
    return;
  }
  if (mail_) {
    count(c.verb, false);
    reply(Reply(503, "5.5.1", "Error: MAIL transaction in progress"));
    return;
  }
  std::vector<std::string> parts = common::split_any(c.argument, " ");
  std::string mech = upper(parts[0]);
  bool ok = false;
  for (const auto& m : offered_mechanisms()) ok = ok || m.name == mech;
  if (!ok || parts.size() > 2) {
    count(c.verb, false);
    reply(Reply(504, "5.5.4", "Unsupported authentication mechanism"));
    return;
  }
  SaslServer::Params p;
  p.mech = mech;
  p.local_ip = conn_->peer().local_address;
  p.local_port = conn_->peer().local_port;
  p.remote_ip = client_addr_;
  p.remote_port = conn_->peer().port;
  p.secured = tls_;
  if (parts.size() == 2) {
    if (parts[1] == "=") {
      p.initial_response = std::string();  // RFC 4954 4: "=" is an empty initial response
    } else {
      std::optional<std::string> ir = common::base64_decode(parts[1]);
      if (!ir) {
        count(c.verb, false);
        reply(Reply(501, "5.5.2", "Cannot decode response"));
        return;
      }
      p.initial_response = std::move(ir);
    }
  }
  sasl_method_ = mech;
  phase_ = Phase::kAuth;
  auth_active_ = true;
  begin_wait();
  std::weak_ptr<Session> weak = weak_from_this();
  auth_id_ = server_.sasl()->start(
      p,
      [weak](const std::string& challenge) {
        auto s = weak.lock();
        if (!s || s->phase_ != Phase::kAuth) return;
        s->conn_->write(Reply(334, "", common::base64_encode(challenge)).format());
        s->end_wait();
      },
      [weak](Result<std::string> user) {
        auto s = weak.lock();
        if (!s) return;
        s->auth_done(std::move(user));
      });
}

void Session::auth_step(std::string_view line) {
  if (line == "*") {
    // RFC 4954 4: the client cancels.
    server_.sasl()->cancel(auth_id_);
    auth_active_ = false;
    phase_ = Phase::kCommands;
    count(Verb::kAuth, false);
    reply(Reply(501, "5.7.0", "Authentication aborted"));
    return;
  }
  std::optional<std::string> resp = common::base64_decode(line);
  if (!resp) {
    server_.sasl()->cancel(auth_id_);
    auth_active_ = false;
    phase_ = Phase::kCommands;
    count(Verb::kAuth, false);
    reply(Reply(501, "5.5.2", "Cannot decode response"));
    return;
  }
  begin_wait();
  server_.sasl()->respond(auth_id_, *resp);
}

void Session::auth_done(Result<std::string> user) {
  auth_active_ = false;
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kCommands;
  if (user) {
    sasl_user_ = *user;
    count(Verb::kAuth, true);
    reply(Reply(235, "2.7.0", "Authentication successful"), false);
  } else {
    const std::string method = sasl_method_;
    sasl_method_.clear();
    count(Verb::kAuth, false);
    if (user.error().kind == common::ErrorKind::kTemp) {
      reply(Reply(454, "4.7.0", "Temporary authentication failure"));
    } else {
      maillog::sasl_failed(client_, method, "authentication failure");
      ++auth_failures_;
      if (auth_failures_ >= s_.auth_failure_limit) {
        conn_->write(Reply(535, "5.7.8", "Error: authentication failed: authentication failure").format());
        fatal_reply(Reply(421, "4.7.0", s_.myhostname + " Error: too many errors"));
        end_wait();
        return;
      }
      reply(Reply(535, "5.7.8", "Error: authentication failed: authentication failure"));
    }
  }
  end_wait();
}

// --- the server ------------------------------------------------------------------------

SmtpServer::SmtpServer(common::ev::Loop& loop, SmtpdSettings settings, QueueStore& queue, RecipientTables& tables,
                       std::shared_ptr<common::tls::Context> tls, SaslServer* sasl, common::dns::Resolver* resolver,
                       OnQueued on_queued)
    : loop_(loop), settings_(std::move(settings)), queue_(queue), tables_(tables), tls_(std::move(tls)), sasl_(sasl),
      resolver_(resolver), on_queued_(std::move(on_queued)), anvil_(settings_.rate_unit_ms) {
  // Each session is a descriptor, and the queue, LMTP, outgoing SMTP (up to
  // default_process_limit), DNS and the log need theirs: keep a tenth of the open
  // file limit, at least 256, for those, so the limit refuses clients before the
  // kernel does (accept's EMFILE is the Listener's last resort).
  conn_limit_ = settings_.conn_limit;
  const uint64_t nofile = common::open_file_limit();
  const uint64_t keep = std::max<uint64_t>(256, nofile / 10);
  const uint64_t room = nofile > keep * 2 ? nofile - keep : nofile / 2;
  if (conn_limit_ > room) {
    common::log::warning("smtpd_client_connection_limit = %llu does not fit the open file limit %llu: using %llu",
                         static_cast<unsigned long long>(conn_limit_), static_cast<unsigned long long>(nofile),
                         static_cast<unsigned long long>(room));
    conn_limit_ = room;
  }
}

SmtpServer::~SmtpServer() {
  listeners_.clear();
  for (auto& [p, s] : sessions_) s->shutdown_now();
}

void SmtpServer::listen(int fd, Port port, const std::string& name) {
  auto l = std::make_unique<common::net::Listener>(loop_, common::UniqueFd(::dup(fd)), name);
  const bool plaintext = port == Port::kMx || port == Port::kSubmission;
  if (plaintext) l->set_refusal(too_many_connections());
  l->start([this, port, plaintext](common::UniqueFd cfd) {
    common::fault::point("mta.smtpd.accept");  // the sandbox tests
    const bool network = port != Port::kLocal;
    if (network && network_.size() >= conn_limit_) {
      refuse(std::move(cfd), plaintext);
      return;
    }
    if (at_limit_ && network_.size() + 1 < conn_limit_) at_limit_ = false;
    common::net::Connection::Options o;
    auto conn = common::net::Connection::adopt(loop_, std::move(cfd), o);
    auto s = std::make_shared<Session>(*this, conn, port);
    sessions_[s.get()] = s;
    if (network) network_.insert(s.get());
    s->start();
  });
  listeners_.push_back(std::move(l));
}

std::string SmtpServer::too_many_connections() const {
  return Reply(421, "4.7.0", settings_.myhostname + " Error: too many connections").format();
}

void SmtpServer::refuse(common::UniqueFd fd, bool plaintext) {
  // Over smtpd_client_connection_limit: no session, no allocation, just the reply
  // (RFC 5321 3.8: 421 may come instead of the greeting) and the close, as Postfix's
  // postscreen answers when its ports are busy. The socket's buffer is empty and the
  // line short, so the non-blocking send goes in whole. On smtps the client speaks
  // TLS first: it gets the close alone.
  if (!at_limit_) {
    at_limit_ = true;
    common::log::warning("smtpd_client_connection_limit = %llu reached: refusing new clients",
                         static_cast<unsigned long long>(conn_limit_));
  }
  if (plaintext) {
    const std::string r = too_many_connections();
    (void)!::send(fd.get(), r.data(), r.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  char addr[INET6_ADDRSTRLEN] = "unknown";
  uint16_t peer_port = 0;
  if (::getpeername(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr);
      peer_port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr);
      peer_port = ntohs(a->sin6_port);
    }
  }
  maillog::reject_connect("smtpd", addr, peer_port, "too many connections");
}

void SmtpServer::stop() { listeners_.clear(); }

void SmtpServer::session_ended(Session* s) {
  auto it = sessions_.find(s);
  if (it == sessions_.end()) return;
  // Drop the reference after the current callback has unwound.
  std::shared_ptr<Session> keep = std::move(it->second);
  sessions_.erase(it);
  network_.erase(s);
  loop_.post([keep] {});
}

}  // namespace tern::mta
