#include "mra/imap_parser.h"

#include <catch2/catch.hpp>

using namespace tern::mra::imap;

namespace {

// Frames `wire` (one command, literals and all) with the real reader, then parses it.
// The reader is kept until the next call: APPEND's message is a view into its text.
ParseResult parse(const std::string& wire) {
  static ImapReader r;
  r.clear();
  r.feed(wire);
  for (;;) {
    ImapReader::Status s = r.next();
    if (s == ImapReader::Status::kCommand) return parse_command(r.command());
    if (s != ImapReader::Status::kContinue) return ParseError{"", "reader did not frame a command"};
  }
}

Command ok(const std::string& wire) {
  ParseResult r = parse(wire + "\r\n");
  if (auto* e = std::get_if<ParseError>(&r)) FAIL(wire << " -> " << e->message);
  return std::get<Command>(r);
}

ParseError err(const std::string& wire) {
  ParseResult r = parse(wire + "\r\n");
  if (std::holds_alternative<Command>(r)) FAIL(wire << " parsed but should not");
  return std::get<ParseError>(r);
}

}  // namespace

TEST_CASE("simple commands and tags", "[imap][parser]") {
  Command c = ok("a001 CAPABILITY");
  CHECK(c.tag == "a001");
  CHECK(c.name == CommandName::kCapability);
  CHECK(ok("x noop").name == CommandName::kNoop);  // command names are case-insensitive
  CHECK(ok("T.1 LOGOUT").tag == "T.1");
  for (const char* w : {"a STARTTLS", "a NAMESPACE", "a IDLE", "a CHECK", "a CLOSE", "a UNSELECT", "a EXPUNGE"}) {
    INFO(w);
    ok(w);
  }
  CHECK(err("a NOOP extra").tag == "a");
  CHECK(err("+tag NOOP").tag == "");
  CHECK(err("* NOOP").tag == "");
  CHECK(err("a").message == "Missing command");
  CHECK(err("a FROB").message == "Unknown command FROB");
  CHECK(err("a UID NOOP").message == "Unknown UID command");
  CHECK(err("GET / HTTP/1.1").tag == "GET");
  CHECK(err(std::string("a N\0OP", 6)).tag == "a");
}

TEST_CASE("LOGIN and AUTHENTICATE", "[imap][parser]") {
  Command c = ok("a LOGIN fred \"pass word\"");
  auto& l = std::get<LoginArgs>(c.args);
  CHECK(l.user == "fred");
  CHECK(l.password == "pass word");
  Command lit = ok("a LOGIN {4}\r\nfr d {6+}\r\np\"ss\\\\");
  CHECK(std::get<LoginArgs>(lit.args).user == "fr d");
  CHECK(std::get<LoginArgs>(lit.args).password == "p\"ss\\\\");
  CHECK(std::get<LoginArgs>(ok("a LOGIN \"a\\\\b\" \"q\\\"\"").args).user == "a\\b");
  CHECK(std::get<LoginArgs>(ok("a LOGIN u \"p\xc3\xa4ss\"").args).password == "p\xc3\xa4ss");
  err("a LOGIN fred");
  err("a LOGIN fred \"unterminated");
  err("a LOGIN fred \"bad\\escape\"");
  err(std::string("a LOGIN {3}\r\na\0b pass", 21));

  Command au = ok("a AUTHENTICATE plain");
  CHECK(std::get<AuthenticateArgs>(au.args).mechanism == "PLAIN");
  CHECK_FALSE(std::get<AuthenticateArgs>(au.args).initial_response);
  Command ir = ok("a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0");
  CHECK(std::get<AuthenticateArgs>(ir.args).initial_response == "AGZyZWQAc2VjcmV0");
  CHECK(std::get<AuthenticateArgs>(ok("a AUTHENTICATE PLAIN =").args).initial_response == "=");
  err("a AUTHENTICATE PLAIN bad!b64");
  err("a AUTHENTICATE");
}

