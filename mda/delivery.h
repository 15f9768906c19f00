// Final delivery of one message to one user: resolves the mail location, checks the
// path and the quota, writes the Maildir file (or mbox entry), and records the UID in
// the user's mailbox index. Shared by the LMTP server (on the threadpool) and
// tern-deliver. Blocking; runs as the mailbox owner and refuses to run as root.
//
// The outcome is an LMTP/SMTP reply plus a line for the log, mapped from the error
// kinds as Dovecot maps enum mail_error:
//   delivered            250 2.0.0 <rcpt> Saved
//   over quota           552 5.2.2 Mailbox is full  (452 4.2.2 with quota_full_tempfail)
//   disk full            452 4.3.1 Insufficient system storage
//   mbox locked          451 4.2.0 Mailbox is locked, try again later
//   anything else        451 4.3.0 Temporary internal failure (details in the log)
// Nothing half-written is ever left behind: a failed Maildir write unlinks its tmp/
// file, a failed mbox append truncates back.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <string>

#include "common/config.h"
#include "common/maildir.h"
#include "common/mbox.h"
#include "common/privilege.h"
#include "common/result.h"
#include "common/smtp_reply.h"
#include "mda/spool.h"

namespace tern::mda {

namespace maildir = common::maildir;
namespace mbox = common::mbox;

// A user as the userdb describes it (tern-authd USER reply, or passwd for
// tern-deliver run by the user).
struct MailUser {
  std::string name;                 // the userdb's canonical name: "user@domain" or "user"
  bool has_uid = false;
  uid_t uid = 0;
  bool has_gid = false;             // the userdb gave a gid (else the uid is used, as Dovecot)
  gid_t gid = 0;
  std::string home;
  std::string mail;                 // mail location override; "" for mail_location
  std::string quota_rule;           // "" for the configured default
};

struct Settings {
  std::string mail_location = "maildir:~/Maildir";
  std::string hostname = "localhost";
  std::string recipient_delimiter = "+";
  bool save_to_detail_mailbox = true;
  bool quota_full_tempfail = false;
  std::string quota_rule;
  maildir::Fsync fsync = maildir::Fsync::kYes;
  mbox::LockOptions locks;
  common::ValidIds ids;             // first/last_valid_uid, first/last_valid_gid
  static Settings from_config(const common::Config& cfg);
};

// The envelope of one delivery.
struct Envelope {
  std::string sender;       // reverse-path address; "" for <>
  bool return_path = true;  // add Return-Path: (false when the sender is not known)
  std::string recipient;    // the address as given in RCPT TO (Delivered-To); "" for none
  std::string folder;       // folder asked for (the +detail, or tern-deliver -m); "" for INBOX
  std::string received;     // a complete "Received: ...\n" header to prepend; may be ""
  time_t arrival = 0;
  // XTERN-DELIVERY-ID pair (mda/delivery_ids.h delivery_key()) to record in the
  // mailbox index in the same transaction as the UID; "" for none. Maildir only.
  std::string delivery_key;
};

struct Outcome {
  common::smtp::Reply reply;
  std::string log;          // "saved mail to INBOX" / the failure detail
  std::string mailbox;      // where it went
  uint32_t uid = 0;         // UID in the mailbox index (Maildir only)
  bool key_recorded = false;  // Envelope::delivery_key is durable with the UID
};

// A parsed mail location: "maildir:~/Maildir", "mbox:~/mail:INBOX=/var/mail/%u".
struct Location {
  bool mbox = false;
  std::string root;         // maildir root, or the mbox folder directory
  std::string inbox;        // mbox INBOX file
};
common::Result<Location> parse_location(const std::string& spec, const MailUser& user);
// Whether a delivery to this location may write outside the user's home: an mbox whose
// INBOX or folder directory is elsewhere (the spool, /var/mail/%u), the only place
// mail_privileged_group is for. Maildir, and mbox entirely under home, never need it.
// Decided from the paths alone, before anything is opened.
bool writes_outside_home(const Location& loc, const MailUser& user);
// Expands %u %n %d %h and a leading ~ (Dovecot's variables).
std::string expand_vars(const std::string& s, const MailUser& user);

// A quota from a Dovecot quota_rule ("*:storage=1G", "*:bytes=100", "*:messages=10");
// 0 means no limit.
struct Quota {
  uint64_t bytes = 0;
  uint64_t messages = 0;
};
common::Result<Quota> parse_quota_rule(const std::string& rule);

Outcome deliver(const Settings& settings, const MailUser& user, const Envelope& env, const MessageSpool& body,
                maildir::DirSyncer* syncer);

// Whether the user's mailbox index holds `delivery_key` (recorded by a delivery
// with Envelope::delivery_key). False when the user's mail is not a Maildir this
// process can open, or has no index yet; never creates anything.
bool index_has_delivery_key(const Settings& settings, const MailUser& user, const std::string& delivery_key);

// "user+detail" split at the first recipient_delimiter character in the local part.
struct LocalPart {
  std::string user;
  std::string detail;
};
LocalPart split_detail(const std::string& local, const std::string& delimiters);

// The Message-ID in the first bytes of a message, for the log ("" when none).
std::string find_message_id(std::string_view head);

}  // namespace tern::mda
