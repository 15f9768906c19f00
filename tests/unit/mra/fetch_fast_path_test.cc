// The shortcuts FETCH and POP3 take for speed, each checked against the slow path it
// replaces on tricky input: the header-only parse (mime::header_section_end(),
// Message::parse_header_only(), Mailbox::read_header()) against the full MIME parse,
// and the one-pass POP3 dot-stuffing against to_crlf() followed by dot-stuffing.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common/mime.h"
#include "imap_grammar_fixture.h"
#include "mra/imap_render.h"
#include "mra/imap_session.h"
#include "mra/maildir_store.h"
#include "mra/pop3_session.h"
#include "memory_store_fixture.h"

using namespace tern::mra;
namespace mime = tern::common::mime;

namespace {

std::string big_header(size_t bytes) {
  std::string h;
  for (int i = 0; h.size() < bytes; ++i) {
    h += "X-Filler-" + std::to_string(i) + ": " + std::string(70, 'a' + i % 26) + "\n";
    if (i % 3 == 0) h += "\tfolded continuation line\n";
  }
  return h;
}

// Messages where the header's end is easy to get wrong.
std::vector<std::string> tricky_messages() {
  std::vector<std::string> v = {
      "",                                                  // empty file
      "\n",                                                // only a blank line
      "\r\n",                                              // likewise, CRLF
      "\r",                                                // a lone CR, no LF
      "Subject: no body\n\n",                              // blank line, no body
      "Subject: no body, CRLF\r\n\r\n",                    //
      "Subject: no blank line at EOF\n",                   // header without a blank line
      "Subject: no line end at all",                       //
      "Subject: ends in CR\r",                             //
      "Subject: x\n\r",                                    // a lone CR as the last line
      "Subject: x\n\r\rnot blank\n\nbody\n",               // CR CR is not a blank line
      "Subject: x\r\r\n\r\nbody\n",                        // CR CR LF: not blank
      "\nbody right away, no header\n",                    //
      "Subject: mixed\r\nFrom: a@b\n\r\nbody\nline2\r\n",  // mixed line ends
      "From: a@b\nSubject: LF only, as in a Maildir\n\nline 1\n.line 2\n",
      "Subject: 8-bit \xe4\xf6\xfc \xc3\xa9\xff\x80\nFrom: J\xc3\xbcrgen <j@example.org>\n\n\xff\xfe body\n",
      "Subject: NUL\0in header\n\nbody\0\n",
      "Subject: folded\n  continuation\n\t\n\nbody\n",  // a whitespace-only line is not blank
      "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\none\n--b\n"
      "Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n--b--\nepilogue\n",
      "Content-Type: multipart/alternative; boundary=\"q\"\n\n--q\n\n--q--",  // part without header
      "Content-Type: message/rfc822\n\nSubject: encapsulated\n\nits body\n",
      "Content-Type: multipart/mixed; boundary=b\n--b\nno blank line before the boundary\n--b--\n",
      "Subject: header > 64 KiB follows\n" + big_header(70 << 10) + "\nbody after a big header\n",
      big_header(70 << 10),  // a big header and no blank line at all
  };
  return v;
}

// Section contents the header-only parse must give exactly as the full parse does.
void check_same_root(const std::string& crlf) {
  INFO("message: " << crlf.substr(0, 200));
  mime::Message full = mime::Message::parse(crlf);
  mime::Message head = mime::Message::parse_header_only(crlf);
  CHECK(mime::header_section_end(crlf) == full.root().body_begin);
  CHECK(head.header_text(head.root()) == full.header_text(full.root()));
  CHECK(head.body_text(head.root()) == full.body_text(full.root()));
  CHECK(head.root().body_lines == full.root().body_lines);
  CHECK(head.root().content_type.type == full.root().content_type.type);
  CHECK(head.root().content_type.subtype == full.root().content_type.subtype);
  CHECK(head.root().encoding == full.root().encoding);
  REQUIRE(head.root().header.fields.size() == full.root().header.fields.size());
  for (size_t i = 0; i < full.root().header.fields.size(); ++i) {
    CHECK(head.root().header.fields[i].name == full.root().header.fields[i].name);
    CHECK(head.root().header.fields[i].value == full.root().header.fields[i].value);
  }
  CHECK(head.root().header.has_blank == full.root().header.has_blank);
  std::string env_full, env_head;
  imap::append_envelope(env_full, full.root().header);
  imap::append_envelope(env_head, head.root().header);
  CHECK(env_head == env_full);
  using Spec = imap::Section::Spec;
  for (Spec spec : {Spec::kHeader, Spec::kText, Spec::kNone, Spec::kHeaderFields, Spec::kHeaderFieldsNot}) {
    imap::Section sec;
    sec.spec = spec;
    sec.fields = {"Subject", "X-Filler-3", "Content-Type"};
    imap::SectionContent a = imap::section_content(full, sec);
    imap::SectionContent b = imap::section_content(head, sec);
    CHECK(a.exists == b.exists);
    CHECK(a.data() == b.data());
  }
}

// What the session does for BODY.PEEK[HEADER]: the stored bytes up to the header's
// end, converted to CRLF, parsed header-only.
void check_stored_header(const std::string& stored) {
  INFO("stored: " << stored.substr(0, 200));
  std::string crlf = mime::to_crlf(stored);
  mime::Message full = mime::Message::parse(crlf);
  std::string cut = mime::to_crlf(std::string_view(stored).substr(0, mime::header_section_end(stored)));
  mime::Message head = mime::Message::parse_header_only(cut);
  CHECK(head.header_text(head.root()) == full.header_text(full.root()));
  CHECK(cut == full.header_text(full.root()));
}

// The dot-stuffing as it was before the one-pass version: the reference.
std::string reference_dot_stuff(std::string_view raw) {
  std::string crlf = mime::to_crlf(raw);
  std::string out;
  bool line_start = true;
  for (char c : crlf) {
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n';
  }
  if (!out.empty() && !line_start) out += "\r\n";
  out += ".\r\n";
  return out;
}

// Random messages from the bytes that matter to line and header ends.
std::string random_message(std::mt19937& rng, size_t max_len) {
  static const char kAlphabet[] = {'a', ':', ' ', '\t', '\r', '\n', '\n', '.', '-', 'S', '\0', '\xff'};
  std::uniform_int_distribution<size_t> len(0, max_len);
  std::uniform_int_distribution<size_t> pick(0, sizeof kAlphabet - 1);
  std::string s(len(rng), 'a');
  for (char& c : s) c = kAlphabet[pick(rng)];
  return s;
}

}  // namespace

