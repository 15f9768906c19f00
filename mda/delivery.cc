#include "mda/delivery.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cerrno>
#include <cstring>
#include <list>
#include <mutex>

#include "common/fault.h"
#include "common/mailbox_index.h"
#include "common/privilege.h"
#include "common/queue_id.h"
#include "common/text.h"
#include "mda/delivery_ids.h"

namespace tern::mda {

using common::Error;
using common::ErrorKind;
using common::Result;
using common::Status;
using common::smtp::Reply;

namespace {

Outcome temp_failure(std::string log) {
  return Outcome{Reply(451, "4.3.0", "Temporary internal failure"), std::move(log), "", 0};
}

Outcome failure_for(const Error& e, const Settings& s, const std::string& where) {
  switch (e.kind) {
    case ErrorKind::kNoQuota:
      return Outcome{s.quota_full_tempfail ? Reply(452, "4.2.2", "Mailbox is full") : Reply(552, "5.2.2", "Mailbox is full"),
                     "save failed to " + where + ": Quota exceeded (" + e.message + ")", where, 0};
    case ErrorKind::kInUse:
      return Outcome{Reply(451, "4.2.0", "Mailbox is locked, try again later"), "save failed to " + where + ": " + e.message,
                     where, 0};
    default:
      if (e.message.find("No space left") != std::string::npos || e.message.find("Disk quota") != std::string::npos) {
        return Outcome{Reply(452, "4.3.1", "Insufficient system storage"), "save failed to " + where + ": " + e.message,
                       where, 0};
      }
      return temp_failure("save failed to " + where + ": " + e.message);
  }
}

std::string header_block(const Envelope& env) {
  std::string h;
  if (env.return_path) h += "Return-Path: <" + env.sender + ">\n";
  if (!env.recipient.empty()) h += "Delivered-To: " + env.recipient + "\n";
  h += env.received;
  return h;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Creates the directories of `path` below `home` (mode 0700), as the user.
Status make_parents(const std::string& path) {
  for (size_t i = 1; i < path.size(); ++i) {
    if (path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (::mkdir(p.c_str(), 0700) < 0 && errno != EEXIST) return common::errno_error("mkdir " + p, errno);
  }
  return {};
}

// Recently used mailbox indexes stay open: opening an LMDB environment (open, mmap,
// reader-table check) for every delivery would cost more than the delivery's own
// writes. Bounded, so a stream of mail to many users keeps at most kOpenIndexes open.
constexpr size_t kOpenIndexes = 64;

Result<std::shared_ptr<common::index::MailboxIndex>> open_index(const std::string& root, maildir::Fsync fsync) {
  static std::mutex mu;
  static std::list<std::shared_ptr<common::index::MailboxIndex>> recent;
  std::lock_guard<std::mutex> lk(mu);
  for (auto it = recent.begin(); it != recent.end(); ++it) {
    if ((*it)->root() == root) {
      recent.splice(recent.begin(), recent, it);
      return recent.front();
    }
  }
  Result<std::shared_ptr<common::index::MailboxIndex>> idx =
      common::index::MailboxIndex::open(root, common::index::MailboxIndex::Options{fsync});
  if (!idx) return idx;
  recent.push_front(*idx);
  if (recent.size() > kOpenIndexes) recent.pop_back();
  return idx;
}

// The Maildir base name of a keyed delivery (maildir::keyed_base): the queue id and a
// hash of the recipient, so the same pair always gives the same name. Only for pairs
// whose id is one of tern-mta's queue ids (the time in the name comes from it, so
// names still sort by arrival); nullopt for the rest, which get unique names.
std::optional<std::string> keyed_name(const std::string& delivery_key) {
  const size_t nul = delivery_key.find('\0');
  if (nul == std::string::npos) return std::nullopt;
  const std::string id = delivery_key.substr(0, nul);
  std::optional<uint64_t> seconds = common::queue_id_seconds(id);
  if (!seconds) return std::nullopt;
  // FNV-1a, 64 bits: it tells apart the recipients of one message that share a
  // mailbox (two aliases of one user); the queue id already tells messages apart.
  uint64_t h = 14695981039346656037ull;
  for (size_t i = nul + 1; i < delivery_key.size(); ++i) {
    h ^= static_cast<uint8_t>(delivery_key[i]);
    h *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return maildir::keyed_base(*seconds, id + "R" + hex);
}

Outcome saved(const Envelope& env, const std::string& mailbox, uint32_t uid, bool key_recorded, std::string log) {
  Outcome o;
  o.mailbox = mailbox;
  o.uid = uid;
  o.key_recorded = key_recorded;
  o.log = std::move(log);
  o.reply = Reply(250, "2.0.0", (env.recipient.empty() ? std::string("") : "<" + env.recipient + "> ") + "Saved");
  return o;
}

Outcome deliver_maildir(const Settings& s, const MailUser& user, const Location& loc, const Envelope& env,
                        const MessageSpool& body, maildir::DirSyncer* syncer) {
  // A virtual user's home is made on first delivery, as Dovecot does.
  if (!user.home.empty() && !is_dir(user.home)) {
    if (Status p = make_parents(user.home + "/"); !p) return failure_for(p.error(), s, "INBOX");
  }
  if (!user.home.empty()) {
    // A Maildir path that leaves the home through a symlink is refused (the home
    // owner could otherwise point us at another user's mail).
    if (Status c = maildir::check_within(user.home, loc.root); !c) return temp_failure(c.error().message);
  }
  if (Status p = make_parents(loc.root); !p) return failure_for(p.error(), s, "INBOX");
  if (Status c = maildir::create_root(loc.root); !c) return failure_for(c.error(), s, "INBOX");
  if (!user.home.empty()) {
    if (Status c = maildir::check_within(user.home, loc.root); !c) return temp_failure(c.error().message);
  }
  std::string mailbox = "INBOX";
  std::string dir = loc.root;
  if (!env.folder.empty()) {
    Result<std::string> fp = maildir::folder_path(loc.root, env.folder);
    if (fp && is_dir(*fp + "/cur")) {
      mailbox = env.folder;
      dir = *fp;
    }
  }
  Result<std::shared_ptr<common::index::MailboxIndex>> idx = open_index(loc.root, s.fsync);
  if (!idx) return failure_for(idx.error(), s, mailbox);

  const std::string headers = header_block(env);
  const uint64_t size = headers.size() + body.size();
  Result<Quota> quota = parse_quota_rule(user.quota_rule.empty() ? s.quota_rule : user.quota_rule);
  if (!quota) return temp_failure("quota_rule: " + quota.error().message);
  if (quota->bytes || quota->messages) {
    Result<common::index::MailboxIndex::Usage> u = (*idx)->usage();
    if (!u) return failure_for(u.error(), s, mailbox);
    if ((quota->bytes && u->bytes + size > quota->bytes) || (quota->messages && u->messages + 1 > quota->messages)) {
      return failure_for(common::make_error(ErrorKind::kNoQuota, "mailbox for user is full: " + std::to_string(u->bytes) +
                                                                     " of " + std::to_string(quota->bytes) + " bytes, " +
                                                                     std::to_string(u->messages) + " messages"),
                         s, mailbox);
    }
  }

  // A delivery under an XTERN-DELIVERY-ID pair gets a name made from the pair, so it
  // happens at most once whatever dies when: a copy an interrupted attempt renamed
  // into new/ (or that a reader has since indexed and moved to cur/) is found again,
  // and two attempts at once (tern-mta restarted while we were still writing) end in
  // one file, because the rename replaces nothing.
  const std::optional<std::string> keyed = keyed_name(env.delivery_key);
  const int64_t now = static_cast<int64_t>(::time(nullptr));
  if (keyed) {
    Result<std::optional<uint32_t>> have = (*idx)->uid_of_base(mailbox, *keyed);
    if (have && *have) {
      // Indexed already (a sync found the file): record the pair with it.
      Result<uint32_t> uid = (*idx)->add_delivered(mailbox, *keyed, true, 0, 0, now, env.delivery_key, now);
      if (!uid) return failure_for(uid.error(), s, mailbox);
      return saved(env, mailbox, *uid, true,
                   "saved mail to " + mailbox + " (uid=" + std::to_string(*uid) +
                       ", delivered by an interrupted attempt; not again)");
    }
  }

  Result<maildir::Delivery> d = maildir::Delivery::begin(dir);
  if (!d) return failure_for(d.error(), s, mailbox);
  Status w = d->write(headers);
  if (w) w = body.read([&](std::string_view chunk) { return d->write(chunk); });
  if (!w) return failure_for(w.error(), s, mailbox);  // the Delivery's destructor unlinks tmp/
  std::string name;
  bool existed = false;
  if (keyed) {
    common::fault::point("mda.before_rename");
    Result<maildir::Delivery::Committed> c = d->commit_once(*keyed, s.fsync, syncer);
    if (!c) return failure_for(c.error(), s, mailbox);
    name = c->name;
    existed = c->existed;
  } else {
    Result<std::string> n = d->commit(s.fsync, syncer);
    if (!n) return failure_for(n.error(), s, mailbox);
    name = *n;
  }
  common::fault::point("mda.after_rename");
  Result<uint32_t> uid = existed ? (*idx)->adopt_delivered(mailbox, name, env.delivery_key, now)
                                 : (*idx)->add_delivered(mailbox, name, true, d->size(), d->vsize(),
                                                         env.arrival ? env.arrival : now, env.delivery_key, now);
  common::fault::point("mda.after_index");
  if (uid) {
    // Old pairs go now and then rather than on every delivery.
    static std::atomic<uint64_t> keyed_count{0};
    if (!env.delivery_key.empty() && ++keyed_count % 1000 == 0) {
      (void)(*idx)->prune_delivery_keys(now - kDeliveryIdKeepSeconds);
    }
    return saved(env, mailbox, *uid, !env.delivery_key.empty(),
                 "saved mail to " + mailbox + " (uid=" + std::to_string(*uid) +
                     (existed ? ", written by an interrupted attempt; not again)" : ")"));
  }
  // The message is safely on disk; the next sync gives it its UID. The pair is not
  // in the index: the session records it in the delivery-id store before the 250
  // (and a keyed name would find this copy again in any case).
  return saved(env, mailbox, 0, false,
               "saved mail to " + mailbox + " (index update failed, the next sync adds it: " + uid.error().message + ")");
}

// What to set when a missing mbox cannot be created in a spool directory the user
// may not write (Debian's /var/mail, root:mail 2775): Dovecot's answer is
// mail_privileged_group. "" when that is not the cause.
std::string privileged_group_hint(const std::string& path, const Settings& s) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return "";
  const std::string dir = path.substr(0, path.rfind('/'));
  if (dir.empty() || ::stat(dir.c_str(), &st) < 0 || ::access(dir.c_str(), W_OK) == 0) return "";
  std::string name = std::to_string(st.st_gid);
  std::vector<char> buf(16384);
  struct group gr, *g = nullptr;
  if (::getgrgid_r(st.st_gid, &gr, buf.data(), buf.size(), &g) == 0 && g) name = g->gr_name;
  if (s.locks.privileged_gid != static_cast<gid_t>(-1)) {
    return " (the spool directory " + dir + " is group " + name + ", and mail_privileged_group is another group)";
  }
  return " (the spool directory " + dir + " is group " + name +
         " and not writable by the user: set mail_privileged_group = " + name + ")";
}

Outcome deliver_mbox(const Settings& s, const MailUser& user, const Location& loc, const Envelope& env,
                     const MessageSpool& body) {
  std::string mailbox = "INBOX";
  std::string path = loc.inbox;
  if (!user.home.empty() && !is_dir(user.home)) {
    if (Status p = make_parents(user.home + "/"); !p) return failure_for(p.error(), s, "INBOX");
  }
  if (!user.home.empty() && loc.root.rfind(user.home + "/", 0) == 0 && !is_dir(loc.root)) {
    if (Status c = maildir::check_within(user.home, loc.root); !c) return temp_failure(c.error().message);
    if (Status p = make_parents(loc.root + "/"); !p) return failure_for(p.error(), s, "INBOX");
  }
  if (!env.folder.empty() && !loc.root.empty()) {
    Result<std::string> fp = maildir::folder_path(loc.root, env.folder);  // validates the name
    if (fp) {
      std::string candidate = loc.root + "/" + env.folder;
      if (is_file(candidate)) {
        mailbox = env.folder;
        path = candidate;
      }
    }
  }
  if (!user.home.empty() && path.rfind(user.home + "/", 0) == 0) {
    if (!is_dir(user.home)) {
      if (Status p = make_parents(user.home + "/"); !p) return failure_for(p.error(), s, "INBOX");
    }
    if (Status p = make_parents(path); !p) return failure_for(p.error(), s, "INBOX");
    if (Status c = maildir::check_within(user.home, path); !c) return temp_failure(c.error().message);
  }
  mbox::LockOptions locks = s.locks;
  if (path != loc.inbox && locks.privileged_gid != static_cast<gid_t>(-1)) {
    // A folder in the user's home: mail_privileged_group is for the spool INBOX
    // alone, so it goes for good before anything is written here (review, finding 10).
    if (Status g = common::drop_saved_gid(); !g) return temp_failure(g.error().message);
    locks.privileged_gid = static_cast<gid_t>(-1);
  }
  const std::string headers = header_block(env);
  Result<Quota> quota = parse_quota_rule(user.quota_rule.empty() ? s.quota_rule : user.quota_rule);
  if (!quota) return temp_failure("quota_rule: " + quota.error().message);
  if (quota->bytes) {
    struct stat st;
    uint64_t used = ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    if (used + headers.size() + body.size() > quota->bytes) {
      return failure_for(common::make_error(ErrorKind::kNoQuota, "mailbox for user is full"), s, mailbox);
    }
  }
  Result<mbox::Appender> a = mbox::Appender::begin(path, env.sender, env.arrival ? env.arrival : ::time(nullptr), locks);
  if (!a) {
    Error e = a.error();
    if (e.kind == ErrorKind::kDenied) e.message += privileged_group_hint(path, s);
    return failure_for(e, s, mailbox);
  }
  common::fault::point("mda.mbox.append");
  Status w = a->write(headers);
  if (w) w = body.read([&](std::string_view chunk) { return a->write(chunk); });
  if (w) w = a->commit(s.fsync);
  if (!w) return failure_for(w.error(), s, mailbox);  // rolled back to the old size
  Outcome o;
  o.mailbox = mailbox;
  o.log = "saved mail to " + mailbox + " (mbox " + path + ")";
  o.reply = Reply(250, "2.0.0", (env.recipient.empty() ? std::string("") : "<" + env.recipient + "> ") + "Saved");
  return o;
}

}  // namespace

Settings Settings::from_config(const common::Config& cfg) {
  Settings s;
  s.mail_location = cfg.str("mail_location");
  s.hostname = cfg.str("myhostname");
  s.recipient_delimiter = cfg.str("recipient_delimiter");
  s.save_to_detail_mailbox = cfg.boolean("lmtp_save_to_detail_mailbox");
  s.quota_full_tempfail = cfg.boolean("quota_full_tempfail");
  s.quota_rule = cfg.str("quota_rule");
  s.fsync = cfg.str("mail_fsync") == "never" ? maildir::Fsync::kNo : maildir::Fsync::kYes;
  s.locks.dotlock = false;
  s.locks.fcntl = false;
  for (const std::string& l : cfg.list("mbox_write_locks")) {
    if (l == "dotlock") s.locks.dotlock = true;
    if (l == "fcntl") s.locks.fcntl = true;
  }
  s.locks.timeout_seconds = static_cast<int>(cfg.seconds("mbox_lock_timeout"));
  s.locks.stale_seconds = static_cast<int>(cfg.seconds("mbox_dotlock_change_timeout"));
  s.ids = common::ValidIds::from_config(cfg);
  return s;
}

std::string expand_vars(const std::string& s, const MailUser& user) {
  const size_t at = user.name.find('@');
  const std::string n = user.name.substr(0, at);
  const std::string d = at == std::string::npos ? "" : user.name.substr(at + 1);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 0 && s[0] == '~' && (s.size() == 1 || s[1] == '/')) {
      out += user.home;
    } else if (s[i] == '%' && i + 1 < s.size()) {
      char c = s[++i];
      if (c == 'u') out += user.name;
      else if (c == 'n') out += n;
      else if (c == 'd') out += d;
      else if (c == 'h') out += user.home;
      else if (c == '%') out += '%';
      else {
        out += '%';
        out += c;
      }
    } else {
      out += s[i];
    }
  }
  return out;
}

Result<Location> parse_location(const std::string& spec, const MailUser& user) {
  size_t colon = spec.find(':');
  if (colon == std::string::npos) return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "' has no type (maildir: or mbox:)");
  std::string type = common::to_lower(std::string_view(spec).substr(0, colon));
  std::vector<std::string> parts = common::split(std::string_view(spec).substr(colon + 1), ':');
  Location loc;
  if (type != "maildir" && type != "mbox") {
    return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "': unknown type '" + type + "'");
  }
  loc.mbox = type == "mbox";
  if (parts.empty() || parts[0].empty()) return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "' has no path");
  if ((parts[0][0] == '~' || spec.find("%h") != std::string::npos) && user.home.empty()) {
    return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "' needs a home directory and user " + user.name + " has none");
  }
  loc.root = expand_vars(parts[0], user);
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (common::istarts_with(p, "INBOX=")) {
      loc.inbox = expand_vars(p.substr(6), user);
    } else if (common::istarts_with(p, "LAYOUT=") || common::istarts_with(p, "INDEX=") ||
               common::istarts_with(p, "CONTROL=")) {
      // Dovecot storage options that do not change where mail is delivered.
    } else {
      return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "': unknown option '" + p + "'");
    }
  }
  if (loc.mbox && loc.inbox.empty()) loc.inbox = loc.root + "/inbox";
  if (loc.root[0] != '/' || (loc.mbox && loc.inbox[0] != '/')) {
    return common::make_error(ErrorKind::kConfig, "mail location '" + spec + "' is not an absolute path for " + user.name);
  }
  return loc;
}

