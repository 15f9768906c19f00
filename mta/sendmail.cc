// sendmail, mailq, newaliases - the sendmail-compatible command line of Tern
// (one binary; argv[0] decides, as with Postfix's sendmail(1))
//
// sendmail reads a message and submits it to tern-mta over the local socket
// $base_dir/sendmail, where tern-mta identifies the caller by SO_PEERCRED. When
// tern-mta cannot take it (not running, or a temporary error), the message is
// written to the maildrop directory, fsynced, and picked up when tern-mta starts:
// mail handed to sendmail is never lost. Exit codes are sysexits(3).
//
// TRUST     Runs as the calling user, with no privilege; it proves nothing about the
//           sender (-f is the caller's word, as with Postfix) and tern-mta logs the
//           real uid.
// STANDARDS sendmail(1) as Postfix implements it; RFC 5321 on the local socket.
#include <fcntl.h>
#include <pwd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>
#include <poll.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "common/daemon.h"
#include "common/log.h"
#include "common/maps.h"
#include "common/smtp_data.h"
#include "common/sockets.h"
#include "common/text.h"
#include "mta/maildrop.h"
#include "mta/queue_store.h"
#include "mta/sendmail_args.h"
#include "mta/showq.h"

using namespace tern;
using tern::mta::MaildropEnvelope;
using tern::mta::SendmailArgs;
using tern::mta::header_recipients;
using tern::mta::has_header;
using tern::mta::maildrop_header;
using tern::mta::remove_bcc;
using tern::mta::parse_local_address;

