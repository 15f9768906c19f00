// The delivery engine: mail locations, quota rules, detail folders, Maildir and mbox
// delivery, the symlink refusal, and the spool.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/mailbox_index.h"
#include "common/mbox.h"
#include "mda/delivery.h"
#include "common/queue_id.h"
#include "mda/delivery_helper.h"
#include "mda/delivery_ids.h"
#include "mda/spool.h"

using namespace tern;
using namespace tern::mda;

namespace {

// deliver() refuses to write as root, as tern-mda must; tests run as root in CI, so
// this binary becomes nobody (65534) before any test runs.
const bool kDropped = [] {
  if (::geteuid() != 0) return false;
  gid_t g = 65534;
  if (::setgroups(1, &g) != 0 || ::setresgid(g, g, g) != 0 || ::setresuid(65534, 65534, 65534) != 0) std::abort();
  return true;
}();

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/tern-delivery-test-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') out.push_back(e->d_name);
  }
  ::closedir(d);
  return out;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

MessageSpool spool_of(const std::string& crlf) {
  MessageSpool s("/tmp", 0);
  s.append(crlf);
  REQUIRE(s.finish().ok());
  return s;
}

MailUser user_at(const std::string& home) {
  MailUser u;
  u.name = "demo@example.test";
  u.has_uid = true;
  u.uid = ::geteuid();
  u.home = home;
  return u;
}

Settings settings() {
  Settings s;
  s.fsync = maildir::Fsync::kNo;
  s.locks.timeout_seconds = 1;
  return s;
}

}  // namespace

TEST_CASE("mail locations and variables", "[delivery]") {
  MailUser u;
  u.name = "ann@example.test";
  u.home = "/home/ann";
  CHECK(expand_vars("~/Maildir", u) == "/home/ann/Maildir");
  CHECK(expand_vars("/var/mail/%d/%n/%u/%h/%%/%x", u) == "/var/mail/example.test/ann/ann@example.test//home/ann/%/%x");
  auto m = parse_location("maildir:~/Maildir", u);
  REQUIRE(m.ok());
  CHECK(!m->mbox);
  CHECK(m->root == "/home/ann/Maildir");
  auto b = parse_location("mbox:~/mail:INBOX=/var/mail/%n", u);
  REQUIRE(b.ok());
  CHECK(b->mbox);
  CHECK(b->root == "/home/ann/mail");
  CHECK(b->inbox == "/var/mail/ann");
  CHECK(parse_location("maildir:~/Maildir:LAYOUT=fs", u).ok());
  CHECK(!parse_location("Maildir", u).ok());
  CHECK(!parse_location("sdbox:~/x", u).ok());
  CHECK(!parse_location("maildir:relative", u).ok());
  CHECK(!parse_location("maildir:~/M:BOGUS=1", u).ok());
  MailUser nohome;
  nohome.name = "x";
  CHECK(!parse_location("maildir:~/Maildir", nohome).ok());
}

TEST_CASE("only a location outside the home needs mail_privileged_group", "[delivery]") {
  MailUser u;
  u.name = "ann";
  u.home = "/home/ann";
  struct Case {
    const char* location;
    bool outside;
  } cases[] = {
      {"maildir:~/Maildir", false},
      {"maildir:/var/vmail/%n", false},               // Maildir never creates in a spool
      {"mbox:~/mail:INBOX=/var/mail/%n", true},       // Debian's classic setup
      {"mbox:~/mail:INBOX=~/mbox", false},            // all the user's own
      {"mbox:~/mail", false},                         // INBOX is ~/mail/inbox
      {"mbox:/var/mail/folders/%n:INBOX=~/mbox", true},
      {"mbox:/home/annex/mail:INBOX=/home/annex/in", true},  // a prefix is not a parent
  };
  for (const Case& c : cases) {
    INFO(c.location);
    auto loc = parse_location(c.location, u);
    REQUIRE(loc.ok());
    CHECK(writes_outside_home(*loc, u) == c.outside);
  }
  MailUser nohome;
  nohome.name = "x";
  auto spool = parse_location("mbox:/var/mail/folders/%n:INBOX=/var/mail/%n", nohome);
  REQUIRE(spool.ok());
  CHECK(writes_outside_home(*spool, nohome));
}