TEST_CASE("mailbox commands, LIST and STATUS", "[imap][parser]") {
  CHECK(std::get<MailboxArgs>(ok("a SELECT INBOX").args).mailbox == "INBOX");
  CHECK(std::get<MailboxArgs>(ok("a SELECT \"My Box\" (CONDSTORE)").args).condstore);
  err("a SELECT INBOX (QRESYNC)");
  CHECK(std::get<MailboxArgs>(ok("a EXAMINE {5}\r\nx y z").args).mailbox == "x y z");
  CHECK(std::get<MailboxArgs>(ok("a CREATE Entw&APw-rfe").args).mailbox == "Entw&APw-rfe");
  CHECK(std::get<RenameArgs>(ok("a RENAME old new").args).to == "new");
  ok("a SUBSCRIBE x");
  ok("a UNSUBSCRIBE x");
  ok("a DELETE x");

  ListArgs l = std::get<ListArgs>(ok("a LIST \"\" *").args);
  CHECK(l.reference.empty());
  CHECK(l.patterns == std::vector<std::string>{"*"});
  CHECK_FALSE(l.extended);
  ListArgs l2 = std::get<ListArgs>(ok("a LIST \"\" \"\"").args);
  CHECK(l2.patterns == std::vector<std::string>{""});
  ListArgs x = std::get<ListArgs>(
      ok("a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX Work/%) RETURN (CHILDREN STATUS (MESSAGES UNSEEN) SPECIAL-USE)").args);
  CHECK(x.extended);
  CHECK(x.select_subscribed);
  CHECK(x.select_recursive);
  CHECK(x.patterns.size() == 2);
  CHECK(x.return_children);
  CHECK(x.return_special_use);
  CHECK(x.return_status == std::vector<std::string>{"MESSAGES", "UNSEEN"});
  err("a LIST (RECURSIVEMATCH) \"\" *");  // RFC 5258: needs another selection option
  err("a LIST (BOGUS) \"\" *");
  err("a LIST \"\" * RETURN (BOGUS)");
  err("a LIST \"\"");
  CHECK(std::get<ListArgs>(ok("a LSUB \"\" %").args).lsub);

  StatusArgs s = std::get<StatusArgs>(ok("a STATUS INBOX (messages UIDNEXT SIZE APPENDLIMIT DELETED)").args);
  CHECK(s.items == std::vector<std::string>{"MESSAGES", "UIDNEXT", "SIZE", "APPENDLIMIT", "DELETED"});
  err("a STATUS INBOX ()");
  err("a STATUS INBOX (BOGUS)");
  err("a STATUS INBOX MESSAGES");
}

TEST_CASE("APPEND with flags, date and literal", "[imap][parser]") {
  Command c = ok("A003 APPEND saved-messages (\\Seen $Label) \"17-Jul-1996 02:44:25 -0700\" {12}\r\nHello world!");
  AppendArgs& a = std::get<AppendArgs>(c.args);
  CHECK(a.mailbox == "saved-messages");
  CHECK(a.flags == std::vector<std::string>{"\\Seen", "$Label"});
  REQUIRE(a.internal_date);
  CHECK(a.internal_date->year == 1996);
  CHECK(a.internal_date->zone == -420);
  CHECK(a.internal_date->to_unix() == 837596665);
  CHECK(a.message == "Hello world!");
  CHECK(std::get<AppendArgs>(ok("a APPEND INBOX {3+}\r\nabc").args).message == "abc");
  CHECK(std::get<AppendArgs>(ok("a APPEND INBOX \" 1-Jan-2000 00:00:00 +0000\" {1}\r\nx").args).internal_date->day == 1);
  AppendArgs bin = std::get<AppendArgs>(ok(std::string("a APPEND INBOX ~{3}\r\na\0b", 24)).args);
  CHECK(bin.binary);
  CHECK(bin.message == std::string_view("a\0b", 3));
  err("a APPEND INBOX \"not a literal\"");
  err("a APPEND INBOX \"32-Jul-1996 02:44:25 -0700\" {1}\r\nx");
  err("a APPEND INBOX \"17-Jul-1996 25:44:25 -0700\" {1}\r\nx");
  err("a APPEND INBOX (\\Seen {1}\r\nx");
  err("a APPEND INBOX {1}\r\nx {1}\r\ny");  // MULTIAPPEND is not offered
  err("a LOGIN ~{1}\r\nx y");               // literal8 only in APPEND
}

