// tern-index - look at and resynchronise a user's mailbox index (like doveadm
// force-resync and doveadm fetch 'uid flags')
//
//   tern-index [-c config] [-o key=value] (-d user | -p maildir) sync|list|status [mailbox]
//   tern-index ... flags UID [+|-]LETTERS [mailbox]
//
// sync    reconciles the index with the Maildir (files added, removed or renamed by
//         other programs) and prints "added=N expunged=N changed=N"
// list    prints one line per message: "uid<TAB>flags<TAB>modseq<TAB>size<TAB>file"
// status  prints "uidvalidity=N uidnext=N highestmodseq=N messages=N bytes=N"
// flags   sets (LETTERS), adds (+LETTERS) or removes (-LETTERS) maildir flags of a
//         message, as an IMAP STORE does through the index: renames the file
//
// PRIVILEGE Run as root, it switches to the owner of the maildir before opening
//           anything in it, and refuses a maildir owned by root.
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/daemon.h"
#include "common/log.h"
#include "common/mailbox_index.h"
#include "common/privilege.h"
#include "common/text.h"
#include "mda/delivery.h"
#include "mda/userdb.h"

namespace {
using namespace tern;
using namespace tern::common;

int usage() {
  std::fprintf(stderr,
               "usage: tern-index [-c config] [-o key=value] (-d user | -p maildir) sync|list|status [mailbox]\n"
               "       tern-index ... flags UID [+|-]LETTERS [mailbox]\n");
  return EX_USAGE;
}
}  // namespace

