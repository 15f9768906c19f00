// MaildirStore (mra/maildir_store.h) on a real Maildir++ in a temporary directory,
// with the real LMDB index: flags in file names, keywords, \Recent going to exactly
// one session, changes seen across handles, copy/move/expunge, mailbox management,
// and the names and symlinks that must not lead out of the mail root.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/maildir.h"
#include "mra/handoff.h"
#include "mra/maildir_store.h"

using namespace tern::mra;
namespace maildir = tern::common::maildir;
using tern::common::ErrorKind;

namespace {

struct TempRoot {
  TempRoot() {
    char tmpl[] = "/tmp/tern-store-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
    root = dir + "/Maildir";
  }
  ~TempRoot() { std::system(("rm -rf '" + dir + "'").c_str()); }
  std::string dir, root;
};

std::vector<std::string> names_in(const std::string& d) {
  std::vector<std::string> out;
  if (DIR* x = ::opendir(d.c_str())) {
    while (dirent* e = ::readdir(x)) {
      if (e->d_name[0] != '.') out.push_back(e->d_name);
    }
    ::closedir(x);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A delivery as tern-mda makes it: into new/, then the index.
uint32_t deliver(MaildirStore& s, const std::string& box, const std::string& text) {
  Result<std::string> dir = s.dir_of(box);
  REQUIRE(dir);
  Result<maildir::Delivery> d = maildir::Delivery::begin(*dir);
  REQUIRE(d);
  REQUIRE(d->write(text));
  Result<std::string> name = d->commit(maildir::Fsync::kNo, nullptr);
  REQUIRE(name);
  Result<std::string> disk = s.disk_name(box);
  Result<uint32_t> uid = s.index().add_delivered(*disk, *name, true, d->size(), d->vsize(), 1700000000);
  REQUIRE(uid);
  return *uid;
}

std::unique_ptr<MaildirStore> open_store(const TempRoot& t) {
  StoreSettings ss;
  ss.root = t.root;
  ss.fsync = maildir::Fsync::kNo;
  Result<std::unique_ptr<MaildirStore>> s = MaildirStore::open(ss);
  REQUIRE(s);
  return std::move(s).value();
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

TEST_CASE("the root gets the special-use folders, INBOX and a subscription list") {
  TempRoot t;
  auto s = open_store(t);
  Result<std::vector<MailboxInfo>> l = s->list();
  REQUIRE(l);
  std::set<std::string> names;
  for (const MailboxInfo& i : *l) {
    names.insert(i.name);
    if (i.name == "Sent") CHECK(i.special_use == SpecialUse::kSent);
    if (i.name == "Trash") CHECK((i.special_use == SpecialUse::kTrash && i.subscribed));
  }
  CHECK(names == std::set<std::string>{"INBOX", "Drafts", "Junk", "Sent", "Trash"});
}

TEST_CASE("flags are written to the file names, keywords to dovecot-keywords") {
  TempRoot t;
  auto s = open_store(t);
  uint32_t uid = deliver(*s, "INBOX", "Subject: a\n\nbody\n");
  auto mb = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(mb);
  Result<MailboxChanges> first = (*mb)->sync();
  REQUIRE(first);
  REQUIRE(first->added.size() == 1);
  CHECK(first->added[0].recent);
  CHECK(names_in(t.root + "/new").empty());  // claimed: moved to cur/
  Result<StoreResult> r = (*mb)->store({uid}, StoreMode::kAdd, {"\\Seen", "\\Flagged", "$Work", "\\Recent"}, std::nullopt);
  REQUIRE(r);
  REQUIRE(r->updated.size() == 1);
  CHECK(has(r->updated[0].flags, "$Work"));
  std::vector<std::string> cur = names_in(t.root + "/cur");
  REQUIRE(cur.size() == 1);
  CHECK(cur[0].substr(cur[0].size() - 6) == ":2,FSa");
  std::ifstream kw(t.root + "/dovecot-keywords");
  std::stringstream ss;
  ss << kw.rdbuf();
  CHECK(ss.str() == "0 $Work\n");
  // Our own change is not reported back by sync(); someone else's is.
  Result<MailboxChanges> again = (*mb)->sync();
  REQUIRE(again);
  CHECK(again->changed.empty());
  const std::string base = cur[0].substr(0, cur[0].find(':'));
  REQUIRE(::rename((t.root + "/cur/" + cur[0]).c_str(), (t.root + "/cur/" + base + ":2,S").c_str()) == 0);
  Result<MailboxChanges> other = (*mb)->sync();
  REQUIRE(other);
  REQUIRE(other->changed.size() == 1);
  CHECK(other->changed[0].flags == std::vector<std::string>{"\\Seen"});
}

TEST_CASE("\\Recent goes to the first read-write session only; EXAMINE takes nothing") {
  TempRoot t;
  auto s = open_store(t);
  deliver(*s, "INBOX", "Subject: new\n\nx\n");
  auto ro = s->open("INBOX", OpenMode::kReadOnly);
  auto a = s->open("INBOX", OpenMode::kReadWrite);
  auto b = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE((ro && a && b));
  Result<MailboxChanges> r0 = (*ro)->sync();
  REQUIRE(r0);
  CHECK(r0->added.at(0).recent);
  CHECK(names_in(t.root + "/new").size() == 1);  // read-only: left in new/
  Result<MailboxChanges> ra = (*a)->sync();
  Result<MailboxChanges> rb = (*b)->sync();
  REQUIRE((ra && rb));
  CHECK(ra->added.at(0).recent);
  CHECK_FALSE(rb->added.at(0).recent);
}

TEST_CASE("other handles see additions, expunges and flag changes") {
  TempRoot t;
  auto s = open_store(t);
  uint32_t u1 = deliver(*s, "INBOX", "Subject: 1\n\nx\n");
  uint32_t u2 = deliver(*s, "INBOX", "Subject: 2\n\nx\n");
  auto a = s->open("INBOX", OpenMode::kReadWrite);
  auto b = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(((*a)->sync() && (*b)->sync()));
  REQUIRE((*a)->store({u1, u2}, StoreMode::kAdd, {"\\Deleted"}, std::nullopt));
  uint32_t u3 = deliver(*s, "INBOX", "Subject: 3\n\nx\n");
  Result<std::vector<uint32_t>> gone = (*a)->expunge(std::vector<uint32_t>{u1});
  REQUIRE(gone);
  CHECK(*gone == std::vector<uint32_t>{u1});
  Result<MailboxChanges> ch = (*b)->sync();
  REQUIRE(ch);
  CHECK(ch->expunged == std::vector<uint32_t>{u1});
  REQUIRE(ch->added.size() == 1);
  CHECK(ch->added[0].uid == u3);
  REQUIRE(ch->changed.size() == 1);  // u2's \Deleted (u1's change is moot: expunged)
  CHECK(ch->changed[0].uid == u2);
  // The expunging handle hears of its own expunge too (the session announces it).
  Result<MailboxChanges> mine = (*a)->sync();
  REQUIRE(mine);
  CHECK(mine->expunged == std::vector<uint32_t>{u1});
  Result<std::vector<MessageMeta>> meta = (*b)->fetch_meta({u1, u2, u3});
  REQUIRE(meta);
  REQUIRE(meta->size() == 2);
  CHECK(meta->at(0).uid == u2);
  CHECK(meta->at(1).size == std::string("Subject: 3\r\n\r\nx\r\n").size());
}

TEST_CASE("CONDSTORE UNCHANGEDSINCE refuses messages changed since") {
  TempRoot t;
  auto s = open_store(t);
  uint32_t u = deliver(*s, "INBOX", "Subject: c\n\nx\n");
  auto a = s->open("INBOX", OpenMode::kReadWrite);
  Result<MailboxChanges> first = (*a)->sync();
  REQUIRE(first);
  const uint64_t ms = first->added.at(0).modseq;
  REQUIRE((*a)->store({u}, StoreMode::kAdd, {"\\Seen"}, ms));
  Result<StoreResult> r = (*a)->store({u}, StoreMode::kAdd, {"\\Flagged"}, ms);
  REQUIRE(r);
  CHECK(r->modified == std::vector<uint32_t>{u});
  CHECK(r->updated.empty());
}

TEST_CASE("append, copy and move keep flags, keywords, dates and bytes") {
  TempRoot t;
  auto s = open_store(t);
  Result<AppendResult> ap = s->append("Drafts", "Subject: d\r\n\r\nline\r\n", {"\\Draft", "$Label"}, 1600000000);
  REQUIRE(ap);
  auto d = s->open("Drafts", OpenMode::kReadWrite);
  REQUIRE(d);
  REQUIRE((*d)->sync());
  Result<std::string> data = (*d)->read(ap->uid);
  REQUIRE(data);
  CHECK(*data == "Subject: d\n\nline\n");
  Result<std::vector<MessageMeta>> meta = (*d)->fetch_meta({ap->uid});
  REQUIRE(meta);
  CHECK(meta->at(0).internal_date == 1600000000);
  CHECK(meta->at(0).size == std::string("Subject: d\r\n\r\nline\r\n").size());
  Result<CopyResult> c = (*d)->copy({ap->uid}, "Sent");
  REQUIRE(c);
  REQUIRE(c->dst_uids.size() == 1);
  Result<CopyResult> m = (*d)->move({ap->uid}, "Trash");
  REQUIRE(m);
  CHECK(names_in(t.root + "/.Drafts/cur").empty());
  auto tr = s->open("Trash", OpenMode::kReadWrite);
  Result<MailboxChanges> tch = (*tr)->sync();
  REQUIRE(tch);
  REQUIRE(tch->added.size() == 1);
  CHECK(has(tch->added[0].flags, "\\Draft"));
  CHECK(has(tch->added[0].flags, "$Label"));
  CHECK(tch->added[0].internal_date == 1600000000);
  Result<CopyResult> missing = (*tr)->copy({tch->added[0].uid}, "Nowhere");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().kind == ErrorKind::kNotFound);
  Result<MailboxStatus> st = s->status("Sent");
  REQUIRE(st);
  CHECK(st->messages == 1);
  CHECK(st->unseen == 1);
  CHECK(st->size == std::string("Subject: d\r\n\r\nline\r\n").size());
}

TEST_CASE("create, rename (children too), delete, subscribe; names in modified UTF-7 on disk") {
  TempRoot t;
  auto s = open_store(t);
  REQUIRE(s->create("Lists/tern"));
  REQUIRE(s->create("Entwürfe"));
  CHECK(::access((t.root + "/.Entw&APw-rfe/cur").c_str(), F_OK) == 0);
  CHECK(s->create("Lists/tern").error().kind == ErrorKind::kExists);
  CHECK(s->create("INBOX").error().kind == ErrorKind::kExists);
  Result<std::vector<MailboxInfo>> l = s->list();
  REQUIRE(l);
  bool parent_noselect = false, utf8 = false;
  for (const MailboxInfo& i : *l) {
    if (i.name == "Lists") parent_noselect = i.noselect;
    if (i.name == "Entwürfe") utf8 = true;
  }
  CHECK(parent_noselect);
  CHECK(utf8);
  REQUIRE(s->subscribe("Entwürfe", true));
  std::ifstream sub(t.root + "/subscriptions");
  std::stringstream ss;
  ss << sub.rdbuf();
  CHECK(ss.str().find("Entw&APw-rfe\n") != std::string::npos);
  deliver(*s, "Lists/tern", "Subject: l\n\nx\n");
  uint32_t v1 = s->status("Lists/tern")->uid_validity;
  REQUIRE(s->rename("Lists", "Old"));  // a \Noselect parent: its children move
  CHECK(::access((t.root + "/.Old.tern/cur").c_str(), F_OK) == 0);
  CHECK(s->rename("Nothing", "Else").error().kind == ErrorKind::kNotFound);
  REQUIRE(s->rename("Old/tern", "Projects/tern"));
  CHECK(::access((t.root + "/.Projects.tern/cur").c_str(), F_OK) == 0);
  Result<MailboxStatus> st = s->status("Projects/tern");
  REQUIRE(st);
  CHECK(st->messages == 1);
  REQUIRE(s->create("Lists/tern"));
  CHECK(s->status("Lists/tern")->uid_validity != v1);  // a new mailbox under the old name
  REQUIRE(s->remove("Projects/tern"));
  CHECK(::access((t.root + "/.Projects.tern").c_str(), F_OK) != 0);
  CHECK(s->remove("Projects/tern").error().kind == ErrorKind::kNotFound);
  CHECK(s->remove("INBOX").error().kind == ErrorKind::kDenied);
  // INBOX renamed: its messages move, INBOX stays.
  deliver(*s, "INBOX", "Subject: i\n\nx\n");
  REQUIRE(s->rename("INBOX", "Saved"));
  CHECK(s->status("INBOX")->messages == 0);
  CHECK(s->status("Saved")->messages == 1);
}

TEST_CASE("names and symlinks that would leave the mail root are refused") {
  TempRoot t;
  auto s = open_store(t);
  for (const char* bad : {"..", "a/../b", "../x", ".hidden", "a.b", "x/.y"}) {
    CAPTURE(bad);
    CHECK_FALSE(s->create(bad));
    CHECK_FALSE(s->open(bad, OpenMode::kReadWrite));
  }
  const std::string outside = t.dir + "/outside";
  REQUIRE(maildir::create(outside, true));
  REQUIRE(::symlink(outside.c_str(), (t.root + "/.Evil").c_str()) == 0);
  Result<std::unique_ptr<Mailbox>> evil = s->open("Evil", OpenMode::kReadWrite);
  REQUIRE_FALSE(evil);
  CHECK(evil.error().kind == ErrorKind::kDenied);
  CHECK_FALSE(s->append("Evil", "Subject: x\r\n\r\nx\r\n", {}, std::nullopt));
  CHECK_FALSE(s->status("Evil"));
  CHECK(names_in(outside + "/cur").empty());
}

TEST_CASE("POP3: one session per maildrop") {
  TempRoot t;
  auto s = open_store(t);
  auto a = s->open("INBOX", OpenMode::kPop3);
  REQUIRE(a);
  Result<std::unique_ptr<Mailbox>> b = s->open("INBOX", OpenMode::kPop3);
  REQUIRE_FALSE(b);
  CHECK(b.error().kind == ErrorKind::kInUse);
  a->reset();
  CHECK(s->open("INBOX", OpenMode::kPop3));
}

TEST_CASE("quota from the userdb rule refuses appends over it") {
  TempRoot t;
  StoreSettings ss;
  ss.root = t.root;
  ss.fsync = maildir::Fsync::kNo;
  ss.quota_bytes = 100;
  auto s = std::move(MaildirStore::open(ss)).value();
  REQUIRE(s->append("INBOX", std::string(60, 'x'), {}, std::nullopt));
  Result<AppendResult> over = s->append("INBOX", std::string(60, 'y'), {}, std::nullopt);
  REQUIRE_FALSE(over);
  CHECK(over.error().kind == ErrorKind::kNoQuota);
  Result<QuotaInfo> q = s->quota();
  REQUIRE(q);
  CHECK(q->storage_limit == 100);
  CHECK(q->storage_used == 60);
}

TEST_CASE("hand-over packets: round trip, escaping, and malformed input") {
  using namespace tern::mra::handoff;
  Fields f{{"buffered", std::string("a\tb\nc\\d\0e", 9)}, {"user", "u@example.org"}};
  std::string wire = encode("LOGIN", f);
  CHECK(wire.find('\n') == std::string::npos);
  std::optional<Packet> p = decode(wire);
  REQUIRE(p);
  CHECK(p->verb == "LOGIN");
  CHECK(p->fields == f);
  for (const char* bad : {"", "\tk=v", "LOGIN\tnokey", "LOGIN\t=v", "LOGIN\tk=v\\", "LOGIN\tk=\\x", "LOGIN\tk=1\tk=2"}) {
    CAPTURE(bad);
    CHECK_FALSE(decode(bad));
  }
  CHECK(frame_length(frame("abc")) == 3u);
  CHECK_FALSE(frame_length(std::string("\0\0\0\0", 4)));
  CHECK_FALSE(frame_length(std::string("\x7f\0\0\0", 4)));  // over kMaxPacket
  CHECK_FALSE(frame_length("ab"));
  CHECK_FALSE(decode(std::string(kMaxPacket + 1, 'A')));
}

TEST_CASE("a spooled APPEND is written into tmp/ as it comes and renamed into its folder") {
  // RFC 3501 6.3.11 APPEND; the bytes arrive in pieces (ImapReader kSpoolData), CRLF
  // and CR split across them: the file is what append() would have written.
  TempRoot t;
  auto s = open_store(t);
  const std::vector<std::string> pieces = {"Subject: s\r", "\n\r\nline\r", "\r\nbare\r", "x\r\n\r", "\n"};
  std::string whole;
  for (const std::string& p : pieces) whole += p;
  Result<std::unique_ptr<Spool>> sp = s->begin_spool(whole.size());
  REQUIRE(sp);
  for (const std::string& p : pieces) REQUIRE((*sp)->write(p));
  CHECK(names_in(t.root + "/tmp").size() == 1);  // in the root's tmp/ meanwhile
  Result<AppendResult> ap = s->append_spool("Sent", std::move(sp).value(), {"\\Seen"}, 1600000000);
  REQUIRE(ap);
  CHECK(names_in(t.root + "/tmp").empty());
  Result<AppendResult> ref = s->append("Drafts", whole, {"\\Seen"}, 1600000000);
  REQUIRE(ref);
  auto sent = s->open("Sent", OpenMode::kReadWrite);
  auto drafts = s->open("Drafts", OpenMode::kReadWrite);
  REQUIRE((*sent)->sync());
  REQUIRE((*drafts)->sync());
  Result<std::string> a = (*sent)->read(ap->uid), b = (*drafts)->read(ref->uid);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == *b);
  CHECK(*a == "Subject: s\n\nline\r\r\nbare\rx\n\n");
  Result<std::vector<MessageMeta>> ma = (*sent)->fetch_meta({ap->uid}), mb = (*drafts)->fetch_meta({ref->uid});
  CHECK(ma->at(0).size == mb->at(0).size);
  CHECK(ma->at(0).internal_date == 1600000000);

  // Dropped unused, or refused by the quota before a byte: nothing is left behind.
  { Result<std::unique_ptr<Spool>> unused = s->begin_spool(10); REQUIRE(unused); REQUIRE((*unused)->write("abc")); }
  CHECK(names_in(t.root + "/tmp").empty());
}

TEST_CASE("a spool over the quota is refused from its announced size") {
  TempRoot t;
  StoreSettings ss;
  ss.root = t.root;
  ss.fsync = maildir::Fsync::kNo;
  ss.quota_bytes = 100;
  auto s = std::move(MaildirStore::open(ss)).value();
  Result<std::unique_ptr<Spool>> sp = s->begin_spool(101);
  REQUIRE_FALSE(sp);
  CHECK(sp.error().kind == ErrorKind::kNoQuota);
}
