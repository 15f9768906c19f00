#include "mra/imap_parser.h"

#include <algorithm>

#include "common/mime_date.h"
#include "common/text.h"

namespace tern::mra::imap {

namespace {

using tern::common::iequals;

// RFC 3501 9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
// quoted-specials / resp-specials.
bool is_atom_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  switch (c) {
    case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
      return false;
    default:
      return true;
  }
}

bool is_astring_char(char c) { return is_atom_char(c) || c == ']'; }
bool is_list_char(char c) { return is_atom_char(c) || c == '%' || c == '*' || c == ']'; }
bool is_tag_char(char c) { return is_astring_char(c) && c != '+'; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

class Cursor {
 public:
  explicit Cursor(const RawCommand& raw) : raw_(&raw), s_(raw.text) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool fail(std::string msg) {
    if (error_.empty()) error_ = std::move(msg);
    return false;
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  size_t pos() const { return pos_; }
  bool consume(char c) {
    if (peek() == c && !at_end()) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool sp() { return consume(' ') || fail("Missing space"); }
  bool expect(char c) { return consume(c) || fail(std::string("Expected '") + c + "'"); }
  bool end() { return at_end() || fail("Unexpected extra arguments"); }

  // Is there a literal announcement at the cursor?
  const LiteralSpan* literal_here() const {
    for (size_t i = lit_next_; i < raw_->literals.size(); ++i) {
      if (raw_->literals[i].brace == pos_) return &raw_->literals[i];
      if (raw_->literals[i].brace > pos_) break;
    }
    return nullptr;
  }

  std::string_view take_while(bool (*pred)(char)) {
    size_t b = pos_;
    while (pos_ < s_.size() && pred(s_[pos_])) ++pos_;
    return s_.substr(b, pos_ - b);
  }

  std::optional<std::string_view> atom() {
    std::string_view a = take_while(is_atom_char);
    if (a.empty()) {
      fail("Expected an atom");
      return std::nullopt;
    }
    return a;
  }

  std::optional<std::string> quoted() {
    if (!consume('"')) {
      fail("Expected a quoted string");
      return std::nullopt;
    }
    std::string out;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c == '\\') {
        if (pos_ >= s_.size()) break;
        char d = s_[pos_++];
        if (d != '\\' && d != '"') {
          fail("Invalid escape in quoted string");
          return std::nullopt;
        }
        out += d;
        continue;
      }
      if (c == '\0' || c == '\r' || c == '\n') {
        fail("Invalid character in quoted string");
        return std::nullopt;
      }
      out += c;  // 8-bit bytes: UTF-8 (RFC 9051, RFC 6855), also in LOGIN passwords
    }
    fail("Unterminated quoted string");
    return std::nullopt;
  }

  // A literal at the cursor: its data. `allow_nul` only for APPEND's message.
  // `was_spooled` only for APPEND's message, which alone the reader spools: then the
  // data is in the session's spool and the view is empty.
  std::optional<std::string_view> literal(bool allow_binary = false, bool allow_nul = false,
                                          bool* was_binary = nullptr, bool* was_spooled = nullptr) {
    const LiteralSpan* l = literal_here();
    if (!l) {
      fail("Expected a literal");
      return std::nullopt;
    }
    if (l->spooled && !was_spooled) {
      fail("Unexpected literal");
      return std::nullopt;
    }
    if (was_spooled) *was_spooled = l->spooled;
    if (l->spooled) {
      if (was_binary) *was_binary = l->binary;
      pos_ = l->data;
      ++lit_next_;
      while (lit_next_ < raw_->literals.size() && raw_->literals[lit_next_].brace < pos_) ++lit_next_;
      return std::string_view();
    }
    if (l->binary && !allow_binary) {
      fail("literal8 is only allowed in APPEND");
      return std::nullopt;
    }
    std::string_view data = s_.substr(l->data, l->size);
    if (!allow_nul && !l->binary && data.find('\0') != std::string_view::npos) {
      fail("NUL in literal");
      return std::nullopt;
    }
    if (was_binary) *was_binary = l->binary;
    pos_ = l->data + l->size;
    ++lit_next_;
    while (lit_next_ < raw_->literals.size() && raw_->literals[lit_next_].brace < pos_) ++lit_next_;
    return data;
  }

  std::optional<std::string> string() {
    if (peek() == '"') return quoted();
    if (literal_here()) {
      std::optional<std::string_view> l = literal();
      if (!l) return std::nullopt;
      return std::string(*l);
    }
    fail("Expected a string");
    return std::nullopt;
  }

  std::optional<std::string> astring() {
    if (peek() == '"' || literal_here()) return string();
    std::string_view a = take_while(is_astring_char);
    if (a.empty()) {
      fail("Expected a string or atom");
      return std::nullopt;
    }
    return std::string(a);
  }

  // nstring: NIL or a string. The outer optional is "parsed", the inner "not NIL".
  std::optional<std::optional<std::string>> nstring() {
    if (peek() == 'N' || peek() == 'n') {
      std::string_view a = take_while(is_atom_char);
      if (iequals(a, "NIL")) return std::optional<std::string>();
      fail("Expected NIL or a string");
      return std::nullopt;
    }
    std::optional<std::string> s = string();
    if (!s) return std::nullopt;
    return std::optional<std::string>(std::move(*s));
  }

  // list-mailbox: 1*list-char / string
  std::optional<std::string> list_mailbox() {
    if (peek() == '"' || literal_here()) return string();
    std::string_view a = take_while(is_list_char);
    if (a.empty()) {
      fail("Expected a mailbox pattern");
      return std::nullopt;
    }
    return std::string(a);
  }

  std::optional<uint64_t> number(uint64_t max = UINT32_MAX) {
    std::string_view d = take_while([](char c) { return c >= '0' && c <= '9'; });
    std::optional<uint64_t> v = tern::common::parse_u64(d);
    if (!v || *v > max) {
      fail("Expected a number");
      return std::nullopt;
    }
    return v;
  }

  std::optional<SequenceSet> sequence_set() {
    std::string_view t = take_while([](char c) { return (c >= '0' && c <= '9') || c == ':' || c == ',' || c == '*' || c == '$'; });
    std::optional<SequenceSet> set = SequenceSet::parse(t);
    if (!set) fail("Invalid sequence set");
    return set;
  }

  // flag = "\" atom / atom (RFC 3501 9 flag, flag-keyword, flag-extension)
  std::optional<std::string> flag() {
    size_t b = pos_;
    consume('\\');
    std::string_view a = take_while(is_atom_char);
    if (a.empty()) {
      fail("Invalid flag");
      return std::nullopt;
    }
    return std::string(s_.substr(b, pos_ - b));
  }

  std::optional<std::vector<std::string>> flag_list() {
    if (!expect('(')) return std::nullopt;
    std::vector<std::string> flags;
    if (consume(')')) return flags;
    for (;;) {
      std::optional<std::string> f = flag();
      if (!f) return std::nullopt;
      if (flags.size() >= 1000) {  // far more than any client uses; bounds the list
        fail("Too many flags");
        return std::nullopt;
      }
      flags.push_back(std::move(*f));
      if (consume(')')) return flags;
      if (!sp()) return std::nullopt;
    }
  }

  std::string_view rest() const { return s_.substr(pos_); }

 private:
  const RawCommand* raw_;
  std::string_view s_;
  size_t pos_ = 0;
  size_t lit_next_ = 0;
  std::string error_;
};

// --- per-command parsers -----------------------------------------------------------

bool parse_mailbox(Cursor& c, std::string& out) {
  std::optional<std::string> m = c.astring();
  if (!m) return false;
  out = std::move(*m);
  return true;
}

std::optional<std::vector<std::string>> parse_atom_list(Cursor& c, size_t max) {
  if (!c.expect('(')) return std::nullopt;
  std::vector<std::string> out;
  if (c.consume(')')) return out;
  for (;;) {
    std::optional<std::string_view> a = c.atom();
    if (!a) return std::nullopt;
    if (out.size() >= max) {
      c.fail("List too long");
      return std::nullopt;
    }
    out.push_back(upper(*a));
    if (c.consume(')')) return out;
    if (!c.sp()) return std::nullopt;
  }
}

bool valid_status_item(std::string_view s) {
  static const char* kItems[] = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                                 "SIZE", "DELETED", "HIGHESTMODSEQ", "APPENDLIMIT"};
  return std::any_of(std::begin(kItems), std::end(kItems), [&](const char* k) { return s == k; });
}

std::optional<std::vector<std::string>> parse_status_items(Cursor& c) {
  std::optional<std::vector<std::string>> items = parse_atom_list(c, 32);
  if (!items) return std::nullopt;
  if (items->empty()) {
    c.fail("Empty status item list");
    return std::nullopt;
  }
  for (const std::string& it : *items) {
    if (!valid_status_item(it)) {
      c.fail("Unknown status item " + it);
      return std::nullopt;
    }
  }
  return items;
}

bool parse_list(Cursor& c, ListArgs& a) {
  // [SP "(" list-select-opts ")"] SP mailbox SP mbox-or-pat [SP "RETURN" SP "(" opts ")"]
  if (c.peek() == '(') {
    a.extended = true;
    std::optional<std::vector<std::string>> opts = parse_atom_list(c, 16);
    if (!opts) return false;
    for (const std::string& o : *opts) {
      if (o == "SUBSCRIBED") {
        a.select_subscribed = true;
      } else if (o == "REMOTE") {
        a.select_remote = true;
      } else if (o == "RECURSIVEMATCH") {
        a.select_recursive = true;
      } else if (o == "SPECIAL-USE") {
        a.select_special_use = true;
      } else {
        return c.fail("Unknown LIST selection option " + o);
      }
    }
    // RFC 5258 3.1: RECURSIVEMATCH needs another selection option.
    if (a.select_recursive && !a.select_subscribed && !a.select_special_use) {
      return c.fail("RECURSIVEMATCH needs another selection option");
    }
    if (!c.sp()) return false;
  }
  if (!parse_mailbox(c, a.reference) || !c.sp()) return false;
  if (c.peek() == '(') {
    a.extended = true;
    c.consume('(');
    for (;;) {
      std::optional<std::string> p = c.list_mailbox();
      if (!p) return false;
      if (a.patterns.size() >= 64) return c.fail("Too many patterns");
      a.patterns.push_back(std::move(*p));
      if (c.consume(')')) break;
      if (!c.sp()) return false;
    }
  } else {
    std::optional<std::string> p = c.list_mailbox();
    if (!p) return false;
    a.patterns.push_back(std::move(*p));
  }
  if (c.at_end()) return true;
  if (!c.sp()) return false;
  std::optional<std::string_view> kw = c.atom();
  if (!kw || !iequals(*kw, "RETURN")) return c.fail("Expected RETURN");
  a.extended = true;
  if (!c.sp() || !c.expect('(')) return false;
  if (c.consume(')')) return c.end();
  for (;;) {
    std::optional<std::string_view> o = c.atom();
    if (!o) return false;
    std::string opt = upper(*o);
    if (opt == "SUBSCRIBED") {
      a.return_subscribed = true;
    } else if (opt == "CHILDREN") {
      a.return_children = true;
    } else if (opt == "SPECIAL-USE") {
      a.return_special_use = true;
    } else if (opt == "STATUS") {
      if (!c.sp()) return false;
      std::optional<std::vector<std::string>> items = parse_status_items(c);
      if (!items) return false;
      a.return_status = std::move(*items);
    } else {
      return c.fail("Unknown LIST return option " + opt);
    }
    if (c.consume(')')) break;
    if (!c.sp()) return false;
  }
  return c.end();
}

bool parse_section(Cursor& c, Section& sec) {
  // "[" [section-spec] "]"
  if (!c.expect('[')) return false;
  if (c.consume(']')) return true;
  // section-part
  while (c.peek() >= '0' && c.peek() <= '9') {
    std::optional<uint64_t> n = c.number();
    if (!n || *n == 0) return c.fail("Invalid section part");
    if (sec.part.size() >= 100) return c.fail("Section nested too deep");  // cf. mime::Limits
    sec.part.push_back(static_cast<uint32_t>(*n));
    if (!c.consume('.')) break;
    if (!(c.peek() >= '0' && c.peek() <= '9')) {
      // the '.' introduces section-text
      std::string_view word = c.take_while([](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '.'; });
      std::string w = upper(word);
      if (w == "MIME") {
        sec.spec = Section::Spec::kMime;
      } else if (w == "HEADER") {
        sec.spec = Section::Spec::kHeader;
      } else if (w == "TEXT") {
        sec.spec = Section::Spec::kText;
      } else if (w == "HEADER.FIELDS") {
        sec.spec = Section::Spec::kHeaderFields;
      } else if (w == "HEADER.FIELDS.NOT") {
        sec.spec = Section::Spec::kHeaderFieldsNot;
      } else {
        return c.fail("Invalid section");
      }
      goto fields;
    }
  }
  if (sec.part.empty()) {
    std::string_view word = c.take_while([](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '.'; });
    std::string w = upper(word);
    if (w == "HEADER") {
      sec.spec = Section::Spec::kHeader;
    } else if (w == "TEXT") {
      sec.spec = Section::Spec::kText;
    } else if (w == "HEADER.FIELDS") {
      sec.spec = Section::Spec::kHeaderFields;
    } else if (w == "HEADER.FIELDS.NOT") {
      sec.spec = Section::Spec::kHeaderFieldsNot;
    } else {
      return c.fail("Invalid section");  // MIME needs a part number
    }
  }
fields:
  if (sec.spec == Section::Spec::kHeaderFields || sec.spec == Section::Spec::kHeaderFieldsNot) {
    if (!c.sp() || !c.expect('(')) return false;
    for (;;) {
      std::optional<std::string> f = c.astring();
      if (!f) return false;
      if (f->empty()) return c.fail("Empty header field name");
      if (sec.fields.size() >= 256) return c.fail("Too many header fields");
      sec.fields.push_back(std::move(*f));
      if (c.consume(')')) break;
      if (!c.sp()) return false;
    }
  }
  return c.expect(']');
}

bool parse_partial(Cursor& c, FetchAtt& att) {
  if (!c.consume('<')) return true;
  std::optional<uint64_t> off = c.number();
  if (!off || !c.expect('.')) return false;
  std::optional<uint64_t> len = c.number();
  if (!len || *len == 0) return c.fail("Invalid partial");
  att.partial = std::make_pair(*off, *len);
  return c.expect('>');
}

bool parse_fetch_att(Cursor& c, std::vector<FetchAtt>& out) {
  std::string_view name = c.take_while([](char ch) {
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.';
  });
  std::string n = upper(name);
  using K = FetchAtt::Kind;
  FetchAtt att;
  auto simple = [&](K k) {
    att.kind = k;
    out.push_back(att);
    return true;
  };
  if (n == "ENVELOPE") return simple(K::kEnvelope);
  if (n == "FLAGS") return simple(K::kFlags);
  if (n == "INTERNALDATE") return simple(K::kInternalDate);
  if (n == "RFC822") return simple(K::kRfc822);
  if (n == "RFC822.HEADER") return simple(K::kRfc822Header);
  if (n == "RFC822.SIZE") return simple(K::kRfc822Size);
  if (n == "RFC822.TEXT") return simple(K::kRfc822Text);
  if (n == "BODYSTRUCTURE") return simple(K::kBodyStructure);
  if (n == "UID") return simple(K::kUid);
  if (n == "MODSEQ") return simple(K::kModSeq);
  if (n == "BODY" && c.peek() != '[') return simple(K::kBody);
  if (n == "BODY" || n == "BODY.PEEK") {
    att.kind = K::kBodySection;
    att.peek = n == "BODY.PEEK";
    if (!parse_section(c, att.section) || !parse_partial(c, att)) return false;
    out.push_back(att);
    return true;
  }
  if (n == "BINARY" || n == "BINARY.PEEK" || n == "BINARY.SIZE") {
    att.kind = n == "BINARY.SIZE" ? K::kBinarySize : K::kBinary;
    att.peek = n == "BINARY.PEEK";
    if (!parse_section(c, att.section)) return false;
    // RFC 3516 / RFC 9051: BINARY takes only part numbers.
    if (att.section.spec != Section::Spec::kNone) return c.fail("Invalid BINARY section");
    if (att.kind == K::kBinary && !parse_partial(c, att)) return false;
    out.push_back(att);
    return true;
  }
  return c.fail(n.empty() ? "Expected a fetch item" : "Unknown fetch item " + n);
}

bool parse_fetch(Cursor& c, FetchArgs& a) {
  std::optional<SequenceSet> set = c.sequence_set();
  if (!set || !c.sp()) return false;
  a.set = std::move(*set);
  using K = FetchAtt::Kind;
  if (c.consume('(')) {
    for (;;) {
      if (a.atts.size() >= 100) return c.fail("Too many fetch items");
      if (!parse_fetch_att(c, a.atts)) return false;
      if (c.consume(')')) break;
      if (!c.sp()) return false;
    }
  } else {
    // The macros (RFC 3501 6.4.5) only appear alone.
    Cursor save = c;
    std::string_view w = c.take_while([](char ch) { return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'); });
    std::string m = upper(w);
    auto att = [](K k) {
      FetchAtt f;
      f.kind = k;
      return f;
    };
    if ((m == "ALL" || m == "FAST" || m == "FULL") && (c.at_end() || c.peek() == ' ')) {
      a.atts = {att(K::kFlags), att(K::kInternalDate), att(K::kRfc822Size)};
      if (m != "FAST") a.atts.push_back(att(K::kEnvelope));
      if (m == "FULL") a.atts.push_back(att(K::kBody));
    } else {
      c = save;
      if (!parse_fetch_att(c, a.atts)) return false;
    }
  }
  if (c.at_end()) return true;
  // fetch-modifiers: SP "(" CHANGEDSINCE n [SP VANISHED] ")"
  if (!c.sp() || !c.expect('(')) return false;
  for (;;) {
    std::optional<std::string_view> m = c.atom();
    if (!m) return false;
    std::string mod = upper(*m);
    if (mod == "CHANGEDSINCE") {
      if (!c.sp()) return false;
      std::optional<uint64_t> v = c.number(UINT64_MAX);
      if (!v) return false;
      a.changed_since = *v;
    } else if (mod == "VANISHED") {
      a.vanished = true;
    } else {
      return c.fail("Unknown FETCH modifier " + mod);
    }
    if (c.consume(')')) break;
    if (!c.sp()) return false;
  }
  return c.end();
}

bool parse_search_key(Cursor& c, SearchKey& key, int depth);

bool parse_search_keys_until(Cursor& c, std::vector<SearchKey>& keys, int depth, bool in_paren) {
  for (;;) {
    if (keys.size() >= 1000) return c.fail("Too many search keys");
    keys.emplace_back();
    if (!parse_search_key(c, keys.back(), depth)) return false;
    if (in_paren && c.consume(')')) return true;
    if (!in_paren && c.at_end()) return true;
    if (!c.sp()) return false;
  }
}

bool parse_search_key(Cursor& c, SearchKey& key, int depth) {
  using Op = SearchKey::Op;
  if (depth > kMaxSearchDepth) return c.fail("Search program nested too deep");
  if (c.consume('(')) {
    key.op = Op::kAnd;
    return parse_search_keys_until(c, key.children, depth + 1, true);
  }
  char p = c.peek();
  if ((p >= '0' && p <= '9') || p == '*' || p == '$') {
    std::optional<SequenceSet> set = c.sequence_set();
    if (!set) return false;
    key.op = Op::kSeqSet;
    key.set = std::move(*set);
    return true;
  }
  std::optional<std::string_view> w = c.atom();
  if (!w) return c.fail("Expected a search key");
  std::string k = upper(*w);
  struct Simple {
    const char* name;
    Op op;
  };
  static const Simple kSimple[] = {
      {"ALL", Op::kAll},           {"ANSWERED", Op::kAnswered},     {"DELETED", Op::kDeleted},
      {"DRAFT", Op::kDraft},       {"FLAGGED", Op::kFlagged},       {"SEEN", Op::kSeen},
      {"RECENT", Op::kRecent},     {"NEW", Op::kNew},               {"OLD", Op::kOld},
      {"UNANSWERED", Op::kUnanswered}, {"UNDELETED", Op::kUndeleted}, {"UNDRAFT", Op::kUndraft},
      {"UNFLAGGED", Op::kUnflagged},   {"UNSEEN", Op::kUnseen},
  };
  for (const Simple& s : kSimple) {
    if (k == s.name) {
      key.op = s.op;
      return true;
    }
  }
  static const Simple kString[] = {
      {"BCC", Op::kBcc}, {"CC", Op::kCc}, {"FROM", Op::kFrom}, {"TO", Op::kTo},
      {"SUBJECT", Op::kSubject}, {"BODY", Op::kBody}, {"TEXT", Op::kText},
  };
  for (const Simple& s : kString) {
    if (k == s.name) {
      key.op = s.op;
      if (!c.sp()) return false;
      std::optional<std::string> v = c.astring();
      if (!v) return false;
      key.str = std::move(*v);
      return true;
    }
  }
  static const Simple kDate[] = {
      {"BEFORE", Op::kBefore}, {"ON", Op::kOn}, {"SINCE", Op::kSince},
      {"SENTBEFORE", Op::kSentBefore}, {"SENTON", Op::kSentOn}, {"SENTSINCE", Op::kSentSince},
  };
  for (const Simple& s : kDate) {
    if (k == s.name) {
      key.op = s.op;
      if (!c.sp()) return false;
      std::optional<std::string> v = c.peek() == '"' ? c.quoted() : std::optional<std::string>(std::string(c.take_while(is_atom_char)));
      if (!v) return false;
      std::optional<Date> d = parse_search_date(*v);
      if (!d) return c.fail("Invalid date");
      key.date = *d;
      return true;
    }
  }
  if (k == "KEYWORD" || k == "UNKEYWORD") {
    key.op = k == "KEYWORD" ? Op::kKeyword : Op::kUnkeyword;
    if (!c.sp()) return false;
    std::optional<std::string_view> a = c.atom();
    if (!a) return false;
    key.str = std::string(*a);
    return true;
  }
  if (k == "HEADER") {
    key.op = Op::kHeader;
    if (!c.sp()) return false;
    std::optional<std::string> f = c.astring();
    if (!f || !c.sp()) return false;
    std::optional<std::string> v = c.astring();
    if (!v) return false;
    key.header = std::move(*f);
    key.str = std::move(*v);
    return true;
  }
  if (k == "LARGER" || k == "SMALLER" || k == "OLDER" || k == "YOUNGER") {
    key.op = k == "LARGER" ? Op::kLarger : k == "SMALLER" ? Op::kSmaller : k == "OLDER" ? Op::kOlder : Op::kYounger;
    if (!c.sp()) return false;
    std::optional<uint64_t> n = c.number(k == "LARGER" || k == "SMALLER" ? UINT64_MAX : UINT32_MAX);
    if (!n) return false;
    key.number = *n;
    return true;
  }
  if (k == "UID") {
    key.op = Op::kUid;
    if (!c.sp()) return false;
    std::optional<SequenceSet> set = c.sequence_set();
    if (!set) return false;
    key.set = std::move(*set);
    return true;
  }
  if (k == "MODSEQ") {
    key.op = Op::kModSeq;
    if (!c.sp()) return false;
    if (c.peek() == '"') {  // entry-name entry-type-req: accepted and ignored
      if (!c.quoted() || !c.sp() || !c.atom() || !c.sp()) return false;
    }
    std::optional<uint64_t> n = c.number(UINT64_MAX);
    if (!n) return false;
    key.number = *n;
    return true;
  }
  if (k == "NOT") {
    key.op = Op::kNot;
    if (!c.sp()) return false;
    key.children.emplace_back();
    return parse_search_key(c, key.children.back(), depth + 1);
  }
  if (k == "OR") {
    key.op = Op::kOr;
    key.children.resize(2);
    if (!c.sp() || !parse_search_key(c, key.children[0], depth + 1)) return false;
    if (!c.sp()) return false;
    return parse_search_key(c, key.children[1], depth + 1);
  }
  return c.fail("Unknown search key " + k);
}

bool parse_search(Cursor& c, SearchArgs& a) {
  // [RETURN (opts)] [CHARSET cs] keys
  for (int round = 0; round < 2; ++round) {
    char p = c.peek();
    if (p != 'R' && p != 'r' && p != 'C' && p != 'c') break;
    // Peek the word without committing.
    Cursor probe = c;
    std::optional<std::string_view> w = probe.atom();
    if (!w) break;
    std::string word = upper(*w);
    if (word == "RETURN" && !a.return_given && !a.charset) {
      c = probe;
      a.return_given = true;
      if (!c.sp() || !c.expect('(')) return false;
      if (!c.consume(')')) {
        for (;;) {
          std::optional<std::string_view> o = c.atom();
          if (!o) return false;
          std::string opt = upper(*o);
          if (opt == "MIN") {
            a.ret_min = true;
          } else if (opt == "MAX") {
            a.ret_max = true;
          } else if (opt == "ALL") {
            a.ret_all = true;
          } else if (opt == "COUNT") {
            a.ret_count = true;
          } else if (opt == "SAVE") {
            a.ret_save = true;
          } else {
            return c.fail("Unknown SEARCH return option " + opt);
          }
          if (c.consume(')')) break;
          if (!c.sp()) return false;
        }
      }
      // RFC 4731 3.1: RETURN () is RETURN (ALL).
      if (!a.ret_min && !a.ret_max && !a.ret_all && !a.ret_count && !a.ret_save) a.ret_all = true;
      if (!c.sp()) return false;
      continue;
    }
    if (word == "CHARSET" && !a.charset) {
      c = probe;
      if (!c.sp()) return false;
      std::optional<std::string> cs = c.astring();
      if (!cs) return false;
      a.charset = std::move(*cs);
      if (!c.sp()) return false;
      continue;
    }
    break;
  }
  a.key.op = SearchKey::Op::kAnd;
  return parse_search_keys_until(c, a.key.children, 1, false);
}

bool parse_store(Cursor& c, StoreArgs& a) {
  std::optional<SequenceSet> set = c.sequence_set();
  if (!set || !c.sp()) return false;
  a.set = std::move(*set);
  if (c.consume('(')) {
    std::optional<std::string_view> m = c.atom();
    if (!m || !iequals(*m, "UNCHANGEDSINCE")) return c.fail("Unknown STORE modifier");
    if (!c.sp()) return false;
    std::optional<uint64_t> v = c.number(UINT64_MAX);
    if (!v) return false;
    a.unchanged_since = *v;
    if (!c.expect(')') || !c.sp()) return false;
  }
  if (c.consume('+')) {
    a.mode = StoreArgs::Mode::kAdd;
  } else if (c.consume('-')) {
    a.mode = StoreArgs::Mode::kRemove;
  }
  std::optional<std::string_view> w = c.atom();
  if (!w) return false;
  std::string item = upper(*w);
  if (item == "FLAGS.SILENT") {
    a.silent = true;
  } else if (item != "FLAGS") {
    return c.fail("Expected FLAGS");
  }
  if (!c.sp()) return false;
  if (c.peek() == '(') {
    std::optional<std::vector<std::string>> flags = c.flag_list();
    if (!flags) return false;
    a.flags = std::move(*flags);
  } else {
    for (;;) {
      std::optional<std::string> f = c.flag();
      if (!f) return false;
      if (a.flags.size() >= 1000) return c.fail("Too many flags");
      a.flags.push_back(std::move(*f));
      if (c.at_end()) break;
      if (!c.sp()) return false;
    }
  }
  return c.end();
}

bool parse_append(Cursor& c, AppendArgs& a) {
  if (!parse_mailbox(c, a.mailbox) || !c.sp()) return false;
  if (c.peek() == '(') {
    std::optional<std::vector<std::string>> flags = c.flag_list();
    if (!flags || !c.sp()) return false;
    a.flags = std::move(*flags);
  }
  if (c.peek() == '"') {
    std::optional<std::string> d = c.quoted();
    if (!d) return false;
    std::optional<DateTime> dt = parse_date_time(*d);
    if (!dt) return c.fail("Invalid date-time");
    a.internal_date = *dt;
    if (!c.sp()) return false;
  }
  std::optional<std::string_view> msg = c.literal(/*allow_binary=*/true, /*allow_nul=*/true, &a.binary, &a.spooled);
  if (!msg) return false;
  a.message = *msg;
  // MULTIAPPEND and CATENATE are not offered: one message per APPEND.
  return c.end();
}

bool parse_id(Cursor& c, IdArgs& a) {
  if (c.peek() != '(') {
    std::optional<std::string_view> w = c.atom();
    if (!w || !iequals(*w, "NIL")) return c.fail("Expected NIL or a list");
    return c.end();
  }
  c.consume('(');
  if (c.consume(')')) return c.end();
  for (;;) {
    std::optional<std::string> k = c.string();
    if (!k || !c.sp()) return false;
    std::optional<std::optional<std::string>> v = c.nstring();
    if (!v) return false;
    // RFC 2971 3.3: at most 30 pairs, fields of 30 octets, values of 1024.
    if (a.fields.size() >= 30 || k->size() > 30 || (*v && (*v)->size() > 1024)) return c.fail("ID field too long or too many");
    a.fields.emplace_back(std::move(*k), std::move(*v));
    if (c.consume(')')) break;
    if (!c.sp()) return false;
  }
  return c.end();
}

}  // namespace

const char* command_name(CommandName n) {
  switch (n) {
    case CommandName::kCapability: return "CAPABILITY";
    case CommandName::kNoop: return "NOOP";
    case CommandName::kLogout: return "LOGOUT";
    case CommandName::kStartTls: return "STARTTLS";
    case CommandName::kAuthenticate: return "AUTHENTICATE";
    case CommandName::kLogin: return "LOGIN";
    case CommandName::kEnable: return "ENABLE";
    case CommandName::kId: return "ID";
    case CommandName::kSelect: return "SELECT";
    case CommandName::kExamine: return "EXAMINE";
    case CommandName::kCreate: return "CREATE";
    case CommandName::kDelete: return "DELETE";
    case CommandName::kRename: return "RENAME";
    case CommandName::kSubscribe: return "SUBSCRIBE";
    case CommandName::kUnsubscribe: return "UNSUBSCRIBE";
    case CommandName::kList: return "LIST";
    case CommandName::kLsub: return "LSUB";
    case CommandName::kNamespace: return "NAMESPACE";
    case CommandName::kStatus: return "STATUS";
    case CommandName::kAppend: return "APPEND";
    case CommandName::kIdle: return "IDLE";
    case CommandName::kCheck: return "CHECK";
    case CommandName::kClose: return "CLOSE";
    case CommandName::kUnselect: return "UNSELECT";
    case CommandName::kExpunge: return "EXPUNGE";
    case CommandName::kSearch: return "SEARCH";
    case CommandName::kFetch: return "FETCH";
    case CommandName::kStore: return "STORE";
    case CommandName::kCopy: return "COPY";
    case CommandName::kMove: return "MOVE";
    case CommandName::kGetQuota: return "GETQUOTA";
    case CommandName::kGetQuotaRoot: return "GETQUOTAROOT";
    case CommandName::kSetQuota: return "SETQUOTA";
  }
  return "?";
}

std::string Section::to_string() const {
  std::string out;
  for (uint32_t n : part) {
    if (!out.empty()) out += '.';
    out += std::to_string(n);
  }
  const char* spec_name = nullptr;
  switch (spec) {
    case Spec::kNone: break;
    case Spec::kHeader: spec_name = "HEADER"; break;
    case Spec::kHeaderFields: spec_name = "HEADER.FIELDS"; break;
    case Spec::kHeaderFieldsNot: spec_name = "HEADER.FIELDS.NOT"; break;
    case Spec::kText: spec_name = "TEXT"; break;
    case Spec::kMime: spec_name = "MIME"; break;
  }
  if (spec_name) {
    if (!out.empty()) out += '.';
    out += spec_name;
  }
  if (spec == Spec::kHeaderFields || spec == Spec::kHeaderFieldsNot) {
    out += " (";
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i) out += ' ';
      // Echoed as the client wrote them (some clients compare the section text);
      // atoms when they can be, never with ']', which would end the section.
      const std::string& f = fields[i];
      bool atom = !f.empty() && std::all_of(f.begin(), f.end(), is_atom_char);
      if (atom) {
        out += f;
      } else {
        out += '"';
        for (char ch : f) {
          if (ch == '"' || ch == '\\') out += '\\';
          out += ch;
        }
        out += '"';
      }
    }
    out += ')';
  }
  return out;
}