namespace {

// Bound on a message read from standard input when the message_size_limit is 0:
// the queue must not be filled by one runaway pipe.
constexpr uint64_t kMaxInputWithoutLimit = 1ull << 31;

std::string prog = "sendmail";

[[noreturn]] void die(int code, const std::string& msg) {
  std::fprintf(stderr, "%s: fatal: %s\n", prog.c_str(), msg.c_str());
  std::exit(code);
}

// A blocking SMTP conversation on the local socket.
class LocalSmtp {
 public:
  explicit LocalSmtp(int fd, bool verbose) : fd_(fd), verbose_(verbose) {}
  bool send(const std::string& s) {
    if (verbose_ && s.size() < 1000) std::fprintf(stderr, ">>> %s", s.c_str());
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // The code of the next complete reply (0 on a broken connection); text in `text`.
  int reply(std::string* text = nullptr) {
    std::string all;
    while (true) {
      size_t nl;
      while ((nl = buf_.find("\r\n")) == std::string::npos) {
        char b[4096];
        ssize_t n = ::recv(fd_, b, sizeof b, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        buf_.append(b, static_cast<size_t>(n));
        if (buf_.size() > (1u << 24)) return 0;
      }
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 2);
      if (verbose_) std::fprintf(stderr, "<<< %s\n", line.c_str());
      if (line.size() < 3) return 0;
      all += (line.size() > 4 ? line.substr(4) : "") + "\n";
      if (line.size() == 3 || line[3] == ' ') {
        if (text) *text = all;
        return std::atoi(line.substr(0, 3).c_str());
      }
    }
  }

 private:
  int fd_;
  bool verbose_;
  std::string buf_;
};

std::string myorigin_address(const common::Config& cfg) {
  struct passwd* pw = ::getpwuid(::getuid());
  std::string user = pw ? pw->pw_name : std::to_string(::getuid());
  return user + "@" + common::to_lower(cfg.str("myorigin"));
}

common::Result<common::UniqueFd> connect_local(const common::Config& cfg) {
  return common::net::connect_unix(cfg.str("base_dir") + "/sendmail");
}

// 0: submitted; 1: temporary trouble (use the maildrop); >1: a sysexits code.
int submit(const common::Config& cfg, const std::string& sender, bool null_sender, const std::vector<std::string>& rcpts,
           const std::string& message, bool verbose, std::string& why) {
  common::Result<common::UniqueFd> fd = connect_local(cfg);
  if (!fd) {
    why = fd.error().message;
    return 1;
  }
  LocalSmtp c(fd->get(), verbose);
  std::string text;
  if (c.reply(&text) != 220) {
    why = "no greeting from tern-mta";
    return 1;
  }
  c.send("EHLO localhost\r\n");
  if (c.reply(&text) != 250) {
    why = "EHLO refused: " + text;
    return 1;
  }
  bool eight = false;
  for (unsigned char ch : message) eight = eight || ch >= 0x80;
  std::string mail = "MAIL FROM:<" + (null_sender ? std::string() : sender) + ">";
  if (eight) mail += " BODY=8BITMIME";
  c.send(mail + "\r\n");
  int code = c.reply(&text);
  if (code / 100 != 2) {
    why = "MAIL FROM: " + text;
    return code / 100 == 5 ? EX_DATAERR : 1;
  }
  size_t ok = 0;
  for (const std::string& r : rcpts) {
    c.send("RCPT TO:<" + r + ">\r\n");
    code = c.reply(&text);
    if (code / 100 == 2) {
      ++ok;
    } else if (code / 100 == 5) {
      std::fprintf(stderr, "%s: %s: %s", prog.c_str(), r.c_str(), text.c_str());
      why = "recipient refused";
      return EX_NOUSER;
    } else {
      why = "RCPT TO: " + text;
      return 1;
    }
  }
  c.send("DATA\r\n");
  if (c.reply(&text) != 354) {
    why = "DATA: " + text;
    return 1;
  }
  if (!c.send(common::smtp::dot_stuff(message))) {
    why = "lost connection during DATA";
    return 1;
  }
  code = c.reply(&text);
  if (code / 100 == 2) {
    if (verbose) std::fprintf(stderr, "%s: %s", prog.c_str(), text.c_str());
    c.send("QUIT\r\n");
    (void)ok;
    return 0;
  }
  why = "end of DATA: " + text;
  return code / 100 == 5 ? EX_DATAERR : 1;
}

int to_maildrop(const common::Config& cfg, const std::string& sender, bool null_sender, bool sender_given,
                const std::vector<std::string>& rcpts, const std::string& message) {
  const std::string dir = cfg.str("maildrop_directory");
  unsigned char rnd[12];
  if (::getrandom(rnd, sizeof rnd, 0) != static_cast<ssize_t>(sizeof rnd)) die(EX_OSERR, "getrandom failed");
  // An unguessable name: the directory is not listable, so nobody else can find it.
  std::string name = std::to_string(::time(nullptr)) + "." + std::to_string(::getpid()) + "." +
                     common::hex_encode(std::string_view(reinterpret_cast<char*>(rnd), sizeof rnd));
  std::string tmp = dir + "/." + name;
  common::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) die(EX_TEMPFAIL, "cannot create maildrop file " + tmp + ": " + std::strerror(errno));
  MaildropEnvelope env;
  env.sender = null_sender ? "<>" : sender_given ? sender : "";
  env.rcpts = rcpts;
  std::string all = maildrop_header(env) + message;
  size_t off = 0;
  while (off < all.size()) {
    ssize_t n = ::write(fd.get(), all.data() + off, all.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::unlink(tmp.c_str());
      die(EX_TEMPFAIL, "cannot write maildrop file: " + std::string(std::strerror(errno)));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) < 0) {
    ::unlink(tmp.c_str());
    die(EX_TEMPFAIL, "cannot write maildrop file: " + std::string(std::strerror(errno)));
  }
  fd.reset();
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) < 0) {
    ::unlink(tmp.c_str());
    die(EX_TEMPFAIL, "cannot rename maildrop file: " + std::string(std::strerror(errno)));
  }
  // The directory entry: fsync the directory when we may open it (root, mail_owner).
  common::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d) ::fsync(d.get());
  return EX_OK;
}