TEST_CASE("quota rules", "[delivery]") {
  CHECK(parse_quota_rule("")->bytes == 0);
  CHECK(parse_quota_rule("*:storage=1G")->bytes == 1ull << 30);
  CHECK(parse_quota_rule("*:storage=100")->bytes == 100 * 1024);  // Dovecot: kilobytes
  CHECK(parse_quota_rule("*:bytes=100")->bytes == 100);
  CHECK(parse_quota_rule("*:messages=10")->messages == 10);
  auto both = parse_quota_rule("*:storage=10M:messages=5");
  CHECK(both->bytes == 10u << 20);
  CHECK(both->messages == 5);
  CHECK(parse_quota_rule("*:ignore")->bytes == 0);
  for (const char* bad : {"storage=1G", "*:storage=", "*:storage=1Q", "*:storage=x", "*:foo=1", "Trash:storage=1"}) {
    INFO(bad);
    CHECK(!parse_quota_rule(bad).ok());
  }
}

TEST_CASE("detail split and Message-ID", "[delivery]") {
  CHECK(split_detail("user+Sent", "+").user == "user");
  CHECK(split_detail("user+Sent", "+").detail == "Sent");
  CHECK(split_detail("user-a+b", "+-").detail == "a+b");
  CHECK(split_detail("+x", "+").user == "+x");
  CHECK(split_detail("plain", "+").detail.empty());
  CHECK(split_detail("a+b", "").user == "a+b");
  CHECK(find_message_id("Subject: x\nmessage-id: <a@b>\n\nMessage-ID: <no>\n") == "<a@b>");
  CHECK(find_message_id("Message-ID:\n <folded@x>\n\n") == "<folded@x>");
  CHECK(find_message_id("Subject: x\n\nMessage-ID: <body@x>\n").empty());
}

TEST_CASE("spool: CRLF to LF, bare CR kept, spills to a file, size limit", "[delivery]") {
  MessageSpool a("/tmp", 0, 16);
  a.append("line one\r");
  a.append("\nline\rtwo\r\n");
  a.append(std::string(100, 'x') + "\r\n");
  REQUIRE(a.finish().ok());
  std::string back;
  REQUIRE(a.read([&](std::string_view c) {
             back.append(c);
             return common::Status();
           }).ok());
  CHECK(back == "line one\nline\rtwo\n" + std::string(100, 'x') + "\n");
  CHECK(a.size() == back.size());
  CHECK(a.received_size() == back.size() + 3);
  CHECK(a.head(8) == "line one");

  MessageSpool b("/tmp", 10);
  b.append("0123456789abc");
  REQUIRE(b.finish().ok());
  CHECK(b.too_big());

  MessageSpool c("/nonexistent-dir", 0, 4);
  c.append("more than four bytes");
  CHECK(!c.finish().ok());
}

TEST_CASE("deliver to Maildir: headers, index, folders from the detail", "[delivery]") {
  TempDir t;
  std::string home = t.path + "/home";  // created on first delivery
  MailUser u = user_at(home);
  Settings s = settings();
  Envelope env;
  env.sender = "a@example.org";
  env.recipient = "demo@example.test";
  env.received = "Received: test\n";
  MessageSpool body = spool_of("Subject: hi\r\n\r\nbody\r\n");
  Outcome o = deliver(s, u, env, body, nullptr);
  CHECK(o.reply.code == 250);
  CHECK(o.reply.enhanced == "2.0.0");
  CHECK(o.uid == 1);
  CHECK(o.mailbox == "INBOX");
  auto names = files_in(home + "/Maildir/new");
  REQUIRE(names.size() == 1);
  CHECK(slurp(home + "/Maildir/new/" + names[0]) ==
        "Return-Path: <a@example.org>\nDelivered-To: demo@example.test\nReceived: test\nSubject: hi\n\nbody\n");
  CHECK(files_in(home + "/Maildir/tmp").empty());
  struct stat st;
  CHECK(::stat((home + "/Maildir/.Sent/cur").c_str(), &st) == 0);

  env.folder = "Sent";
  Outcome sent = deliver(s, u, env, body, nullptr);
  CHECK(sent.mailbox == "Sent");
  CHECK(files_in(home + "/Maildir/.Sent/new").size() == 1);
  env.folder = "NoSuchFolder";
  CHECK(deliver(s, u, env, body, nullptr).mailbox == "INBOX");
  env.folder = "../../etc";
  CHECK(deliver(s, u, env, body, nullptr).mailbox == "INBOX");
  auto idx = common::index::MailboxIndex::open(home + "/Maildir");
  CHECK((*idx)->status("INBOX")->messages == 3);
  CHECK((*idx)->status("Sent")->messages == 1);
}

