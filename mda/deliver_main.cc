// tern-deliver - deliver one message from standard input (like dovecot-lda)
//
//   tern-deliver [-c config] [-o key=value] [-d user] [-f sender] [-a address]
//                [-m folder] [-p]
//
// For Postfix's mailbox_command (`mailbox_command = /usr/libexec/tern/tern-deliver
// -f "$SENDER" -a "$RECIPIENT"`), procmail/maildrop-style setups and scripts.
// -d user    the recipient, looked up in tern-authd's userdb (auth-userdb socket);
//            without -d the message goes to the invoking user (passwd entry, home)
// -f sender  the envelope sender, for Return-Path (default: none given, MAILER-DAEMON)
// -a address the original recipient address, for Delivered-To
// -m folder  deliver into this folder when it exists, else INBOX
// -p         fsync is not needed (mail_fsync = never), for bulk imports
//
// Exit codes are sysexits(3), which Postfix's local(8) and procmail understand:
//   0 delivered, 64 usage, 65 unreadable message, 67 unknown user, 75 temporary
//   failure (Postfix defers and retries), 77 permanent refusal (over quota without
//   quota_full_tempfail; Postfix bounces), 78 configuration error.
//
// TRUST     The message on stdin is untrusted content; it is never parsed beyond the
//           line ends and a leading "From " line. The arguments come from the local
//           MTA or the user.
// PRIVILEGE Runs as the invoking user and writes only as that user. Run as root (as
//           Postfix runs mailbox_command for root's mail, or a local admin), it
//           switches to the recipient's uid/gid before touching any file, and
//           refuses uid 0, gid 0, and ids outside first/last_valid_uid and _gid.
#include <sysexits.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/daemon.h"
#include "common/log.h"
#include "common/privilege.h"
#include "common/text.h"
#include "mda/delivery.h"
#include "mda/userdb.h"

namespace {

using namespace tern;
using namespace tern::common;

int usage(const char* why) {
  std::fprintf(stderr,
               "tern-deliver: %s\nusage: tern-deliver [-c config] [-o key=value] [-d user] [-f sender] [-a address] "
               "[-m folder] [-p]\n",
               why);
  return EX_USAGE;
}

// Looks the user up in tern-authd's userdb, running a private event loop.
Result<mda::MailUser> lookup(const Config& cfg, const std::string& user) {
  ev::Loop loop;
  std::optional<Result<mda::MailUser>> out;
  {
    mda::UserdbLookup db(loop, cfg.str("base_dir") + "/auth-userdb");
    db.lookup(user, [&](Result<mda::MailUser> r) {
      out = std::move(r);
      loop.stop();
    });
    loop.run();
  }
  if (!out) return make_error(ErrorKind::kTemp, "no answer from tern-authd");
  return std::move(*out);
}

int exit_code_for(const smtp::Reply& r) {
  if (r.positive()) return 0;
  if (r.transient()) return EX_TEMPFAIL;
  return EX_NOPERM;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = default_config_path();
  std::vector<std::string> overrides;
  std::string user, sender, address, folder;
  bool have_sender = false, no_fsync = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string& out) -> bool {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    if (a == "-c") {
      if (!value(config_path)) return usage("-c needs a file");
    } else if (a == "-o") {
      std::string o;
      if (!value(o)) return usage("-o needs key=value");
      overrides.push_back(o);
    } else if (a == "-d") {
      if (!value(user)) return usage("-d needs a user");
    } else if (a == "-f") {
      if (!value(sender)) return usage("-f needs a sender");
      have_sender = true;
    } else if (a == "-a") {
      if (!value(address)) return usage("-a needs an address");
    } else if (a == "-m") {
      if (!value(folder)) return usage("-m needs a folder");
    } else if (a == "-p") {
      no_fsync = true;
    } else if (a == "-e" || a == "-k") {
      // dovecot-lda compatibility: we always report failures by exit code.
    } else {
      return usage(("unknown argument " + log_escape(a, 64)).c_str());
    }
  }
  if (sender == "<>") sender.clear();
  if (sender.size() >= 2 && sender.front() == '<' && sender.back() == '>') sender = sender.substr(1, sender.size() - 2);