int cmd_deliver(const common::Config& cfg, const SendmailArgs& a) {
  // Read the message. Without -i, a line with a single dot ends it (sendmail's
  // traditional behaviour).
  // Stops as soon as the input is over message_size_limit, whether or not it has
  // line ends, rather than copy all of it first; the code and text are Postfix
  // sendmail's for a message cleanup refuses as too big.
  const uint64_t limit = cfg.bytes("message_size_limit");
  const uint64_t bound = limit > 0 ? limit : kMaxInputWithoutLimit;
  std::string message;
  std::string line;
  int ch;
  while ((ch = std::getchar()) != EOF) {
    line += static_cast<char>(ch);
    if (message.size() + line.size() > bound) die(EX_DATAERR, "message file too big");
    if (ch != '\n') continue;
    if (!a.ignore_dots && (line == ".\n" || line == ".\r\n")) {
      line.clear();
      break;
    }
    message += line;
    line.clear();
  }
  message += line;
  // Split headers from body for -t and for a From header.
  size_t hdr_end = message.find("\n\n");
  size_t hdr_end_crlf = message.find("\r\n\r\n");
  std::string_view headers = message;
  if (hdr_end != std::string::npos || hdr_end_crlf != std::string::npos) {
    size_t e = std::min(hdr_end == std::string::npos ? SIZE_MAX : hdr_end + 1,
                        hdr_end_crlf == std::string::npos ? SIZE_MAX : hdr_end_crlf + 2);
    headers = std::string_view(message).substr(0, e);
  }
  std::vector<std::string> rcpts = a.recipients;
  if (a.extract_recipients) {
    for (std::string& r : header_recipients(headers)) rcpts.push_back(std::move(r));
    message = remove_bcc(message);
    headers = std::string_view(message).substr(0, std::min(message.size(), headers.size()));
  }
  if (rcpts.empty()) {
    die(EX_USAGE, a.extract_recipients ? "No recipient addresses found in message header"
                                       : "Recipient addresses must be specified on the command line or via the -t option");
  }
  // Every address goes through the SMTP grammar (RFC 5321 4.1.2) before it is
  // written into MAIL FROM / RCPT TO or a maildrop file: "-f 'a@b> AUTH=<x>'" or a
  // recipient with a CR in it is refused here, not sent on as parameters.
  const std::string origin = common::to_lower(cfg.str("myorigin"));
  for (std::string& r : rcpts) {
    common::Result<common::smtp::Mailbox> mb = parse_local_address(r, origin);
    if (!mb) die(EX_DATAERR, "bad recipient address syntax: " + common::log_escape(r, 300) + ": " + mb.error().message);
    r = mb->address();
  }
  const bool null_sender = a.sender && (a.sender->empty() || *a.sender == "<>");
  const std::string given = a.sender && !null_sender ? *a.sender : myorigin_address(cfg);
  common::Result<common::smtp::Mailbox> sender_mb = parse_local_address(given, origin);
  if (!sender_mb) {
    die(EX_DATAERR, "bad sender address syntax: " + common::log_escape(given, 300) + ": " + sender_mb.error().message);
  }
  const std::string sender = sender_mb->address();
  // A From header when the program gave none (Postfix cleanup adds it for local mail).
  if (!has_header(headers, "From")) {
    std::string from = a.full_name.empty() ? sender : "\"" + a.full_name + "\" <" + sender + ">";
    message = "From: " + from + "\n" + message;
  }
  const std::string crlf = common::smtp::normalize_line_ends(message);
  std::string why;
  int rc = submit(cfg, sender, null_sender, rcpts, crlf, a.verbose, why);
  if (rc == 0) return EX_OK;
  if (rc > 1) die(rc, why);
  // tern-mta could not take it now: the maildrop keeps it until it can.
  if (a.verbose) std::fprintf(stderr, "%s: tern-mta not available (%s); using the maildrop\n", prog.c_str(), why.c_str());
  return to_maildrop(cfg, sender, null_sender, a.sender.has_value() && !null_sender, rcpts, message);
}