TEST_CASE("FETCH items, sections, partials and macros", "[imap][parser]") {
  using K = FetchAtt::Kind;
  FetchArgs f = std::get<FetchArgs>(ok("a FETCH 1:* ALL").args);
  REQUIRE(f.atts.size() == 4);
  CHECK(f.atts[3].kind == K::kEnvelope);
  CHECK(std::get<FetchArgs>(ok("a FETCH 1 FAST").args).atts.size() == 3);
  CHECK(std::get<FetchArgs>(ok("a FETCH 1 FULL").args).atts.back().kind == K::kBody);
  CHECK(std::get<FetchArgs>(ok("a FETCH 1 flags").args).atts[0].kind == K::kFlags);

  FetchArgs g = std::get<FetchArgs>(ok(
      "a FETCH 2,4:6 (UID FLAGS BODY.PEEK[HEADER.FIELDS (From \"Subject\" x-y)] BODY[1.2.MIME] BODY[]<0.2048> "
      "BINARY.PEEK[2]<10.20> BINARY.SIZE[1] RFC822.SIZE INTERNALDATE BODYSTRUCTURE BODY MODSEQ BODY[3.TEXT] "
      "BODY[HEADER.FIELDS.NOT (Received)] RFC822 RFC822.HEADER RFC822.TEXT ENVELOPE)").args);
  REQUIRE(g.atts.size() == 18);
  CHECK(g.atts[2].kind == K::kBodySection);
  CHECK(g.atts[2].peek);
  CHECK(g.atts[2].section.spec == Section::Spec::kHeaderFields);
  CHECK(g.atts[2].section.fields == std::vector<std::string>{"From", "Subject", "x-y"});
  CHECK(g.atts[2].section.to_string() == "HEADER.FIELDS (From Subject x-y)");
  CHECK(g.atts[3].section.part == std::vector<uint32_t>{1, 2});
  CHECK(g.atts[3].section.spec == Section::Spec::kMime);
  CHECK(g.atts[3].section.to_string() == "1.2.MIME");
  CHECK(g.atts[4].partial == std::make_pair(uint64_t{0}, uint64_t{2048}));
  CHECK(g.atts[4].section.to_string().empty());
  CHECK(g.atts[5].kind == K::kBinary);
  CHECK(g.atts[5].peek);
  CHECK(g.atts[6].kind == K::kBinarySize);
  CHECK(g.atts[12].section.to_string() == "3.TEXT");
  CHECK(g.atts[13].section.spec == Section::Spec::kHeaderFieldsNot);

  FetchArgs cs = std::get<FetchArgs>(ok("a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)").args);
  CHECK(cs.changed_since == 12345u);

  const char* bad[] = {
      "a FETCH 1",
      "a FETCH 0 FLAGS",
      "a FETCH 1: FLAGS",
      "a FETCH 1 (FLAGS",
      "a FETCH 1 BOGUS",
      "a FETCH 1 ALL FLAGS",
      "a FETCH 1 (ALL)",
      "a FETCH 1 BODY[MIME]",
      "a FETCH 1 BODY[0]",
      "a FETCH 1 BODY[1.HEADER.FIELDS]",
      "a FETCH 1 BODY[HEADER.FIELDS ()]",
      "a FETCH 1 BODY[TEXT]<5>",
      "a FETCH 1 BODY[TEXT]<5.0>",
      "a FETCH 1 BINARY[HEADER]",
      "a FETCH 1 BODY[1",
      "a FETCH 1 (FLAGS) (BOGUS 1)",
      "a FETCH 4294967296 FLAGS",
      "a FETCH 1,,2 FLAGS",
  };
  for (const char* b : bad) {
    INFO(b);
    err(b);
  }
}

