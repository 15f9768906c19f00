#include "mta/pickup.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/fault.h"
#include "common/log.h"
#include "common/maillog.h"
#include "common/smtp_address.h"
#include "common/smtp_data.h"
#include "common/text.h"
#include "mta/cleanup.h"
#include "mta/maildrop.h"

namespace tern::mta {

using common::Result;
using common::Status;
namespace maillog = common::maillog;

namespace {
// How often the directory is looked at besides start and SIGHUP: sendmail falls
// back to the maildrop only when the socket is down, so this is a safety net.
constexpr uint64_t kScanIntervalMs = 5000;
}  // namespace

Result<std::unique_ptr<Pickup>> Pickup::create(common::ev::Loop& loop, const common::Config& cfg, QueueStore& queue,
                                               RecipientTables& tables, OnQueued on_queued) {
  std::unique_ptr<Pickup> p(new Pickup(loop, queue, tables, std::move(on_queued)));
  p->dir_ = cfg.str("maildrop_directory");
  p->myhostname_ = cfg.str("myhostname");
  p->mail_name_ = cfg.str("mail_name");
  p->myorigin_ = common::to_lower(cfg.str("myorigin"));
  p->message_id_domain_ = cfg.str("message_id_domain");
  p->header_size_limit_ = static_cast<size_t>(cfg.bytes("header_size_limit"));
  for (const std::string& h : cfg.list("message_drop_headers")) p->drop_headers_.push_back(common::to_lower(h));
  p->message_size_limit_ = cfg.bytes("message_size_limit");
  Pickup* self = p.get();
  p->timer_.start(kScanIntervalMs, [self] { self->scan(); }, kScanIntervalMs);
  return p;
}

Pickup::~Pickup() { *alive_ = false; }

void Pickup::stop() {
  stopped_ = true;
  timer_.stop();
}

void Pickup::scan() {
  if (stopped_) return;
  DIR* d = ::opendir(dir_.c_str());
  if (!d) {
    if (errno != ENOENT) common::log::warning("pickup: opendir %s: %s", dir_.c_str(), std::strerror(errno));
    return;
  }
  std::vector<std::string> names;
  const int64_t now = ::time(nullptr);
  while (dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n.empty()) continue;
    if (n[0] != '.') {
      names.push_back(n);
      continue;
    }
    // A dot-name is a file sendmail is still writing; one that old was left by a
    // sendmail that died, and nothing else would ever remove it.
    struct stat st;
    if (::fstatat(::dirfd(d), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if (!stale_maildrop_temp(n, st.st_mtime, now)) continue;
    if (S_ISDIR(st.st_mode)) continue;
    common::log::warning("pickup: uid=%u: removing stale temporary file %s/%s", static_cast<unsigned>(st.st_uid),
                         dir_.c_str(), common::log_escape(n, 200).c_str());
    ::unlinkat(::dirfd(d), n.c_str(), 0);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    if (!busy_.count(n)) take(n);
  }
}

void Pickup::take(const std::string& name) {
  const std::string path = dir_ + "/" + name;
  common::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return;
  // A local user's bytes from here on: tern-mta must already be under its filter.
  common::fault::point("mta.pickup.take");
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return;
  // A bad file is logged with its owner and removed, never half-used (Postfix
  // pickup(8): "uid=N: ignoring malformed message file").
  auto drop = [&](const std::string& why) {
    common::log::warning("pickup: uid=%u: ignoring malformed message file %s: %s; removing it",
                         static_cast<unsigned>(st.st_uid), path.c_str(), common::log_escape(why, 300).c_str());
    ::unlink(path.c_str());
  };
  // Only a plain file with one link: a hard link to someone else's file would let
  // a user submit it in that user's name.
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1) return drop("not a regular file with one link");
  std::string head;
  head.resize(std::min<size_t>(static_cast<size_t>(st.st_size), kMaildropMaxRcpts * 300 + 64));
  ssize_t n = ::pread(fd.get(), head.data(), head.size(), 0);
  if (n < 0) return;
  head.resize(static_cast<size_t>(n));
  size_t body_off = 0;
  Result<MaildropEnvelope> env = parse_maildrop(head, body_off);
  if (!env) return drop(env.error().message);
  const uid_t uid = st.st_uid;
  std::string user = std::to_string(uid);
  {
    struct passwd pw, *res = nullptr;
    char buf[4096];
    if (::getpwuid_r(uid, &pw, buf, sizeof buf, &res) == 0 && res) user = res->pw_name;
  }
  // The sender: as given (sendmail -f), or the user at $myorigin. "<>" is the
  // null sender; empty means the submitting user. Either way it goes through the
  // SMTP address parser, as the sender of a MAIL FROM would (RFC 5321 4.1.2).
  std::string sender;
  if (env->sender != "<>") {
    Result<common::smtp::Mailbox> mb = parse_local_address(env->sender.empty() ? user : env->sender, myorigin_);
    if (!mb && env->sender.empty()) mb = parse_local_address(std::to_string(uid), myorigin_);
    if (!mb) return drop("bad sender address: " + mb.error().message);
    sender = canonical_address(*mb);
  }
  Envelope e;
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  e.arrival_us = static_cast<int64_t>(tv.tv_sec) * 1000000 + tv.tv_usec;
  e.sender = sender;
  e.origin = "pickup";
  e.client = "local";
  std::unique_ptr<BodyWriter> body = queue_.new_body();
  const std::string qid = body->queue_id();
  for (const std::string& r : env->rcpts) {
    Result<common::smtp::Mailbox> mb = parse_local_address(r, myorigin_);
    if (!mb) return drop("bad recipient address: " + mb.error().message);
    Result<std::vector<Destination>> x = tables_.expand(canonical_address(*mb));
    if (!x) {
      common::log::warning("pickup: %s: %s; will retry", path.c_str(), x.error().message.c_str());
      return;
    }
    std::vector<Destination> dests = std::move(x).value();
    for (Destination& d : dests) d.orig = canonical_address(*mb);
    for (const Destination& d : dests) {
      Recipient q;
      q.address = d.value;
      q.orig_address = d.orig;
      q.kind = d.kind == Destination::Kind::kCommand ? Recipient::Kind::kCommand
               : d.kind == Destination::Kind::kFile  ? Recipient::Kind::kFile
               : d.kind == Destination::Kind::kError ? Recipient::Kind::kError
                                                      : Recipient::Kind::kAddress;
      q.owner = d.owner;
      if (d.kind == Destination::Kind::kError) q.last_reply = d.value;
      bool dup = false;
      for (const Recipient& x : e.rcpts) dup = dup || (x.kind == q.kind && common::iequals(x.address, q.address));
      if (!dup) e.rcpts.push_back(std::move(q));
    }
  }
  if (e.rcpts.empty()) return drop("no recipients");
  const time_t now = ::time(nullptr);
  HeaderFilter::Options o;
  o.prepend = "Received: by " + myhostname_ + " (" + mail_name_ + ", from userid " + std::to_string(uid) +
              ")\r\n\tid " + qid + "; " + rfc5322_date(now) + "\r\n";
  o.add_message_id = true;
  o.add_date = true;
  o.from_header = sender.empty() ? "MAILER-DAEMON" : sender;
  char stamp[32];
  struct tm tm;
  ::gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  o.message_id = "<" + std::string(stamp) + "." + qid + "@" + message_id_domain_ + ">";
  o.now = now;
  o.header_size_limit = header_size_limit_;
  o.drop_headers = drop_headers_;
  HeaderFilter filter(o);
  // Stream the message through the header filter, every line end made CRLF (a
  // bare CR or LF from the program is a line end, RFC 5321 2.3.8: neither may
  // reach the next hop bare), and stop as soon as it is over message_size_limit.
  // The slack is for the headers the filter adds.
  const uint64_t size_bound = message_size_limit_ > 0 ? message_size_limit_ + 4096 : 0;
  auto too_big = [&] { return size_bound > 0 && body->size() > size_bound; };
  uint64_t off = body_off;
  std::string chunk(65536, '\0'), crlf, out;
  common::smtp::LineEndNormalizer line_ends;
  bool eight_bit = false;
  while (true) {
    ssize_t k = ::pread(fd.get(), chunk.data(), chunk.size(), static_cast<off_t>(off));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return;
    if (k == 0) break;
    off += static_cast<uint64_t>(k);
    std::string_view piece(chunk.data(), static_cast<size_t>(k));
    for (unsigned char c : piece) eight_bit = eight_bit || c >= 0x80;
    crlf.clear();
    line_ends.feed(piece, crlf);
    out.clear();
    filter.feed(crlf, out);
    if (Status s = body->append(out); !s) {
      common::log::warning("pickup: %s: %s; will retry", path.c_str(), s.error().message.c_str());
      return;
    }
    if (too_big()) return drop("message size exceeds message_size_limit");
  }
  crlf.clear();
  line_ends.finish(crlf);
  out.clear();
  filter.feed(crlf, out);
  filter.finish(out);
  if (Status s = body->append(out); !s) return;
  if (too_big()) return drop("message size exceeds message_size_limit");
  e.body_8bit = eight_bit;
  maillog::pickup(qid, static_cast<unsigned>(uid), sender);
  const std::string mid = filter.message_id();
  const unsigned nrcpt = static_cast<unsigned>(e.rcpts.size());
  busy_.insert(name);
  std::weak_ptr<bool> alive = alive_;
  queue_.enqueue(std::move(e), std::move(body), [this, alive, path, name, qid, mid, nrcpt](Status st) {
    if (auto a = alive.lock(); !a || !*a) return;
    busy_.erase(name);
    if (!st) {
      common::log::warning("pickup: %s: cannot queue: %s; will retry", path.c_str(), st.error().message.c_str());
      return;
    }
    if (!mid.empty()) maillog::message_id(qid, mid);
    (void)nrcpt;
    // Durable in the queue: the maildrop copy may go now.
    ::unlink(path.c_str());
    on_queued_(qid);
  });
}

}  // namespace tern::mta