// Issue 11, exactly once: a keyed delivery (an XTERN-DELIVERY-ID pair) that died
// after its rename into new/ and before the index commit, or after the commit and
// before its 250, is not written again by the retry; nor by a second attempt while a
// sync (a reader) has meanwhile indexed the copy and moved it to cur/.
TEST_CASE("keyed deliveries: a retry after a crash at any step writes no second copy", "[delivery]") {
  TempDir t;
  std::string home = t.path + "/home";
  MailUser u = user_at(home);
  Settings s = settings();
  Envelope env;
  env.sender = "a@example.org";
  env.recipient = "demo@example.test";
  env.received = "Received: test\n";
  const std::string qid = common::make_queue_id(1765000000, 1234, 7);
  REQUIRE(common::queue_id_seconds(qid) == 1765000000u);
  env.delivery_key = delivery_key(qid, "demo@example.test");
  MessageSpool body = spool_of("Subject: once\r\n\r\nbody\r\n");

  Outcome first = deliver(s, u, env, body, nullptr);
  REQUIRE(first.reply.code == 250);
  CHECK(first.key_recorded);
  auto names = files_in(home + "/Maildir/new");
  REQUIRE(names.size() == 1);
  CHECK(names[0].rfind("1765000000.K" + qid + "R", 0) == 0);  // time-ordered like every name

  SECTION("the retry after the index commit (tern-mta died before recording the 250)") {
    Outcome again = deliver(s, u, env, body, nullptr);
    CHECK(again.reply.code == 250);
    CHECK(again.uid == first.uid);
    CHECK(files_in(home + "/Maildir/new").size() == 1);
  }
  SECTION("the retry after the rename, before the index commit: the file is adopted") {
    // The state a crash between rename and commit leaves, in a second home: the
    // file in new/ under its keyed name, nothing in the index.
    std::string home2 = t.path + "/home2";
    MailUser u2 = user_at(home2);
    REQUIRE(::mkdir(home2.c_str(), 0700) == 0);
    REQUIRE(maildir::create_root(home2 + "/Maildir").ok());
    const std::string left = slurp(home + "/Maildir/new/" + names[0]);
    { std::ofstream(home2 + "/Maildir/new/" + names[0], std::ios::binary) << left; }
    Envelope other = env;
    other.received = "Received: a longer header this time\n";  // the retry's own Received: line
    Outcome again = deliver(s, u2, other, body, nullptr);
    CHECK(again.reply.code == 250);
    CHECK(again.key_recorded);
    CHECK(again.uid == 1);
    auto now = files_in(home2 + "/Maildir/new");
    REQUIRE(now.size() == 1);
    CHECK(now[0] == names[0]);
    CHECK(files_in(home2 + "/Maildir/tmp").empty());
    CHECK(slurp(home2 + "/Maildir/new/" + now[0]) == left);  // the first attempt's copy stands
    auto idx = common::index::MailboxIndex::open(home2 + "/Maildir");
    REQUIRE(idx);
    CHECK(*(*idx)->has_delivery_key(env.delivery_key));
    auto rec = (*idx)->message("INBOX", 1);
    REQUIRE(rec);
    CHECK(rec->size == left.size());
    CHECK(rec->vsize == left.size() + static_cast<size_t>(std::count(left.begin(), left.end(), '\n')));  // a CR per LF
    // And once more: now the index has the pair.
    CHECK(deliver(s, u2, other, body, nullptr).uid == 1);
    CHECK(files_in(home2 + "/Maildir/new").size() == 1);
  }
  SECTION("a copy indexed and moved to cur/ by a reader is found by its base name") {
    auto idx = common::index::MailboxIndex::open(home + "/Maildir");
    REQUIRE(idx);
    REQUIRE(::rename((home + "/Maildir/new/" + names[0]).c_str(),
                     (home + "/Maildir/cur/" + names[0] + ":2,S").c_str()) == 0);
    REQUIRE((*idx)->sync("INBOX").ok());
    REQUIRE((*idx)->prune_delivery_keys(INT64_MAX).ok());  // as if only the file were known
    REQUIRE_FALSE(*(*idx)->has_delivery_key(env.delivery_key));
    Outcome again = deliver(s, u, env, body, nullptr);
    CHECK(again.reply.code == 250);
    CHECK(again.uid == first.uid);
    CHECK(files_in(home + "/Maildir/new").empty());
    CHECK(files_in(home + "/Maildir/cur").size() == 1);
    CHECK(*(*idx)->has_delivery_key(env.delivery_key));
  }
  SECTION("another recipient of the same message in the same mailbox is another copy") {
    Envelope second = env;
    second.recipient = "alias@example.test";
    second.delivery_key = delivery_key(qid, "alias@example.test");
    CHECK(deliver(s, u, second, body, nullptr).reply.code == 250);
    CHECK(files_in(home + "/Maildir/new").size() == 2);
  }
  SECTION("a delivery id that is no queue id gets a unique name each time (no key to find it by)") {
    Envelope plain = env;
    plain.delivery_key = delivery_key("not-a-queue-id", "demo@example.test");
    CHECK(deliver(s, u, plain, body, nullptr).reply.code == 250);
    CHECK(files_in(home + "/Maildir/new").size() == 2);
  }
}