  log::Options early;
  early.service = "deliver";
  early.sink = log::Sink::kStderr;
  log::init(early);
  Config cfg = load_config_or_exit(config_path, overrides);
  init_logging(cfg, "deliver", false);
  mda::Settings settings = mda::Settings::from_config(cfg);
  if (no_fsync) settings.fsync = maildir::Fsync::kNo;

  mda::MailUser mu;
  if (!user.empty()) {
    Result<mda::MailUser> r = lookup(cfg, user);
    if (!r) {
      if (r.error().kind == ErrorKind::kNotFound) {
        std::fprintf(stderr, "tern-deliver: unknown user %s\n", log_escape(user, 200).c_str());
        return EX_NOUSER;
      }
      std::fprintf(stderr, "tern-deliver: user lookup for %s failed: %s\n", log_escape(user, 200).c_str(),
                   r.error().message.c_str());
      return EX_TEMPFAIL;
    }
    mu = std::move(r).value();
  } else {
    UserIds me = current_user();
    mu.name = me.name;
    mu.has_uid = true;
    mu.uid = me.uid;
    mu.has_gid = true;
    mu.gid = me.gid;
    mu.home = me.home;
  }

  // As root: become the recipient before any file is touched.
  if (::geteuid() == 0) {
    if (!mu.has_uid) {
      std::fprintf(stderr, "tern-deliver: the userdb entry of %s has no uid; refusing to deliver as root\n", mu.name.c_str());
      return EX_TEMPFAIL;
    }
    const gid_t gid = mu.has_gid ? mu.gid : static_cast<gid_t>(mu.uid);
    if (std::string why = settings.ids.refuse(mu.uid, gid); !why.empty()) {
      std::fprintf(stderr, "tern-deliver: user %s: %s; not delivering\n", mu.name.c_str(), why.c_str());
      return EX_TEMPFAIL;
    }
    UserIds target;
    target.name = mu.name;
    target.uid = mu.uid;
    target.gid = gid;
    if (Status s = drop_privileges(target, target.gid); !s) {
      std::fprintf(stderr, "tern-deliver: %s\n", s.error().message.c_str());
      return EX_TEMPFAIL;
    }
  }

  // Read the message. A leading mbox "From " line (Postfix adds none for
  // mailbox_command, but procmail and formail do) is not part of the message.
  mda::MessageSpool body(cfg.str("mail_temp_dir"), 0);
  std::string buf(1 << 16, '\0');
  bool first = true;
  while (true) {
    ssize_t n = ::read(0, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "tern-deliver: read standard input: %s\n", std::strerror(errno));
      return EX_DATAERR;
    }
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    if (first && chunk.substr(0, 5) == "From ") {
      size_t nl = chunk.find('\n');
      if (nl != std::string_view::npos) {
        if (!have_sender) {
          std::string_view rest = chunk.substr(5, nl - 5);
          sender = std::string(rest.substr(0, rest.find(' ')));
          if (sender == "MAILER-DAEMON") sender.clear();
          have_sender = true;
        }
        chunk.remove_prefix(nl + 1);
      }
    }
    first = false;
    body.append(chunk);
  }
  if (Status s = body.finish(); !s) {
    std::fprintf(stderr, "tern-deliver: %s\n", s.error().message.c_str());
    return EX_TEMPFAIL;
  }

  mda::Envelope env;
  env.sender = sender;
  env.return_path = have_sender;
  env.recipient = address;
  env.folder = folder;
  env.arrival = ::time(nullptr);
  mda::Outcome o = mda::deliver(settings, mu, env, body, nullptr);
  log::info("lda(%s): msgid=%s: %s", log_escape(mu.name, 200).c_str(),
            [&] {
              std::string id = mda::find_message_id(body.head(16384));
              return id.empty() ? std::string("unspecified") : log_escape(id, 200);
            }().c_str(),
            o.log.c_str());
  int rc = exit_code_for(o.reply);
  if (rc != 0) std::fprintf(stderr, "tern-deliver: %s: %s\n", o.reply.summary().c_str(), o.log.c_str());
  return rc;
}