int cmd_smtp(const common::Config& cfg) {
  common::Result<common::UniqueFd> fd = connect_local(cfg);
  if (!fd) die(EX_TEMPFAIL, "cannot connect to tern-mta: " + fd.error().message);
  // Relay standard input and output to the local socket.
  pollfd p[2] = {{0, POLLIN, 0}, {fd->get(), POLLIN, 0}};
  char buf[65536];
  bool in_open = true;
  while (true) {
    p[0].fd = in_open ? 0 : -1;
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return EX_IOERR;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::read(fd->get(), buf, sizeof buf);
      if (n <= 0) return EX_OK;
      if (::write(1, buf, static_cast<size_t>(n)) != n) return EX_IOERR;
    }
    if (in_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        in_open = false;
        ::shutdown(fd->get(), SHUT_WR);
        continue;
      }
      if (::send(fd->get(), buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) return EX_IOERR;
    }
  }
}

int cmd_mailq(const common::Config& cfg) {
  common::Result<common::UniqueFd> fd = connect_local(cfg);
  if (fd) {
    LocalSmtp c(fd->get(), false);
    std::string text;
    if (c.reply() == 220) {
      c.send("XSHOWQ\r\n");
      if (c.reply(&text) == 250) {
        std::fputs(text.c_str(), stdout);
        c.send("QUIT\r\n");
        return EX_OK;
      }
    }
  }
  // tern-mta is down: read the queue ourselves (root or mail_owner can).
  auto q = mta::QueueStore::open_read_only(cfg.str("queue_directory"));
  if (!q) die(EX_UNAVAILABLE, "cannot read the queue (tern-mta is not running): " + q.error().message);
  std::vector<mta::Envelope> all;
  common::Status st = (*q)->for_each([&](const mta::Envelope& e) { all.push_back(e); });
  if (!st) die(EX_UNAVAILABLE, "cannot read the queue: " + st.error().message);
  std::fputs(mta::format_mailq(all, {}).c_str(), stdout);
  return EX_OK;
}

int cmd_newaliases(const common::Config& cfg) {
  int rc = EX_OK;
  for (const std::string& spec : cfg.list("alias_database")) {
    common::Status st = common::compile_map(spec, common::MapSyntax::kAliases);
    if (!st) {
      std::fprintf(stderr, "%s: %s\n", prog.c_str(), st.error().message.c_str());
      rc = EX_CANTCREAT;
    }
  }
  return rc;
}

int cmd_flush(const common::Config& cfg) {
  common::Result<common::UniqueFd> fd = connect_local(cfg);
  if (!fd) die(EX_UNAVAILABLE, "cannot flush the queue: tern-mta is not running");
  LocalSmtp c(fd->get(), false);
  if (c.reply() != 220) die(EX_UNAVAILABLE, "no greeting from tern-mta");
  c.send("XFLUSH\r\n");
  if (c.reply() != 250) die(EX_UNAVAILABLE, "tern-mta refused the flush");
  c.send("QUIT\r\n");
  return EX_OK;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  common::Result<SendmailArgs> a = [&] {
    if (!args.empty()) {
      std::string p = args[0];
      size_t s = p.rfind('/');
      prog = s == std::string::npos ? p : p.substr(s + 1);
    }
    return mta::parse_sendmail_args(args);
  }();
  common::log::Options lo;
  lo.service = prog;
  lo.sink = common::log::Sink::kStderr;
  common::log::init(lo);
  if (!a) die(EX_USAGE, a.error().message);
  std::string config = a->config.empty() ? common::default_config_path() : a->config;
  common::Config cfg = common::load_config_or_exit(config, a->overrides);
  switch (a->mode) {
    case SendmailArgs::Mode::kDeliver: return cmd_deliver(cfg, *a);
    case SendmailArgs::Mode::kSmtp: return cmd_smtp(cfg);
    case SendmailArgs::Mode::kPrintQueue: return cmd_mailq(cfg);
    case SendmailArgs::Mode::kNewAliases: return cmd_newaliases(cfg);
    case SendmailArgs::Mode::kFlush: return cmd_flush(cfg);
  }
  return EX_SOFTWARE;
}
