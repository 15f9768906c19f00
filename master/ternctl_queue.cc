// ternctl queue: the mail queue (Postfix's mailq, postqueue and postsuper in one).
//
//   ternctl queue show [queue_id...]          every recipient's state (read-only view)
//   ternctl queue list                        the mailq summary
//   ternctl queue flush [queue_id...]         retry now, backoff or not (postqueue -f / -i)
//   ternctl queue hold queue_id...|ALL        keep from delivery (postsuper -h)
//   ternctl queue release queue_id...|ALL     back to delivery, tried now (postsuper -H)
//   ternctl queue delete queue_id...|ALL      remove without a notice (postsuper -d)
//
// show and list read tern-mta's queue store read-only (root or mail_owner). The
// others ask the running tern-mta over its local socket, because the store has one
// writer; tern-mta checks the caller's uid there (SO_PEERCRED): changing the queue is
// for root and the mail owner, flushing for anyone.
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>

#include "common/sockets.h"
#include "master/ternctl.h"
#include "mta/queue_store.h"
#include "mta/showq.h"

namespace tern::ternctl {

namespace {

constexpr const char* kUsage =
    "usage: ternctl queue show [queue_id...] | list | flush [queue_id...] |\n"
    "       ternctl queue hold|release|delete queue_id...|ALL\n";

// A line-at-a-time SMTP-style exchange on tern-mta's local socket.
class LocalSocket {
 public:
  explicit LocalSocket(int fd) : fd_(fd) {}
  bool send(const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // The code of the next reply (0 when the connection broke); its text in `text`.
  int reply(std::string& text) {
    text.clear();
    for (;;) {
      size_t nl;
      while ((nl = buf_.find("\r\n")) == std::string::npos) {
        char b[4096];
        ssize_t n = ::recv(fd_, b, sizeof b, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 0;
        buf_.append(b, static_cast<size_t>(n));
        if (buf_.size() > (1u << 20)) return 0;  // no reply of ours is that long
      }
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 2);
      if (line.size() < 3) return 0;
      text += line.size() > 4 ? line.substr(4) : "";
      if (line.size() == 3 || line[3] == ' ') return std::atoi(line.substr(0, 3).c_str());
      text += "\n";
    }
  }

 private:
  int fd_;
  std::string buf_;
};

int show(const Invocation& inv) {
  common::Config cfg = inv.load_config();
  auto q = mta::QueueStore::open_read_only(cfg.str("queue_directory"));
  if (!q) {
    std::fprintf(stderr, "ternctl queue: %s\n", q.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  std::set<std::string> want(inv.args.begin() + 1, inv.args.end());
  std::vector<mta::Envelope> all;
  common::Status st = (*q)->for_each([&](const mta::Envelope& e) {
    if (want.empty() || want.count(e.queue_id)) all.push_back(e);
  });
  if (!st) {
    std::fprintf(stderr, "ternctl queue: %s\n", st.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  std::string out = inv.args[0] == "list" ? mta::format_mailq(all, {}) : mta::format_queue_details(all);
  std::fputs(out.c_str(), stdout);
  return EX_OK;
}

int change(const Invocation& inv, const std::string& verb) {
  std::vector<std::string> ids(inv.args.begin() + 1, inv.args.end());
  if (ids.empty()) {
    if (verb != "FLUSH") {
      std::fputs(kUsage, stderr);
      return EX_USAGE;
    }
    ids.push_back("ALL");
  }
  common::Config cfg = inv.load_config();
  common::Result<common::UniqueFd> fd = common::net::connect_unix(cfg.str("base_dir") + "/sendmail");
  if (!fd) {
    std::fprintf(stderr, "ternctl queue: cannot reach tern-mta (is it running?): %s\n", fd.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  LocalSocket c(fd->get());
  std::string text;
  if (c.reply(text) != 220) {
    std::fprintf(stderr, "ternctl queue: no greeting from tern-mta\n");
    return EX_UNAVAILABLE;
  }
  int rc = EX_OK;
  for (const std::string& id : ids) {
    // One argument per command; ids are letters and digits, nothing else may pass.
    if (id.empty() || id.find_first_of(" \r\n") != std::string::npos) {
      std::fprintf(stderr, "ternctl queue: bad queue id\n");
      rc = EX_DATAERR;
      continue;
    }
    if (!c.send("X" + verb + " " + id + "\r\n")) {
      std::fprintf(stderr, "ternctl queue: tern-mta closed the connection\n");
      return EX_UNAVAILABLE;
    }
    int code = c.reply(text);
    if (code == 250) {
      std::printf("%s: %s\n", id.c_str(), text.c_str());
    } else {
      std::fprintf(stderr, "ternctl queue: %s: %d %s\n", id.c_str(), code, text.c_str());
      rc = code == 550 || code == 501 ? EX_DATAERR : code == 0 ? EX_UNAVAILABLE : EX_TEMPFAIL;
      if (text.find("only root") != std::string::npos) rc = EX_NOPERM;
    }
  }
  c.send("QUIT\r\n");
  return rc;
}

}  // namespace

int cmd_queue(const Invocation& inv) {
  const std::string sub = inv.args.empty() ? "" : inv.args[0];
  if (sub == "show" || sub == "list") return show(inv);
  if (sub == "flush") return change(inv, "FLUSH");
  if (sub == "hold") return change(inv, "HOLD");
  if (sub == "release") return change(inv, "RELEASE");
  if (sub == "delete") return change(inv, "DELETE");
  std::fputs(kUsage, stderr);
  return EX_USAGE;
}

}  // namespace tern::ternctl