TEST_CASE("header-only parse equals the full parse on tricky messages", "[mime][fetch]") {
  for (const std::string& m : tricky_messages()) {
    check_same_root(m);
    check_same_root(mime::to_crlf(m));
    check_stored_header(m);
  }
}

TEST_CASE("header-only parse equals the full parse on random messages", "[mime][fetch]") {
  std::mt19937 rng(20261128);
  for (int i = 0; i < 20000; ++i) {
    std::string m = random_message(rng, 40);
    check_same_root(m);
    check_stored_header(m);
  }
}

TEST_CASE("header_section_end: the first empty line, LF or CRLF", "[mime][fetch]") {
  CHECK(mime::header_section_end("") == 0);
  CHECK(mime::header_section_end("\n") == 1);
  CHECK(mime::header_section_end("\r\n") == 2);
  CHECK(mime::header_section_end("A: b\n\nbody") == 6);
  CHECK(mime::header_section_end("A: b\r\n\r\nbody") == 8);
  CHECK(mime::header_section_end("A: b\n\r\nbody") == 7);
  CHECK(mime::header_section_end("A: b\n \nbody\n") == 12);  // a blank-looking folded line is not empty
  CHECK(mime::header_section_end("A: b\r\r\nbody\n") == 12);
  CHECK(mime::header_section_end("A: b") == 4);
}

