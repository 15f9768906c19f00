#include "mra/imap_search.h"

#include <catch2/catch.hpp>

#include "mra/imap_parser.h"

using namespace tern::mra::imap;
namespace mime = tern::common::mime;

namespace {

class TestMessage : public SearchMessage {
 public:
  TestMessage(uint32_t seq, uint32_t uid, std::string raw, std::vector<std::string> flags = {}, int64_t date = 0)
      : seq_(seq), uid_(uid), raw_(std::move(raw)), flags_(std::move(flags)), date_(date) {}
  uint32_t seq() const override { return seq_; }
  uint32_t uid() const override { return uid_; }
  const std::vector<std::string>& flags() const override { return flags_; }
  bool recent() const override { return recent_; }
  uint64_t size() const override { return mime::to_crlf(raw_).size(); }
  int64_t internal_date() const override { return date_; }
  int internal_date_zone() const override { return zone_; }
  uint64_t modseq() const override { return modseq_; }
  const mime::Message* message() override {
    ++loads;
    if (!msg_) msg_ = mime::Message::parse(mime::to_crlf(raw_));
    return &*msg_;
  }
  bool recent_ = false;
  int zone_ = 0;
  uint64_t modseq_ = 1;
  int loads = 0;

 private:
  uint32_t seq_, uid_;
  std::string raw_;
  std::vector<std::string> flags_;
  int64_t date_;
  std::optional<mime::Message> msg_;
};

SearchKey key(const std::string& program) {
  ImapReader r;
  r.feed("a SEARCH " + program + "\r\n");
  for (;;) {
    ImapReader::Status s = r.next();
    if (s == ImapReader::Status::kCommand) break;
    REQUIRE(s == ImapReader::Status::kContinue);
  }
  ParseResult p = parse_command(r.command());
  if (auto* e = std::get_if<ParseError>(&p)) FAIL(program << ": " << e->message);
  return std::get<SearchArgs>(std::get<Command>(p).args).key;
}

const char kMail[] =
    "Date: Wed, 05 Jun 2024 23:30:00 -0700\n"
    "From: =?ISO-8859-1?Q?Andr=E9?= Pirard <pirard@vm1.ulg.ac.be>\n"
    "To: team@example.org, \"Bob Smith\" <bob@example.org>\n"
    "Cc: carol@example.org\n"
    "Subject: =?UTF-8?B?UXVhcnRhbHNiZXJpY2h0IOKAkyBFbnR3dXJm?=\n"
    "X-Mailer: mutt 2.2\n"
    "Content-Type: multipart/alternative; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "Die Zahlen f=FCr das zweite Quartal.\n"
    "--b\n"
    "Content-Type: text/html; charset=utf-8\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "PHA+R3LDvMOfZSBhdXMgS8O2bG48L3A+\n"
    "--b--\n";

}  // namespace

TEST_CASE("search keys on metadata never load the message", "[imap][search]") {
  // 2024-06-06 06:30:00 UTC
  TestMessage m(3, 42, kMail, {"\\Seen", "\\Flagged", "$Work"}, 1717655400);
  SearchContext ctx;
  ctx.max_seq = 10;
  ctx.max_uid = 100;
  ctx.now = 1717655400 + 3600;
  struct Case {
    const char* program;
    bool match;
  };
  const Case cases[] = {
      {"ALL", true},          {"SEEN", true},           {"UNSEEN", false},      {"FLAGGED", true},
      {"UNFLAGGED", false},   {"ANSWERED", false},      {"UNANSWERED", true},   {"DELETED", false},
      {"UNDELETED", true},    {"DRAFT", false},         {"UNDRAFT", true},      {"KEYWORD $Work", true},
      {"KEYWORD $work", true}, {"UNKEYWORD $Work", false}, {"KEYWORD $Home", false}, {"RECENT", false},
      {"NEW", false},         {"OLD", true},            {"LARGER 100", true},   {"SMALLER 100", false},
      {"3", true},            {"1:2", false},           {"2:*", true},          {"*", false},
      {"UID 42", true},       {"UID 1:41,43:*", false}, {"UID *", false},       {"UID 40:*", true},
      {"ON 6-Jun-2024", true}, {"BEFORE 6-Jun-2024", false}, {"BEFORE 7-Jun-2024", true}, {"SINCE 6-Jun-2024", true},
      {"SINCE 7-Jun-2024", false}, {"NOT SEEN", false}, {"OR SEEN DRAFT", true}, {"OR UNSEEN DRAFT", false},
      {"(SEEN FLAGGED)", true}, {"(SEEN DRAFT)", false}, {"YOUNGER 3600", true}, {"YOUNGER 3599", false},
      {"OLDER 3600", true},   {"OLDER 3601", false},    {"MODSEQ 1", true},     {"MODSEQ 2", false},
  };
  for (const Case& c : cases) {
    INFO(c.program);
    CHECK(search_matches(key(c.program), m, ctx) == c.match);
    CHECK_FALSE(search_needs_message(key(c.program)));
  }
  CHECK(m.loads == 0);
  // The internal date in the message's zone: 2024-06-05 23:30 at -0700.
  m.zone_ = -420;
  CHECK(search_matches(key("ON 5-Jun-2024"), m, ctx));
  m.recent_ = true;
  CHECK(search_matches(key("RECENT"), m, ctx));
  CHECK_FALSE(search_matches(key("NEW"), m, ctx));  // NEW is RECENT UNSEEN
}