TEST_CASE("quota: 552 5.2.2 or 452 4.2.2, nothing written", "[delivery]") {
  TempDir t;
  MailUser u = user_at(t.path + "/home");
  u.quota_rule = "*:bytes=200";
  Settings s = settings();
  Envelope env;
  env.recipient = "demo@example.test";
  MessageSpool small = spool_of("Subject: s\r\n\r\nx\r\n");
  CHECK(deliver(s, u, env, small, nullptr).reply.code == 250);
  MessageSpool big = spool_of("Subject: b\r\n\r\n" + std::string(300, 'x') + "\r\n");
  Outcome o = deliver(s, u, env, big, nullptr);
  CHECK(o.reply.code == 552);
  CHECK(o.reply.enhanced == "5.2.2");
  s.quota_full_tempfail = true;
  o = deliver(s, u, env, big, nullptr);
  CHECK(o.reply.code == 452);
  CHECK(o.reply.enhanced == "4.2.2");
  CHECK(files_in(t.path + "/home/Maildir/new").size() == 1);
  CHECK(files_in(t.path + "/home/Maildir/tmp").empty());
  // The configured default applies when the userdb gives none.
  u.quota_rule.clear();
  s.quota_rule = "*:messages=1";
  CHECK(deliver(s, u, env, small, nullptr).reply.code == 452);
}

TEST_CASE("a Maildir symlinked out of the home is refused", "[delivery]") {
  TempDir t;
  std::string home = t.path + "/home", elsewhere = t.path + "/elsewhere";
  ::mkdir(home.c_str(), 0700);
  ::mkdir(elsewhere.c_str(), 0700);
  REQUIRE(::symlink(elsewhere.c_str(), (home + "/Maildir").c_str()) == 0);
  MessageSpool body = spool_of("x\r\n");
  Outcome o = deliver(settings(), user_at(home), Envelope{}, body, nullptr);
  CHECK(o.reply.code == 451);
  CHECK(o.log.find("outside the home directory") != std::string::npos);
  CHECK(files_in(elsewhere).empty());
}

TEST_CASE("a user with another uid is not written as us", "[delivery]") {
  TempDir t;
  MailUser u = user_at(t.path + "/home");
  u.uid = ::geteuid() + 1;
  MessageSpool body = spool_of("x\r\n");
  Outcome o = deliver(settings(), u, Envelope{}, body, nullptr);
  CHECK(o.reply.code == 451);
  struct stat st;
  CHECK(::stat((t.path + "/home").c_str(), &st) != 0);
}