TEST_CASE("POP3 dot-stuffing in one pass equals to_crlf then dot-stuffing", "[pop3][fetch]") {
  const std::vector<std::string> cases = {
      "",
      ".",
      "..",
      ".\n",
      "\n.\n",
      "a\n.\n.b\n",
      "a\r\n.\r\n..\r\n",
      "no final newline",
      "no final newline after CR\r",
      "bare CR\rinside\n",
      "\r\r\n.\r\r\n",
      "a\n\n\n",
      ".\r\n.\n.",
      std::string("NUL\0.\n.NUL\0", 11),
      "From: x\n\n.\n..\n...\nend\n",
  };
  for (const std::string& c : cases) {
    INFO("input: " << c);
    CHECK(pop3::dot_stuff(c) == reference_dot_stuff(c));
    std::string out = "+OK\r\n";
    pop3::append_dot_stuffed(out, c);
    CHECK(out == "+OK\r\n" + reference_dot_stuff(c));
  }
  std::mt19937 rng(1939);
  for (int i = 0; i < 20000; ++i) {
    std::string m = random_message(rng, 30);
    INFO("input: " << m);
    REQUIRE(pop3::dot_stuff(m) == reference_dot_stuff(m));
  }
  // A long message of long and short lines, some starting with dots.
  std::string big;
  for (int i = 0; i < 5000; ++i) big += (i % 7 == 0 ? "." : "") + std::string(static_cast<size_t>(i % 120), 'x') + (i % 3 ? "\n" : "\r\n");
  CHECK(pop3::dot_stuff(big) == reference_dot_stuff(big));
  // The wire ends in CRLF.CRLF exactly once.
  std::string w = pop3::dot_stuff("line\n");
  CHECK(w == "line\r\n.\r\n");
}

TEST_CASE("FETCH of headers reads only the header and answers as the full parse does", "[imap][fetch]") {
  // Each message is fetched twice: header items alone (the header-only path), and the
  // same items after an item that needs the MIME tree (BODY[1.MIME]), so that the
  // full parse serves them; apart from that first item the answers must be equal.
  const std::string items =
      "BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (Subject From X-Filler-2)] BODY.PEEK[HEADER.FIELDS.NOT (Subject)] "
      "RFC822.HEADER BODY.PEEK[HEADER]<0.10> BODY.PEEK[HEADER]<5.100000> ENVELOPE RFC822.SIZE";
  const std::string body_items = "BODY.PEEK[TEXT] BODY.PEEK[] BODY.PEEK[TEXT]<2.7> BODY.PEEK[]<1.3> RFC822.TEXT";
  std::vector<std::string> msgs;
  for (const std::string& m : tricky_messages()) {
    if (!m.empty()) msgs.push_back(m);  // an empty file is not a message one can deliver
  }
  testing::MemoryStore store;
  for (const std::string& m : msgs) store.deliver("INBOX", m, {}, 1717405200);
  imap::SessionConfig cfg;
  cfg.now = [] { return int64_t{1717660000}; };
  imap::ImapSession s(cfg, store, "bob");
  auto send = [&](const std::string& in) {
    s.feed(in);
    std::string out;
    for (int guard = 0; guard < 1000000; ++guard) {
      imap::ImapSession::Step st = s.step();
      out += st.out;
      if (st.action != imap::ImapSession::Action::kContinue) break;
    }
    INFO(out.substr(0, 2000));
    CHECK(testing::ResponseChecker::check(out, false) == "");
    return out;
  };
  send("s EXAMINE INBOX\r\n");
  for (size_t i = 1; i <= msgs.size(); ++i) {
    INFO("message " << i << ": " << msgs[i - 1].substr(0, 200));
    const std::string n = std::to_string(i);
    int full_before = store.full_reads, head_before = store.header_reads;
    std::string fast = send("a FETCH " + n + " (" + items + ")\r\n");
    CHECK(store.full_reads == full_before);  // the header items never read the whole message
    CHECK(store.header_reads == head_before + 1);
    std::string slow = send("a FETCH " + n + " (BODY.PEEK[1.MIME] " + items + ")\r\n");
    // Cut "BODY[1.MIME] <value> " out of the slow answer.
    std::string prefix = "* " + n + " FETCH (";
    REQUIRE(slow.rfind(prefix, 0) == 0);
    size_t first = slow.find("BODY[HEADER] ");
    REQUIRE(first != std::string::npos);
    CHECK(prefix + slow.substr(first) == fast);
    // Text and whole-message items: the root parse, against the MIME tree.
    std::string fast_body = send("b FETCH " + n + " (" + body_items + ")\r\n");
    std::string slow_body = send("b FETCH " + n + " (BODY.PEEK[1.MIME] " + body_items + ")\r\n");
    first = slow_body.find("BODY[TEXT] ");
    REQUIRE(first != std::string::npos);
    CHECK(prefix + slow_body.substr(first) == fast_body);
  }
  // The byte-exact header of one message, blank line included.
  std::string one = send("c FETCH 4 BODY.PEEK[HEADER]\r\n");
  CHECK(one == "* 4 FETCH (BODY[HEADER] {20}\r\nSubject: no body\r\n\r\n)\r\nc OK FETCH completed.\r\n");
  std::string crlf = send("c FETCH 5 BODY.PEEK[HEADER]\r\n");
  CHECK(crlf == "* 5 FETCH (BODY[HEADER] {26}\r\nSubject: no body, CRLF\r\n\r\n)\r\nc OK FETCH completed.\r\n");
  std::string eof = send("c FETCH 6 BODY.PEEK[HEADER]\r\n");
  CHECK(eof == "* 6 FETCH (BODY[HEADER] {31}\r\nSubject: no blank line at EOF\r\n)\r\nc OK FETCH completed.\r\n");
}