TEST_CASE("SEARCH programs with every key", "[imap][parser]") {
  using Op = SearchKey::Op;
  SearchArgs s = std::get<SearchArgs>(ok(
      "a SEARCH ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY \"y z\" CC c DELETED DRAFT FLAGGED FROM f "
      "HEADER X-Mailer mutt KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD ON 15-Mar-2020 OR TO t SUBJECT s RECENT "
      "SEEN SENTBEFORE \"1-Jan-2000\" SENTON 2-Jan-2000 SENTSINCE 3-Jan-2000 SINCE 4-Jan-2000 SMALLER 5 TEXT t "
      "UID 1:5,* UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD x UNSEEN 1,3:* (FROM a TO b) MODSEQ 5 "
      "OLDER 60 YOUNGER 30").args);
  CHECK(s.key.op == Op::kAnd);
  // Count the keys and spot-check a few.
  CHECK(s.key.children.size() == 38);
  CHECK(s.key.children[3].op == Op::kBefore);
  CHECK(s.key.children[3].date == Date{1994, 2, 1});
  CHECK(s.key.children[4].str == "y z");
  CHECK(s.key.children[10].header == "X-Mailer");
  CHECK(s.key.children[10].str == "mutt");
  CHECK(s.key.children[12].number == 100);
  CHECK(s.key.children[14].op == Op::kNot);
  CHECK(s.key.children[14].children[0].op == Op::kSeen);
  CHECK(s.key.children[17].op == Op::kOr);
  CHECK(s.key.children[17].children[1].op == Op::kSubject);
}

TEST_CASE("SEARCH charset, RETURN and bad programs", "[imap][parser]") {
  using Op = SearchKey::Op;
  SearchArgs c = std::get<SearchArgs>(ok("a SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa9t\xc3").args);
  CHECK(c.charset == "UTF-8");
  CHECK(c.key.children[0].str == "\xc3\xa9t\xc3");
  SearchArgs r = std::get<SearchArgs>(ok("a UID SEARCH RETURN (MIN COUNT SAVE) CHARSET US-ASCII UNSEEN").args);
  CHECK(r.return_given);
  CHECK(r.ret_min);
  CHECK(r.ret_count);
  CHECK(r.ret_save);
  CHECK_FALSE(r.ret_all);
  SearchArgs r2 = std::get<SearchArgs>(ok("a SEARCH RETURN () ALL").args);
  CHECK(r2.ret_all);  // RFC 4731: RETURN () is RETURN (ALL)
  SearchArgs d = std::get<SearchArgs>(ok("a SEARCH $").args);
  CHECK(d.key.children[0].op == Op::kSeqSet);
  CHECK(d.key.children[0].set.is_saved());
  SearchArgs u = std::get<SearchArgs>(ok("a SEARCH UID $").args);
  CHECK(u.key.children[0].set.is_saved());

  std::string deep = "a SEARCH ";
  for (int i = 0; i < kMaxSearchDepth + 5; ++i) deep += "NOT ";
  deep += "SEEN";
  CHECK(err(deep).message == "Search program nested too deep");
  std::string parens = "a SEARCH " + std::string(200, '(') + "ALL" + std::string(200, ')');
  CHECK(err(parens).message == "Search program nested too deep");

  const char* bad[] = {"a SEARCH", "a SEARCH BOGUS", "a SEARCH FROM", "a SEARCH OR SEEN", "a SEARCH (SEEN",
                       "a SEARCH SINCE 32-Jan-2020", "a SEARCH SINCE 1-Foo-2020", "a SEARCH SINCE 1-Jan-20",
                       "a SEARCH LARGER x", "a SEARCH UID 0", "a SEARCH 1:0", "a SEARCH RETURN (BOGUS) ALL",
                       "a SEARCH CHARSET", "a SEARCH KEYWORD \\Seen", "a SEARCH SEEN)"};
  for (const char* b : bad) {
    INFO(b);
    err(b);
  }
}