TEST_CASE("deliver to mbox, folders, lock timeout", "[delivery]") {
  TempDir t;
  MailUser u = user_at(t.path + "/home");
  u.mail = "mbox:~/mail:INBOX=" + t.path + "/spool/%n";
  ::mkdir((t.path + "/spool").c_str(), 0700);
  Settings s = settings();
  Envelope env;
  env.sender = "a@example.org";
  env.recipient = "demo@example.test";
  MessageSpool body = spool_of("Subject: m\r\n\r\nFrom here\r\n");
  Outcome o = deliver(s, u, env, body, nullptr);
  CHECK(o.reply.code == 250);
  auto msgs = common::mbox::read_all(t.path + "/spool/demo");
  REQUIRE(msgs.ok());
  REQUIRE(msgs->size() == 1);
  CHECK((*msgs)[0].content == "Return-Path: <a@example.org>\nDelivered-To: demo@example.test\nSubject: m\n\nFrom here\n");
  CHECK(slurp(t.path + "/spool/demo").find("\n>From here\n") != std::string::npos);
  // An existing folder file takes the detail; a missing one falls back to INBOX.
  struct stat mst;
  REQUIRE(::stat((t.path + "/home/mail").c_str(), &mst) == 0);  // made with the home
  std::ofstream(t.path + "/home/mail/Lists").close();
  env.folder = "Lists";
  CHECK(deliver(s, u, env, body, nullptr).mailbox == "Lists");
  env.folder = "Nope";
  CHECK(deliver(s, u, env, body, nullptr).mailbox == "INBOX");
  // Someone holds the lock: a temporary failure, nothing appended.
  std::string before = slurp(t.path + "/spool/demo");
  auto holder = common::mbox::Appender::begin(t.path + "/spool/demo", "x", 0, s.locks);
  REQUIRE(holder.ok());
  env.folder.clear();
  o = deliver(s, u, env, body, nullptr);
  CHECK(o.reply.code == 451);
  CHECK(o.reply.enhanced == "4.2.0");
  holder->rollback();
  CHECK(slurp(t.path + "/spool/demo") == before);
}

TEST_CASE("delivery helper packet escaping round-trips", "[delivery]") {
  const std::string samples[] = {"", "plain", "tab\there", "line\nbreak", "back\\slash", std::string("nul\0x", 5),
                                 "\\t literal", "Received: from x\n\tby y\n"};
  for (const std::string& s : samples) {
    std::string e = helper_escape(s);
    CHECK(e.find('\t') == std::string::npos);
    CHECK(e.find('\n') == std::string::npos);
    CHECK(e.find('\0') == std::string::npos);
    CHECK(helper_unescape(e) == s);
  }
}

TEST_CASE("delivery helper reply: only what the encoder writes becomes a reply", "[delivery]") {
  Outcome ok;
  ok.reply = common::smtp::Reply(250, "2.0.0", "<sys@example.test> Saved");
  ok.log = "saved mail to INBOX\nsecond line";
  ok.mailbox = "Sent";
  ok.uid = 4294967295u;
  Outcome back = decode_helper_outcome(encode_helper_outcome(ok));
  CHECK(back.reply.format() == "250 2.0.0 <sys@example.test> Saved\r\n");
  CHECK(back.log == ok.log);
  CHECK(back.mailbox == "Sent");
  CHECK(back.uid == 4294967295u);
  // Found by tests/fuzz/delivery_helper_packet: the enhanced code went into the LMTP
  // reply unchecked, so a child could end the line and forge another recipient's
  // reply (corpus/delivery_helper_packet/enhanced_crlf).
  const std::string bad[] = {
      "DONE\tcode=452\tenhanced=4.2.2\r\\n250 2.0.0 forged\ttext=x\tlog=\tmailbox=\tuid=0",
      "DONE\tcode=250\tenhanced=5.1.1\ttext=x\tlog=\tmailbox=\tuid=0",   // class is not the code's
      "DONE\tcode=250\tenhanced=2.0.0\ttext=x\tlog=\tmailbox=\tuid=4294967296",
      "DONE\tcode=250\tenhanced=2.0.0\ttext=x\tlog=\tmailbox=\tuid=",
      // A repeated key (corpus/delivery_helper_packet/done_dup): the two ends must
      // not read different replies from one packet.
      "DONE\tcode=250\tenhanced=2.0.0\ttext=x\tcode=550\tuid=0",
      "DONE\t=x\tcode=250\tuid=0",
      std::string("DONE\tcode=250\ttext=raw\nLF\tuid=0"),
      std::string("DONE\tcode=250\ttext=raw\0NUL\tuid=0", 32),
  };
  for (const std::string& p : bad) {
    INFO(p);
    Outcome o = decode_helper_outcome(p);
    CHECK(o.reply.code == 451);
    CHECK(o.reply.format() == "451 4.3.0 Temporary internal failure\r\n");
  }
  CHECK(decode_helper_outcome("DONE\tcode=250\tenhanced=\ttext=x\tlog=\tmailbox=\tuid=0").reply.code == 250);
}