bool writes_outside_home(const Location& loc, const MailUser& user) {
  if (!loc.mbox) return false;
  if (user.home.empty()) return true;
  auto inside = [&](const std::string& p) { return p.rfind(user.home + "/", 0) == 0; };
  return !inside(loc.inbox) || !inside(loc.root + "/");
}

Result<Quota> parse_quota_rule(const std::string& rule_in) {
  Quota q;
  std::string_view rule = common::trim(rule_in);
  if (rule.empty()) return q;
  size_t colon = rule.find(':');
  if (colon == std::string_view::npos || rule.substr(0, colon) != "*") {
    return common::make_error(ErrorKind::kConfig, "quota_rule '" + std::string(rule) + "': expected *:storage=SIZE or *:messages=N");
  }
  for (const std::string& item : common::split(rule.substr(colon + 1), ':')) {
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (item == "ignore" || item == "noenforcing") return Quota{};
      return common::make_error(ErrorKind::kConfig, "quota_rule: bad item '" + item + "'");
    }
    std::string key = item.substr(0, eq), val = item.substr(eq + 1);
    if (val.empty()) return common::make_error(ErrorKind::kConfig, "quota_rule: empty value for " + key);
    uint64_t mult = 1;
    char last = val.back();
    if (!(last >= '0' && last <= '9')) {
      switch (last) {
        case 'b': case 'B': mult = 1; break;
        case 'k': case 'K': mult = 1024; break;
        case 'm': case 'M': mult = 1024ull * 1024; break;
        case 'g': case 'G': mult = 1024ull * 1024 * 1024; break;
        case 't': case 'T': mult = 1024ull * 1024 * 1024 * 1024; break;
        default: return common::make_error(ErrorKind::kConfig, "quota_rule: bad unit in '" + item + "'");
      }
      val.pop_back();
    } else if (key == "storage") {
      mult = 1024;  // Dovecot: a bare storage= number is in kilobytes
    }
    std::optional<uint64_t> n = common::parse_u64(val);
    if (!n) return common::make_error(ErrorKind::kConfig, "quota_rule: bad number in '" + item + "'");
    if (key == "storage" || key == "bytes") {
      q.bytes = *n * mult;
    } else if (key == "messages") {
      q.messages = *n * (mult == 1024 ? 1000 : mult);
    } else {
      return common::make_error(ErrorKind::kConfig, "quota_rule: unknown limit '" + key + "'");
    }
  }
  return q;
}