TEST_CASE("STORE, COPY, MOVE, UID EXPUNGE", "[imap][parser]") {
  StoreArgs s = std::get<StoreArgs>(ok("a STORE 1:3 +FLAGS.SILENT (\\Deleted \\Seen)").args);
  CHECK(s.mode == StoreArgs::Mode::kAdd);
  CHECK(s.silent);
  CHECK(s.flags == std::vector<std::string>{"\\Deleted", "\\Seen"});
  StoreArgs s2 = std::get<StoreArgs>(ok("a UID STORE 5 -FLAGS $Junk \\Flagged").args);
  CHECK(s2.mode == StoreArgs::Mode::kRemove);
  CHECK(s2.flags.size() == 2);
  StoreArgs s3 = std::get<StoreArgs>(ok("a STORE 1 (UNCHANGEDSINCE 320162338) FLAGS ()").args);
  CHECK(s3.unchanged_since == 320162338u);
  CHECK(s3.flags.empty());
  err("a STORE 1 FLAGS");
  err("a STORE 1 +FLAG (\\Seen)");
  err("a STORE 1 FLAGS (\\Seen");
  err("a STORE 1 FLAGS (\\)");

  CopyArgs c = std::get<CopyArgs>(ok("a UID COPY 1:* Trash").args);
  CHECK(c.mailbox == "Trash");
  Command m = ok("a MOVE $ \"Junk\"");
  CHECK(m.name == CommandName::kMove);
  CHECK(std::get<CopyArgs>(m.args).set.is_saved());
  err("a COPY Trash");

  Command e = ok("a UID EXPUNGE 3:5");
  CHECK(e.uid);
  CHECK(std::get<ExpungeArgs>(e.args).uids->to_string() == "3:5");
  err("a UID EXPUNGE");
}

TEST_CASE("ENABLE, ID, QUOTA", "[imap][parser]") {
  CHECK(std::get<EnableArgs>(ok("a ENABLE IMAP4rev2 condstore").args).capabilities ==
        std::vector<std::string>{"IMAP4REV2", "CONDSTORE"});
  err("a ENABLE");
  IdArgs id = std::get<IdArgs>(ok("a ID (\"name\" \"mutt\" \"version\" NIL)").args);
  REQUIRE(id.fields.size() == 2);
  CHECK(id.fields[0].second == "mutt");
  CHECK_FALSE(id.fields[1].second);
  CHECK(std::get<IdArgs>(ok("a ID NIL").args).fields.empty());
  std::string many = "a ID (";
  for (int i = 0; i < 31; ++i) many += "\"k" + std::to_string(i) + "\" \"v\" ";
  many.back() = ')';
  err(many);
  err("a ID (\"" + std::string(31, 'k') + "\" \"v\")");
  CHECK(std::get<QuotaArgs>(ok("a GETQUOTAROOT INBOX").args).root == "INBOX");
  CHECK(std::get<QuotaArgs>(ok("a GETQUOTA \"\"").args).root.empty());
  ok("a SETQUOTA \"\" (STORAGE 512)");
  err("a SETQUOTA \"\" (STORAGE)");
}

TEST_CASE("dates", "[imap][parser]") {
  CHECK(parse_search_date("1-Feb-1994") == Date{1994, 2, 1});
  CHECK(parse_search_date("29-feb-2024") == Date{2024, 2, 29});
  CHECK_FALSE(parse_search_date("29-Feb-2023"));
  CHECK_FALSE(parse_search_date("001-Feb-1994"));
  CHECK_FALSE(parse_search_date("1-February-1994"));
  CHECK_FALSE(parse_search_date("1/Feb/1994"));
  std::optional<DateTime> d = parse_date_time("01-Jan-2024 23:59:60 +1400");
  REQUIRE(d);
  CHECK(d->zone == 840);
  CHECK_FALSE(parse_date_time("01-Jan-2024 23:59:59 0000"));
  CHECK_FALSE(parse_date_time("01-Jan-2024 23:59 +0000"));
}
