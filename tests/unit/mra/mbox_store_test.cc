// MboxStore (mra/mbox_store.h) on real mbox files in a temporary directory, with
// deliveries made by tern-mda's own appender (common/mbox.h): the file format
// (From_ lines, >From quoting, our headers hidden), UIDs kept in the file across
// stores, \Recent to one session, flags in Status/X-Status, expunge, the journaled
// rewrite interrupted at every step and recovered with a delivery after the crash,
// and the names and symlinks that must not lead out of the mail root.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/mbox.h"
#include "mra/mbox_store.h"

using namespace tern::mra;
namespace mbox = tern::common::mbox;
using tern::common::ErrorKind;

namespace {

struct TempMail {
  TempMail() {
    char tmpl[] = "/tmp/tern-mbox-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
    root = dir + "/mail";
    inbox = dir + "/inbox";
  }
  ~TempMail() { std::system(("rm -rf '" + dir + "'").c_str()); }
  MboxSettings settings() const {
    MboxSettings s;
    s.root = root;
    s.inbox = inbox;
    s.fsync = tern::common::maildir::Fsync::kNo;
    s.locks.timeout_seconds = 5;
    return s;
  }
  std::unique_ptr<MboxStore> store() const {
    auto st = MboxStore::open(settings());
    REQUIRE(st);
    return std::move(st).value();
  }
  std::string dir, root, inbox;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// A delivery as tern-mda makes it.
void deliver(const std::string& path, const std::string& text) {
  mbox::LockOptions lo;
  lo.timeout_seconds = 5;
  auto a = mbox::Appender::begin(path, "sender@example.org", 1764000000, lo);
  REQUIRE(a);
  REQUIRE(a->write(text));
  REQUIRE(a->commit(tern::common::maildir::Fsync::kNo));
}

std::vector<uint32_t> uids_of(const MailboxChanges& c) {
  std::vector<uint32_t> out;
  for (const auto& m : c.added) out.push_back(m.uid);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

TEST_CASE("mboxfmt parses messages, hides our headers and unquotes >From") {
  const std::string data =
      "From a@b Thu Nov 27 20:54:21 2026\n"
      "Subject: one\n"
      "X-IMAPbase: 1700000000 7\n"
      "X-UID: 5\n"
      "Status: RO\n"
      "X-Status: AFD\n"
      "X-Keywords: $Work Later\n"
      "\n"
      ">From me\n"
      ">>From you\n"
      "From not a separator (no blank line before)\n"
      "\n"
      "From MAILER-DAEMON Thu Nov 27 20:54:22 2026\n"
      "Subject: two\n"
      "\n"
      "body\n"
      "\n";
  std::vector<MboxMessage> m = mboxfmt::parse(data);
  REQUIRE(m.size() == 2);
  CHECK(m[0].uid == 5);
  CHECK(m[0].has_base);
  CHECK(m[0].base_validity == 1700000000u);
  CHECK(m[0].base_next == 7);
  CHECK(m[0].old);
  CHECK(m[0].flags == std::vector<std::string>{"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "$Work", "Later"});
  CHECK(m[0].date == 1795812861);  // 2026-11-27 20:54:21 UTC
  CHECK(mboxfmt::client_view(data, m[0]) ==
        "Subject: one\n\nFrom me\n>From you\nFrom not a separator (no blank line before)\n");
  CHECK(m[1].uid == 0);
  CHECK(!m[1].old);
  CHECK(m[1].flags.empty());
  CHECK(mboxfmt::client_view(data, m[1]) == "Subject: two\n\nbody\n");
  // RFC822.SIZE counts CRLF line ends.
  CHECK(m[1].size == std::string("Subject: two\r\n\r\nbody\r\n").size());
  // Rendering keeps the body quoted and rewrites our headers.
  m[1].uid = 9;
  m[1].flags = {"\\Seen", "\\Draft", "kw"};
  m[1].old = true;
  CHECK(mboxfmt::render(data, m[1], 0, 0) ==
        "From MAILER-DAEMON Thu Nov 27 20:54:22 2026\nSubject: two\nX-UID: 9\nStatus: RO\nX-Status: T\n"
        "X-Keywords: kw\n\nbody\n\n");
  CHECK(mboxfmt::render(data, m[0], 1700000000, 8).find("X-IMAPbase: 1700000000 0000000008\nX-UID: 5\n") != std::string::npos);
}

TEST_CASE("mboxfmt: bad and odd input") {
  CHECK(mboxfmt::parse("").empty());
  CHECK(mboxfmt::parse("not an mbox\n").empty());
  // Truncated: no newline at the end, no blank line after the header.
  std::string t = "From x Thu Nov 27 20:54:21 2026\nSubject: cut";
  auto m = mboxfmt::parse(t);
  REQUIRE(m.size() == 1);
  CHECK(mboxfmt::client_view(t, m[0]).rfind("Subject: cut", 0) == 0);
  // A bad X-UID and a bad date are ignored, NUL bytes pass through.
  std::string b = std::string("From x garbage\nX-UID: 99999999999\nX-UID: -1\nSubject: a\0b\n\nx\n\n", 56);
  m = mboxfmt::parse(b);
  REQUIRE(m.size() == 1);
  CHECK(m[0].uid == 0);
  CHECK(m[0].date == 0);
  // new_message: CRLF to LF, From_ line, >From quoting.
  std::string n = mboxfmt::new_message("Subject: s\r\n\r\nFrom here\r\n>From there\r\nend", 0);
  CHECK(n == "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: s\n\n>From here\n>>From there\nend\n\n");
  auto back = mboxfmt::parse(n);
  REQUIRE(back.size() == 1);
  CHECK(mboxfmt::client_view(n, back[0]) == "Subject: s\n\nFrom here\n>From there\nend\n");
}

TEST_CASE("MboxStore: UIDs are written to the file and survive a new store") {
  TempMail t;
  deliver(t.inbox, "Subject: a\n\nFrom x\n");
  deliver(t.inbox, "Subject: b\n\nb\n");
  uint32_t validity = 0;
  {
    auto s = t.store();
    auto mb = s->open("INBOX", OpenMode::kReadWrite);
    REQUIRE(mb);
    auto c = (*mb)->sync();
    REQUIRE(c);
    CHECK(uids_of(*c) == std::vector<uint32_t>{1, 2});
    CHECK(c->added[0].recent);
    validity = (*mb)->uid_validity();
    auto r = (*mb)->read(1);
    REQUIRE(r);
    CHECK(*r == "Subject: a\n\nFrom x\n");
  }
  const std::string f = slurp(t.inbox);
  CHECK(f.find("X-IMAPbase: " + std::to_string(validity) + " 0000000003\nX-UID: 1\nStatus: O\n") != std::string::npos);
  CHECK(f.find("X-UID: 2\n") != std::string::npos);
  CHECK(f.find("\n>From x\n") != std::string::npos);
  deliver(t.inbox, "Subject: c\n\nc\n");
  auto s = t.store();
  auto mb = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(mb);
  auto c = (*mb)->sync();
  REQUIRE(c);
  CHECK(uids_of(*c) == std::vector<uint32_t>{1, 2, 3});
  CHECK((*mb)->uid_validity() == validity);
  CHECK(!c->added[0].recent);  // claimed by the first store's session
  CHECK(c->added[2].recent);
}

TEST_CASE("MboxStore: \\Recent to one session; flags to Status/X-Status; others see them") {
  TempMail t;
  deliver(t.inbox, "Subject: a\n\na\n");
  auto s = t.store();
  auto one = s->open("INBOX", OpenMode::kReadWrite);
  auto two = s->open("INBOX", OpenMode::kReadWrite);
  auto ro = s->open("INBOX", OpenMode::kReadOnly);
  REQUIRE(one);
  REQUIRE(two);
  REQUIRE(ro);
  auto c1 = (*one)->sync();
  auto c2 = (*two)->sync();
  auto c3 = (*ro)->sync();
  REQUIRE(c1);
  REQUIRE(c2);
  REQUIRE(c3);
  CHECK(c1->added.at(0).recent);
  CHECK(!c2->added.at(0).recent);
  CHECK(!c3->added.at(0).recent);
  auto r = (*one)->store({1}, StoreMode::kAdd, {"\\seen", "\\Flagged", "$Work"}, std::nullopt);
  REQUIRE(r);
  REQUIRE(r->updated.size() == 1);
  CHECK(r->updated[0].flags == std::vector<std::string>{"\\Seen", "\\Flagged", "$Work"});
  const std::string f = slurp(t.inbox);
  CHECK(f.find("Status: RO\nX-Status: F\nX-Keywords: $Work\n") != std::string::npos);
  auto again = (*one)->sync();
  REQUIRE(again);
  CHECK(again->changed.empty());  // its own change is not reported back
  auto seen = (*two)->sync();
  REQUIRE(seen);
  REQUIRE(seen->changed.size() == 1);
  CHECK(has(seen->changed[0].flags, "\\Flagged"));
  // CONDSTORE: UNCHANGEDSINCE an older MODSEQ is refused.
  auto mod = (*two)->store({1}, StoreMode::kRemove, {"\\Seen"}, uint64_t{1});
  REQUIRE(mod);
  CHECK(mod->modified == std::vector<uint32_t>{1});
  // A read-only handle changes nothing.
  CHECK(!(*ro)->store({1}, StoreMode::kAdd, {"\\Deleted"}, std::nullopt));
  // A change made by another program (mutt rewriting Status) is seen.
  std::string g = slurp(t.inbox);
  g.replace(g.find("Status: RO\n"), 11, "Status: O\n");
  spit(t.inbox, g);
  auto ext = (*one)->sync();
  REQUIRE(ext);
  REQUIRE(ext->changed.size() == 1);
  CHECK(!has(ext->changed[0].flags, "\\Seen"));
}

TEST_CASE("MboxStore: expunge removes exactly the \\Deleted messages; UIDs are not reused") {
  TempMail t;
  for (int i = 1; i <= 5; ++i) deliver(t.inbox, "Subject: m" + std::to_string(i) + "\n\nbody " + std::to_string(i) + "\n");
  auto s = t.store();
  auto mb = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(mb);
  REQUIRE((*mb)->sync());
  REQUIRE((*mb)->store({2, 5}, StoreMode::kAdd, {"\\Deleted"}, std::nullopt));
  REQUIRE((*mb)->store({4}, StoreMode::kAdd, {"\\Deleted"}, std::nullopt));
  auto gone = (*mb)->expunge(std::vector<uint32_t>{2, 5});  // UID EXPUNGE: 4 stays
  REQUIRE(gone);
  CHECK(*gone == std::vector<uint32_t>{2, 5});
  auto c = (*mb)->sync();
  REQUIRE(c);
  CHECK(c->expunged == std::vector<uint32_t>{2, 5});
  const std::string f = slurp(t.inbox);
  CHECK(f.find("m2") == std::string::npos);
  CHECK(f.find("m5") == std::string::npos);
  CHECK(f.find("body 4") != std::string::npos);
  CHECK(mboxfmt::parse(f).size() == 3);
  // Highest UID 5 is gone: X-IMAPbase keeps uidnext at 6 for a fresh reader.
  deliver(t.inbox, "Subject: m6\n\nb\n");
  auto s2 = t.store();
  auto st = s2->status("INBOX");
  REQUIRE(st);
  CHECK(st->messages == 4);
  CHECK(st->uid_next == 7);
  auto mb2 = s2->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(mb2);
  auto c2 = (*mb2)->sync();
  REQUIRE(c2);
  CHECK(uids_of(*c2) == std::vector<uint32_t>{1, 3, 4, 6});
}

TEST_CASE("MboxStore: the journaled rewrite, interrupted at each step, loses nothing") {
  const std::string before = "AAAA\nFrom x\nold tail that is long\n\n";
  for (const std::string& after : {std::string("AAAA\nFrom x\nnew\n\n"), std::string("AAAA\nFrom x\na much longer new tail than before\n\n")}) {
    for (int step = 1; step <= 5; ++step) {
      DYNAMIC_SECTION("new length " << after.size() << " crash after step " << step) {
        TempMail t;
        ::mkdir(t.root.c_str(), 0700);
        const std::string path = t.dir + "/box", journal = t.dir + "/box.journal";
        spit(path, before);
        int fd = ::open(path.c_str(), O_RDWR);
        REQUIRE(fd >= 0);
        // Step 2 (the new length first) is only for growing, 4 (phase before ftruncate)
        // only for the rest; there the rewrite completes.
        const bool applies = after.size() > before.size() ? step != 4 : step != 2;
        const bool ok = bool(mbox_rewrite(fd, path, journal, before, after, 5, tern::common::maildir::Fsync::kNo, step));
        CHECK(ok == !applies);
        // tern-mda appends after the crash.
        const std::string delivered = "From d Thu Nov 27 20:54:21 2026\nSubject: late\n\nl\n\n";
        {
          std::ofstream app(path, std::ios::binary | std::ios::app);
          app << delivered;
        }
        REQUIRE(mbox_recover(fd, path, journal, tern::common::maildir::Fsync::kNo));
        ::close(fd);
        const std::string got = slurp(path);
        // Either the rewrite is undone or it is complete; the delivery is there.
        CHECK((got == before + delivered || got == after + delivered));
        struct stat st;
        CHECK(::stat(journal.c_str(), &st) < 0);
      }
    }
  }
}

TEST_CASE("MboxStore: folders, APPEND, COPY, MOVE, subscriptions") {
  TempMail t;
  deliver(t.inbox, "Subject: a\n\na\n");
  auto s = t.store();
  REQUIRE(s->create("Work/Projects"));
  CHECK(s->create("Work/Projects").error().kind == ErrorKind::kExists);
  CHECK(s->create("INBOX").error().kind == ErrorKind::kExists);
  REQUIRE(s->subscribe("Work/Projects", true));
  auto l = s->list();
  REQUIRE(l);
  bool saw_parent = false, saw_child = false;
  for (const auto& i : *l) {
    if (i.name == "Work") saw_parent = i.noselect;
    if (i.name == "Work/Projects") saw_child = i.subscribed && !i.noselect;
  }
  CHECK(saw_parent);
  CHECK(saw_child);
  CHECK(slurp(t.root + "/.subscriptions") == "Work/Projects\n");
  auto a = s->append("Work/Projects", "Subject: x\r\n\r\nFrom y\r\n", {"\\Seen"}, int64_t{1764000000});
  REQUIRE(a);
  CHECK(a->uid == 1);
  CHECK(!s->append("Nope", "x", {}, std::nullopt));
  CHECK(s->append("Nope", "x", {}, std::nullopt).error().kind == ErrorKind::kNotFound);
  auto in = s->open("INBOX", OpenMode::kReadWrite);
  REQUIRE(in);
  REQUIRE((*in)->sync());
  auto cp = (*in)->copy({1}, "Work/Projects");
  REQUIRE(cp);
  CHECK(cp->dst_uids == std::vector<uint32_t>{2});
  CHECK(cp->uid_validity == a->uid_validity);
  auto mv = (*in)->move({1}, "Work/Projects");
  REQUIRE(mv);
  auto c = (*in)->sync();
  REQUIRE(c);
  CHECK(c->expunged == std::vector<uint32_t>{1});
  auto w = s->open("Work/Projects", OpenMode::kReadOnly);
  REQUIRE(w);
  auto wc = (*w)->sync();
  REQUIRE(wc);
  CHECK(uids_of(*wc) == std::vector<uint32_t>{1, 2, 3});
  CHECK(has(wc->added[0].flags, "\\Seen"));
  auto r = (*w)->read(1);
  REQUIRE(r);
  CHECK(*r == "Subject: x\n\nFrom y\n");
  CHECK(slurp(t.root + "/Work/Projects").find("\n>From y\n") != std::string::npos);
  REQUIRE(s->rename("Work/Projects", "Done"));
  CHECK(slurp(t.root + "/.subscriptions") == "Done\n");
  CHECK(s->remove("Work"));  // now an empty directory
  CHECK(s->remove("INBOX").error().kind == ErrorKind::kDenied);
  REQUIRE(s->remove("Done"));
  CHECK(s->status("Done").error().kind == ErrorKind::kNotFound);
}

TEST_CASE("MboxStore: names and symlinks that would leave the mail root") {
  TempMail t;
  auto s = t.store();
  CHECK(s->create(".tern-mbox").error().kind == ErrorKind::kDenied);
  CHECK(s->create("a/.hidden").error().kind == ErrorKind::kDenied);
  CHECK(s->create("box.lock").error().kind == ErrorKind::kDenied);
  CHECK(s->create("bad\x01name").error().kind == ErrorKind::kDenied);
  spit(t.dir + "/outside", "From x Thu Nov 27 20:54:21 2026\nSubject: secret\n\ns\n\n");
  REQUIRE(::symlink((t.dir + "/outside").c_str(), (t.root + "/Link").c_str()) == 0);
  REQUIRE(::symlink(t.dir.c_str(), (t.root + "/LinkDir").c_str()) == 0);
  CHECK(!s->open("Link", OpenMode::kReadWrite));
  CHECK(!s->open("LinkDir/outside", OpenMode::kReadWrite));
  CHECK(!s->append("LinkDir/outside", "x", {}, std::nullopt));
  CHECK(!s->create("LinkDir/new"));
  auto l = s->list();
  REQUIRE(l);
  for (const auto& i : *l) CHECK(i.name.rfind("Link", 0) != 0);  // symlinks are not listed
  CHECK(slurp(t.dir + "/outside").find("X-UID") == std::string::npos);
}

TEST_CASE("MboxStore: one POP3 session per maildrop") {
  TempMail t;
  deliver(t.inbox, "Subject: a\n\na\n");
  auto s = t.store();
  auto p1 = s->open("INBOX", OpenMode::kPop3);
  REQUIRE(p1);
  auto p2 = s->open("INBOX", OpenMode::kPop3);
  REQUIRE(!p2);
  CHECK(p2.error().kind == ErrorKind::kInUse);
  p1->reset();
  CHECK(s->open("INBOX", OpenMode::kPop3));
}


TEST_CASE("mboxfmt: a message cut off without its newline looks the same after a rewrite") {
  // Found by tests/fuzz/mbox (corpus/mbox/crlf_truncated): render() ends a header
  // line and the body with a newline, client_view() did not, so BODY[] and
  // RFC822.SIZE of the last message of a truncated mbox changed at its first flag
  // change.
  for (const std::string& t : {std::string("From x Thu Nov 27 20:54:21 2026\nSubject: cut"),
                               std::string("From x Thu Nov 27 20:54:21 2026\nSubject: a\n\nbody cut"),
                               std::string("From x Thu Nov 27 20:54:21 2026\r\nSubject: c\r\n\r\nbody\r\n\r\nFrom y\nend")}) {
    INFO(t);
    auto m = mboxfmt::parse(t);
    REQUIRE(m.size() == 1);
    const std::string view = mboxfmt::client_view(t, m[0]);
    CHECK(view.back() == '\n');
    std::string again = mboxfmt::render(t, m[0], 0, 0);
    auto m2 = mboxfmt::parse(again);
    REQUIRE(m2.size() == 1);
    CHECK(mboxfmt::client_view(again, m2[0]) == view);
    CHECK(m2[0].size == m[0].size);
  }
  std::string t = "From x Thu Nov 27 20:54:21 2026\nSubject: cut";
  CHECK(mboxfmt::client_view(t, mboxfmt::parse(t)[0]) == "Subject: cut\n\n");
}

TEST_CASE("mboxfmt: a body that starts with From_ after a CRLF blank line stays one message") {
  // Found by tests/fuzz/mbox (corpus/mbox/crlf_separator_from): the header ended at
  // "\r\n", so "From y" was body; render() wrote the separator as "\n", and the next
  // read found two messages (a flag change split the message in two).
  const std::string t = "From x Thu Nov 27 20:54:21 2026\nSubject: a\n\r\nFrom y\nbody\n";
  auto m = mboxfmt::parse(t);
  REQUIRE(m.size() == 1);
  const std::string view = mboxfmt::client_view(t, m[0]);
  CHECK(view == "Subject: a\n\nFrom y\nbody\n");
  std::string again = mboxfmt::render(t, m[0], 0, 0);
  auto m2 = mboxfmt::parse(again);
  REQUIRE(m2.size() == 1);
  CHECK(mboxfmt::client_view(again, m2[0]) == view);
}

TEST_CASE("mboxfmt: a header cut off after a lone CR reads the same after a rewrite") {
  // Found by tests/fuzz/mbox (corpus/mbox/header_lone_cr): render() gave the cut-off
  // "\r" its newline, and the "\r\n" so made ended the header on the next read, so
  // our X-UID line became body.
  const std::string t = "From x Thu Nov 27 20:54:21 2026\nSubject: a\nX-Other: b\r\n\r";
  auto m = mboxfmt::parse(t);
  REQUIRE(m.size() == 1);
  const std::string view = mboxfmt::client_view(t, m[0]);
  CHECK(view == "Subject: a\nX-Other: b\r\n\n");
  std::string again = mboxfmt::render(t, m[0], 0, 0);
  auto m2 = mboxfmt::parse(again);
  REQUIRE(m2.size() == 1);
  CHECK(mboxfmt::client_view(again, m2[0]) == view);
  CHECK(m2[0].size == m[0].size);
}

TEST_CASE("mboxfmt: X-Keywords yields only IMAP atoms") {
  // Found by tests/fuzz/mbox (corpus/mbox/keywords_cr): a keyword ending in CR (any
  // sender can write X-Keywords) was taken as it was, went into FLAGS, and lost its
  // CR at the next rewrite.
  const std::string t = std::string("From x Thu Nov 27 20:54:21 2026\nX-Keywords: $Junk wo(rk a\001b bad\r ok\\ fine\n\nbody\n");
  auto m = mboxfmt::parse(t);
  REQUIRE(m.size() == 1);
  CHECK(m[0].flags == std::vector<std::string>{"$Junk", "fine"});
  std::string again = mboxfmt::render(t, m[0], 0, 0);
  CHECK(mboxfmt::parse(again)[0].flags == m[0].flags);
}