TEST_CASE("search keys on headers and text decode what they read", "[imap][search]") {
  TestMessage m(1, 1, kMail);
  SearchContext ctx;
  ctx.max_seq = 1;
  ctx.max_uid = 1;
  struct Case {
    const char* program;
    bool match;
  };
  const Case cases[] = {
      {"FROM pirard", true},
      {"FROM \"Andr\xc3\xa9\"", true},          // RFC 2047 in a display name
      {"FROM \"ANDR\xc3\x89\"", true},              // case-folded beyond ASCII
      {"FROM bob", false},
      {"TO bob", true},
      {"TO \"Bob Smith\"", true},
      {"CC carol", true},
      {"BCC carol", false},                     // no Bcc field
      {"SUBJECT quartalsbericht", true},        // base64 UTF-8 encoded-word
      {"SUBJECT \"\xe2\x80\x93 Entwurf\"", true},
      {"SUBJECT lunch", false},
      {"HEADER X-Mailer mutt", true},
      {"HEADER x-mailer MUTT", true},
      {"HEADER X-Mailer \"\"", true},            // empty string: the field exists
      {"HEADER X-Spam \"\"", false},
      {"BODY \"zweite Quartal\"", true},        // quoted-printable ISO-8859-1
      {"BODY \"f\xc3\xbcr das\"", true},
      {"BODY \"Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln\"", true},  // base64 UTF-8 HTML part
      {"BODY pirard", false},                   // BODY does not search headers
      {"TEXT pirard", true},                    // TEXT does
      {"TEXT quartal", true},
      {"TEXT nowhere", false},
      {"SENTON 5-Jun-2024", true},              // the Date: field as written, zone ignored
      {"SENTBEFORE 5-Jun-2024", false},
      {"SENTSINCE 5-Jun-2024", true},
      {"SENTBEFORE 6-Jun-2024", true},
      {"OR FROM nobody SUBJECT entwurf", true},
      {"NOT TO team", false},
  };
  for (const Case& c : cases) {
    INFO(c.program);
    CHECK(search_matches(key(c.program), m, ctx) == c.match);
    CHECK(search_needs_message(key(c.program)));
  }
  TestMessage nodate(1, 1, "Subject: x\n\nbody\n");
  CHECK_FALSE(search_matches(key("SENTSINCE 1-Jan-1970"), nodate, ctx));
}

TEST_CASE("saved results ($) and has_flag", "[imap][search]") {
  TestMessage m(2, 7, "Subject: x\n\n");
  NumberSet saved;
  saved.add(7);
  SearchContext ctx;
  ctx.saved = &saved;
  CHECK(search_matches(key("$"), m, ctx));
  CHECK(search_matches(key("UID $"), m, ctx));
  ctx.saved = nullptr;
  CHECK_FALSE(search_matches(key("$"), m, ctx));
  CHECK(has_flag({"\\SEEN"}, "\\Seen"));
  CHECK_FALSE(has_flag({}, "\\Seen"));
}