int main(int argc, char** argv) {
  std::string config_path = default_config_path(), user, path, cmd, mailbox = "INBOX";
  std::vector<std::string> overrides;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "-c" || a == "-o" || a == "-d" || a == "-p") && i + 1 >= argc) return usage();
    if (a == "-c") config_path = argv[++i];
    else if (a == "-o") overrides.push_back(argv[++i]);
    else if (a == "-d") user = argv[++i];
    else if (a == "-p") path = argv[++i];
    else pos.push_back(a);
  }
  if (pos.empty() || user.empty() == path.empty()) return usage();
  cmd = pos[0];
  std::string flag_uid, flag_arg;
  if (cmd == "flags") {
    if (pos.size() < 3 || pos.size() > 4) return usage();
    flag_uid = pos[1];
    flag_arg = pos[2];
    if (pos.size() == 4) mailbox = pos[3];
  } else {
    if (pos.size() > 2) return usage();
    if (pos.size() == 2) mailbox = pos[1];
  }
  log::Options lo;
  lo.service = "tern-index";
  lo.sink = log::Sink::kStderr;
  log::init(lo);

  if (!user.empty()) {
    Config cfg = load_config_or_exit(config_path, overrides);
    ev::Loop loop;
    std::optional<Result<mda::MailUser>> got;
    {
      mda::UserdbLookup db(loop, cfg.str("base_dir") + "/auth-userdb");
      db.lookup(user, [&](Result<mda::MailUser> r) {
        got = std::move(r);
        loop.stop();
      });
      loop.run();
    }
    if (!got || !*got) {
      std::fprintf(stderr, "tern-index: %s: %s\n", user.c_str(), got ? got->error().message.c_str() : "no answer");
      return got && got->error().kind == ErrorKind::kNotFound ? EX_NOUSER : EX_TEMPFAIL;
    }
    mda::MailUser mu = got->value();
    Result<mda::Location> loc = mda::parse_location(mu.mail.empty() ? cfg.str("mail_location") : mu.mail, mu);
    if (!loc) {
      std::fprintf(stderr, "tern-index: %s\n", loc.error().message.c_str());
      return EX_CONFIG;
    }
    if (loc->mbox) {
      std::fprintf(stderr, "tern-index: %s uses mbox, which has no index\n", user.c_str());
      return EX_DATAERR;
    }
    path = loc->root;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) {
    std::fprintf(stderr, "tern-index: %s: %s\n", path.c_str(), std::strerror(errno));
    return EX_NOINPUT;
  }
  if (::geteuid() == 0) {
    if (st.st_uid == 0) {
      std::fprintf(stderr, "tern-index: %s is owned by root; refusing\n", path.c_str());
      return EX_NOPERM;
    }
    UserIds owner;
    owner.uid = st.st_uid;
    owner.name = std::to_string(st.st_uid);
    if (Status s = drop_privileges(owner, st.st_gid); !s) {
      std::fprintf(stderr, "tern-index: %s\n", s.error().message.c_str());
      return EX_OSERR;
    }
  }
  Result<std::shared_ptr<index::MailboxIndex>> idx = index::MailboxIndex::open(path);
  if (!idx) {
    std::fprintf(stderr, "tern-index: %s\n", idx.error().message.c_str());
    return EX_TEMPFAIL;
  }
  if (cmd == "sync") {
    Result<index::SyncResult> r = (*idx)->sync(mailbox);
    if (!r) {
      std::fprintf(stderr, "tern-index: sync %s: %s\n", mailbox.c_str(), r.error().message.c_str());
      return EX_TEMPFAIL;
    }
    std::printf("added=%u expunged=%u changed=%u\n", r->added, r->expunged, r->changed);
    return 0;
  }
  if (cmd == "list") {
    Result<std::vector<index::MessageRecord>> r = (*idx)->messages(mailbox);
    if (!r) {
      std::fprintf(stderr, "tern-index: %s: %s\n", mailbox.c_str(), r.error().message.c_str());
      return r.error().kind == ErrorKind::kNotFound ? EX_NOINPUT : EX_TEMPFAIL;
    }
    for (const index::MessageRecord& m : *r) {
      std::printf("%u\t%s\t%llu\t%llu\t%s/%s\n", m.uid, m.flags.c_str(), static_cast<unsigned long long>(m.modseq),
                  static_cast<unsigned long long>(m.size), m.in_new ? "new" : "cur", m.file.c_str());
    }
    return 0;
  }
  if (cmd == "status") {
    Result<index::MailboxStatus> r = (*idx)->status(mailbox);
    if (!r) {
      std::fprintf(stderr, "tern-index: %s: %s\n", mailbox.c_str(), r.error().message.c_str());
      return r.error().kind == ErrorKind::kNotFound ? EX_NOINPUT : EX_TEMPFAIL;
    }
    std::printf("uidvalidity=%u uidnext=%u highestmodseq=%llu messages=%u bytes=%llu\n", r->uid_validity, r->uid_next,
                static_cast<unsigned long long>(r->highest_modseq), r->messages,
                static_cast<unsigned long long>(r->bytes));
    return 0;
  }
  if (cmd == "flags") {
    std::optional<uint64_t> uid = parse_u64(flag_uid);
    if (!uid || *uid == 0 || *uid > UINT32_MAX) return usage();
    index::FlagMode mode = index::FlagMode::kReplace;
    std::string letters = flag_arg;
    if (!letters.empty() && (letters[0] == '+' || letters[0] == '-')) {
      mode = letters[0] == '+' ? index::FlagMode::kAdd : index::FlagMode::kRemove;
      letters.erase(0, 1);
    }
    Result<index::MessageRecord> r = (*idx)->set_flags(mailbox, static_cast<uint32_t>(*uid), letters, mode);
    if (!r) {
      std::fprintf(stderr, "tern-index: flags %s: %s\n", flag_uid.c_str(), r.error().message.c_str());
      return r.error().kind == ErrorKind::kNotFound ? EX_NOINPUT : EX_TEMPFAIL;
    }
    std::printf("%u\t%s\t%llu\n", r->uid, r->flags.c_str(), static_cast<unsigned long long>(r->modseq));
    return 0;
  }
  return usage();
}