int64_t DateTime::to_unix() const {
  return tern::common::mime::days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
         static_cast<int64_t>(zone) * 60;
}

std::optional<Date> parse_search_date(std::string_view s) {
  // date-text = date-day "-" date-month "-" date-year; date-day = 1*2DIGIT
  size_t d1 = s.find('-');
  if (d1 == std::string_view::npos || d1 == 0 || d1 > 2) return std::nullopt;
  size_t d2 = s.find('-', d1 + 1);
  if (d2 == std::string_view::npos || d2 - d1 - 1 != 3 || s.size() - d2 - 1 != 4) return std::nullopt;
  std::optional<uint64_t> day = tern::common::parse_u64(s.substr(0, d1));
  int month = tern::common::mime::parse_month_name(s.substr(d1 + 1, 3));
  std::optional<uint64_t> year = tern::common::parse_u64(s.substr(d2 + 1));
  if (!day || !month || !year || *year < 1) return std::nullopt;
  Date d{static_cast<int>(*year), month, static_cast<int>(*day)};
  if (d.day < 1 || d.day > tern::common::mime::days_in_month(d.year, d.month)) return std::nullopt;
  return d;
}

std::optional<DateTime> parse_date_time(std::string_view s) {
  // date-day-fixed "-" date-month "-" date-year SP time SP zone
  // date-day-fixed = (SP DIGIT) / 2DIGIT; a single digit is accepted too.
  if (!s.empty() && s[0] == ' ') s.remove_prefix(1);
  size_t sp1 = s.find(' ');
  if (sp1 == std::string_view::npos) return std::nullopt;
  std::optional<Date> d = parse_search_date(s.substr(0, sp1));
  if (!d) return std::nullopt;
  std::string_view rest = s.substr(sp1 + 1);
  if (rest.size() != 14 || rest[2] != ':' || rest[5] != ':' || rest[8] != ' ') return std::nullopt;
  auto two = [&](size_t i) -> int {
    if (rest[i] < '0' || rest[i] > '9' || rest[i + 1] < '0' || rest[i + 1] > '9') return -1;
    return (rest[i] - '0') * 10 + (rest[i + 1] - '0');
  };
  int hh = two(0), mm = two(3), ss = two(6);
  char sign = rest[9];
  int zh = two(10), zm = two(12);
  if (hh < 0 || hh > 23 || mm < 0 || mm > 59 || ss < 0 || ss > 60 || zh < 0 || zm < 0 || zm > 59 ||
      (sign != '+' && sign != '-')) {
    return std::nullopt;
  }
  DateTime dt;
  dt.year = d->year;
  dt.month = d->month;
  dt.day = d->day;
  dt.hour = hh;
  dt.minute = mm;
  dt.second = ss;
  dt.zone = (sign == '-' ? -1 : 1) * (zh * 60 + zm);
  return dt;
}