LocalPart split_detail(const std::string& local, const std::string& delimiters) {
  if (delimiters.empty()) return {local, ""};
  size_t p = local.find_first_of(delimiters);
  if (p == std::string::npos || p == 0) return {local, ""};
  return {local.substr(0, p), local.substr(p + 1)};
}

std::string find_message_id(std::string_view head) {
  size_t pos = 0;
  while (pos < head.size()) {
    size_t nl = head.find('\n', pos);
    std::string_view line = head.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (line.empty() || line == "\r") break;  // end of the header
    if (common::istarts_with(line, "Message-ID:")) {
      std::string_view v = common::trim(line.substr(11));
      // Folded onto the next line?
      if (v.empty() && nl != std::string_view::npos) {
        size_t nl2 = head.find('\n', nl + 1);
        v = common::trim(head.substr(nl + 1, nl2 == std::string_view::npos ? std::string_view::npos : nl2 - nl - 1));
      }
      return std::string(v.substr(0, 200));
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  return "";
}

bool index_has_delivery_key(const Settings& s, const MailUser& user, const std::string& delivery_key) {
  if (user.has_uid && user.uid != ::geteuid()) return false;  // the helper's users: not ours to open
  Result<Location> loc = parse_location(user.mail.empty() ? s.mail_location : user.mail, user);
  if (!loc || loc->mbox || !is_file(loc->root + "/tern-index")) return false;
  Result<std::shared_ptr<common::index::MailboxIndex>> idx = open_index(loc->root, s.fsync);
  if (!idx) return false;
  Result<bool> has = (*idx)->has_delivery_key(delivery_key);
  return has && *has;
}

Outcome deliver(const Settings& s, const MailUser& user, const Envelope& env, const MessageSpool& body,
                maildir::DirSyncer* syncer) {
  // Who we write as: the mailbox owner, never root (DESIGN.md 2).
  const uid_t me = ::geteuid();
  if (me == 0) return temp_failure("refusing to deliver as root");
  if (user.has_uid && user.uid != me) {
    return temp_failure("user " + user.name + " has uid " + std::to_string(user.uid) + ", but this process runs as uid " +
                        std::to_string(me) + " and writes only as that uid");
  }
  Result<Location> loc = parse_location(user.mail.empty() ? s.mail_location : user.mail, user);
  if (!loc) return temp_failure(loc.error().message);
  return loc->mbox ? deliver_mbox(s, user, *loc, env, body) : deliver_maildir(s, user, *loc, env, body, syncer);
}

}  // namespace tern::mda