TEST_CASE("Maildir read_header: at least the header, on any chunk boundary", "[maildir][fetch]") {
  char tmpl[] = "/tmp/tern-fastpath-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  std::string root = std::string(tmpl) + "/Maildir";
  StoreSettings ss;
  ss.root = root;
  auto st = MaildirStore::open(ss);
  REQUIRE(st);
  std::vector<std::string> msgs;
  for (const std::string& m : tricky_messages()) {
    if (!m.empty()) msgs.push_back(m);
  }
  // Blank lines right at, before and after the first read's 8 KiB, and CR LF split by it.
  for (size_t at : {8190u, 8191u, 8192u, 8193u, 24575u, 24576u}) {
    std::string h = "Subject: boundary\n";
    while (h.size() + 20 < at) h += "X-Pad: " + std::string(std::min<size_t>(60, at - h.size() - 20), 'p') + "\n";
    while (h.size() < at - 1) h += h.size() + 1 < at - 1 ? "X: y\n" : "\n";
    h.resize(at - 1, 'z');
    msgs.push_back(h + "\r\n\r\nbody\n" + std::string(100000, 'b'));
    msgs.push_back(h + "\n\nbody\n");
  }
  for (const std::string& m : msgs) REQUIRE((*st)->append("INBOX", m, {}, std::nullopt));
  auto box = (*st)->open("INBOX", OpenMode::kReadOnly);
  REQUIRE(box);
  auto changes = (*box)->sync();
  REQUIRE(changes);
  REQUIRE(changes->added.size() == msgs.size());
  for (size_t i = 0; i < msgs.size(); ++i) {
    uint32_t uid = changes->added[i].uid;
    auto whole = (*box)->read(uid);
    auto head = (*box)->read_header(uid);
    REQUIRE(whole);
    REQUIRE(head);
    INFO("message " << i << " of " << whole->size() << " bytes");
    CHECK(whole->compare(0, head->size(), *head) == 0);  // a prefix of the file
    CHECK(mime::header_section_end(*head) == mime::header_section_end(*whole));
  }
  std::string cmd = "rm -rf '" + std::string(tmpl) + "'";
  CHECK(std::system(cmd.c_str()) == 0);
}