ParseResult parse_command(const RawCommand& raw) {
  Cursor c(raw);
  std::string_view tag = c.take_while(is_tag_char);
  if (tag.empty() || (!c.at_end() && c.peek() != ' ')) return ParseError{"", "Invalid tag"};
  Command cmd;
  cmd.tag = std::string(tag);
  auto error = [&](std::string msg) -> ParseResult { return ParseError{cmd.tag, std::move(msg)}; };
  if (!c.consume(' ')) return error("Missing command");
  std::optional<std::string_view> w = c.atom();
  if (!w) return error("Missing command");
  std::string name = upper(*w);
  if (name == "UID") {
    cmd.uid = true;
    if (!c.consume(' ')) return error("Missing UID command");
    std::optional<std::string_view> w2 = c.atom();
    if (!w2) return error("Missing UID command");
    name = upper(*w2);
    if (name != "FETCH" && name != "SEARCH" && name != "STORE" && name != "COPY" && name != "MOVE" &&
        name != "EXPUNGE") {
      return error("Unknown UID command");
    }
  }
  struct Entry {
    const char* name;
    CommandName id;
  };
  static const Entry kNames[] = {
      {"CAPABILITY", CommandName::kCapability}, {"NOOP", CommandName::kNoop},
      {"LOGOUT", CommandName::kLogout},         {"STARTTLS", CommandName::kStartTls},
      {"AUTHENTICATE", CommandName::kAuthenticate}, {"LOGIN", CommandName::kLogin},
      {"ENABLE", CommandName::kEnable},         {"ID", CommandName::kId},
      {"SELECT", CommandName::kSelect},         {"EXAMINE", CommandName::kExamine},
      {"CREATE", CommandName::kCreate},         {"DELETE", CommandName::kDelete},
      {"RENAME", CommandName::kRename},         {"SUBSCRIBE", CommandName::kSubscribe},
      {"UNSUBSCRIBE", CommandName::kUnsubscribe}, {"LIST", CommandName::kList},
      {"LSUB", CommandName::kLsub},             {"NAMESPACE", CommandName::kNamespace},
      {"STATUS", CommandName::kStatus},         {"APPEND", CommandName::kAppend},
      {"IDLE", CommandName::kIdle},             {"CHECK", CommandName::kCheck},
      {"CLOSE", CommandName::kClose},           {"UNSELECT", CommandName::kUnselect},
      {"EXPUNGE", CommandName::kExpunge},       {"SEARCH", CommandName::kSearch},
      {"FETCH", CommandName::kFetch},           {"STORE", CommandName::kStore},
      {"COPY", CommandName::kCopy},             {"MOVE", CommandName::kMove},
      {"GETQUOTA", CommandName::kGetQuota},     {"GETQUOTAROOT", CommandName::kGetQuotaRoot},
      {"SETQUOTA", CommandName::kSetQuota},
  };
  const Entry* found = nullptr;
  for (const Entry& e : kNames) {
    if (name == e.name) found = &e;
  }
  if (!found) return error("Unknown command " + name.substr(0, 32));
  cmd.name = found->id;

  bool ok = true;
  switch (cmd.name) {
    case CommandName::kCapability:
    case CommandName::kNoop:
    case CommandName::kLogout:
    case CommandName::kStartTls:
    case CommandName::kNamespace:
    case CommandName::kIdle:
    case CommandName::kCheck:
    case CommandName::kClose:
    case CommandName::kUnselect:
      ok = c.end();
      break;
    case CommandName::kExpunge: {
      ExpungeArgs a;
      if (cmd.uid) {
        ok = c.sp();
        if (ok) {
          std::optional<SequenceSet> set = c.sequence_set();
          ok = set.has_value() && c.end();
          if (ok) a.uids = std::move(*set);
        }
      } else {
        ok = c.end();
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kAuthenticate: {
      AuthenticateArgs a;
      std::optional<std::string_view> mech;
      ok = c.sp() && (mech = c.atom()).has_value();
      if (ok) {
        a.mechanism = upper(*mech);
        if (!c.at_end()) {
          ok = c.sp();
          // SASL-IR (RFC 4959): base64 or "=" for an empty response.
          std::string_view ir = c.take_while([](char ch) {
            return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' ||
                   ch == '/' || ch == '=';
          });
          if (ok && ir.empty()) ok = c.fail("Invalid initial response");
          if (ok) a.initial_response = std::string(ir);
        }
        ok = ok && c.end();
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kLogin: {
      LoginArgs a;
      std::optional<std::string> u, p;
      ok = c.sp() && (u = c.astring()).has_value() && c.sp() && (p = c.astring()).has_value() && c.end();
      if (ok) {
        a.user = std::move(*u);
        a.password = std::move(*p);
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kEnable: {
      EnableArgs a;
      ok = c.sp();
      while (ok) {
        std::optional<std::string_view> cap = c.atom();
        if (!cap) {
          ok = false;
          break;
        }
        if (a.capabilities.size() >= 32) {
          ok = c.fail("Too many capabilities");
          break;
        }
        a.capabilities.push_back(upper(*cap));
        if (c.at_end()) break;
        ok = c.sp();
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kId: {
      IdArgs a;
      ok = c.sp() && parse_id(c, a);
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kSelect:
    case CommandName::kExamine: {
      MailboxArgs a;
      ok = c.sp() && parse_mailbox(c, a.mailbox);
      if (ok && !c.at_end()) {
        std::optional<std::vector<std::string>> params;
        ok = c.sp() && (params = parse_atom_list(c, 8)).has_value() && c.end();
        if (ok) {
          for (const std::string& p : *params) {
            if (p == "CONDSTORE") {
              a.condstore = true;
            } else {
              ok = c.fail("Unknown select parameter " + p);
            }
          }
        }
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kCreate:
    case CommandName::kDelete:
    case CommandName::kSubscribe:
    case CommandName::kUnsubscribe:
    case CommandName::kGetQuotaRoot: {
      MailboxArgs a;
      ok = c.sp() && parse_mailbox(c, a.mailbox) && c.end();
      if (cmd.name == CommandName::kGetQuotaRoot) {
        cmd.args = QuotaArgs{std::move(a.mailbox)};
      } else {
        cmd.args = std::move(a);
      }
      break;
    }
    case CommandName::kGetQuota: {
      QuotaArgs a;
      ok = c.sp() && parse_mailbox(c, a.root) && c.end();
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kSetQuota: {
      QuotaArgs a;
      // Parsed far enough to answer; the session refuses to change quotas.
      ok = c.sp() && parse_mailbox(c, a.root) && c.sp() && c.expect('(');
      if (ok && !c.consume(')')) {
        for (;;) {
          if (!c.atom() || !c.sp() || !c.number(UINT64_MAX)) {
            ok = false;
            break;
          }
          if (c.consume(')')) break;
          if (!c.sp()) {
            ok = false;
            break;
          }
        }
      }
      ok = ok && c.end();
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kRename: {
      RenameArgs a;
      ok = c.sp() && parse_mailbox(c, a.from) && c.sp() && parse_mailbox(c, a.to) && c.end();
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kList:
    case CommandName::kLsub: {
      ListArgs a;
      a.lsub = cmd.name == CommandName::kLsub;
      if (a.lsub) {
        std::optional<std::string> p;
        ok = c.sp() && parse_mailbox(c, a.reference) && c.sp() && (p = c.list_mailbox()).has_value() && c.end();
        if (ok) a.patterns.push_back(std::move(*p));
      } else {
        ok = c.sp() && parse_list(c, a);
      }
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kStatus: {
      StatusArgs a;
      std::optional<std::vector<std::string>> items;
      ok = c.sp() && parse_mailbox(c, a.mailbox) && c.sp() && (items = parse_status_items(c)).has_value() && c.end();
      if (ok) a.items = std::move(*items);
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kAppend: {
      AppendArgs a;
      ok = c.sp() && parse_append(c, a);
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kSearch: {
      SearchArgs a;
      ok = c.sp() && parse_search(c, a);
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kFetch: {
      FetchArgs a;
      ok = c.sp() && parse_fetch(c, a);
      if (!ok && c.ok()) c.fail("Invalid fetch items");
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kStore: {
      StoreArgs a;
      ok = c.sp() && parse_store(c, a);
      cmd.args = std::move(a);
      break;
    }
    case CommandName::kCopy:
    case CommandName::kMove: {
      CopyArgs a;
      std::optional<SequenceSet> set;
      ok = c.sp() && (set = c.sequence_set()).has_value() && c.sp() && parse_mailbox(c, a.mailbox) && c.end();
      if (ok) a.set = std::move(*set);
      cmd.args = std::move(a);
      break;
    }
  }
  if (!ok || !c.ok()) return error(c.error().empty() ? std::string("Invalid arguments") : c.error());
  return cmd;
}

}  // namespace tern::mra::imap
