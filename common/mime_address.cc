#include "common/mime_address.h"

#include "common/mime_header.h"

namespace tern::common::mime {

namespace {

using Kind = FieldLexer::Kind;
using Token = FieldLexer::Token;

bool is_special(const Token& t, char c) { return t.kind == Kind::kSpecial && t.text.size() == 1 && t.text[0] == c; }

bool is_word(const Token& t) { return t.kind == Kind::kAtom || t.kind == Kind::kQuoted; }

// True when the local part can stand as a dot-atom; otherwise it needs quotes.
bool is_dot_atom(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  char prev = 0;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '.' && prev == '.') return false;
    if (u <= 32 || u == 127) return false;
    switch (c) {
      case '(': case ')': case '<': case '>': case '[': case ']': case ':': case ';':
      case '@': case '\\': case ',': case '"':
        return false;
      default:
        break;
    }
    prev = c;
  }
  return true;
}

class Parser {
 public:
  Parser(std::string_view raw, size_t max) : lex_(raw), max_(max) {}

  std::vector<Address> run() {
    bool in_group = false;
    for (;;) {
      if (out_.size() >= max_) break;
      Token t = lex_.peek();
      if (t.kind == Kind::kEnd) break;
      if (is_special(t, ',')) {
        lex_.next();
        continue;
      }
      if (is_special(t, ';')) {
        lex_.next();
        if (in_group) {
          push(Address{Address::Kind::kGroupEnd, {}, {}, {}, {}});
          in_group = false;
        }
        continue;
      }
      std::vector<Token> words = collect_phrase();
      t = lex_.peek();
      if (is_special(t, '<')) {
        lex_.next();
        Address a;
        a.name = join_phrase(words);
        parse_angle(a);
        push_mailbox(std::move(a));
      } else if (is_special(t, ':')) {
        lex_.next();
        if (!in_group) {
          Address g;
          g.kind = Address::Kind::kGroupStart;
          g.mailbox = join_phrase(words);
          push(std::move(g));
          in_group = true;
        }
      } else if (is_special(t, '@')) {
        lex_.next();
        Address a;
        a.mailbox = join_local(words);
        a.host = parse_domain();
        push_mailbox(std::move(a));
      } else if (!words.empty()) {
        Address a;  // a local part alone: "undisclosed-recipients", "root"
        a.mailbox = join_local(words);
        push_mailbox(std::move(a));
      }
    }
    if (in_group && out_.size() < max_) push(Address{Address::Kind::kGroupEnd, {}, {}, {}, {}});
    return std::move(out_);
  }

 private:
  void push(Address a) {
    if (out_.size() < max_) out_.push_back(std::move(a));
  }
  void push_mailbox(Address a) {
    if (a.mailbox.empty() && a.host.empty()) return;  // "<>" and friends carry no address
    push(std::move(a));
  }

  // Words (atoms, quoted strings) up to a structural special. Stray specials are
  // consumed and dropped so that every loop iteration makes progress.
  std::vector<Token> collect_phrase() {
    std::vector<Token> words;
    for (;;) {
      Token t = lex_.peek();
      if (t.kind == Kind::kEnd) break;
      if (is_word(t) || t.kind == Kind::kDomainLiteral) {
        if (words.size() < 256) words.push_back(t);  // bound for absurd phrases
        lex_.next();
        continue;
      }
      if (is_special(t, '<') || is_special(t, ':') || is_special(t, '@') || is_special(t, ',') ||
          is_special(t, ';')) {
        break;
      }
      lex_.next();  // junk: '>', ')', '\\', control bytes
    }
    return words;
  }

  static std::string join_phrase(const std::vector<Token>& words) {
    std::string s;
    for (const Token& w : words) {
      if (!s.empty()) s += ' ';
      s += w.text;
    }
    return s;
  }

  static std::string join_local(const std::vector<Token>& words) {
    std::string s;
    for (const Token& w : words) s += w.text;
    return s;
  }

  std::string parse_domain() {
    std::string d;
    for (;;) {
      Token t = lex_.peek();
      if (t.kind == Kind::kAtom || t.kind == Kind::kDomainLiteral) {
        if (!d.empty() && t.space_before) break;  // "a@b c": c is not part of the domain
        d += t.text;
        lex_.next();
        continue;
      }
      break;
    }
    // Skip whatever else precedes the next separator.
    for (;;) {
      Token t = lex_.peek();
      if (t.kind == Kind::kEnd || is_special(t, ',') || is_special(t, ';')) break;
      lex_.next();
    }
    return d;
  }

  // After '<': [route ":"] local "@" domain ">".
  void parse_angle(Address& a) {
    Token t = lex_.peek();
    if (is_special(t, '@')) {  // obs-route: "@a,@b:"
      std::string route;
      for (;;) {
        t = lex_.peek();
        if (t.kind == Kind::kEnd || is_special(t, '>')) break;
        lex_.next();
        if (is_special(t, ':')) break;
        if (route.size() < 1024) route += t.text;
      }
      a.route = route;
    }
    std::string local;
    for (;;) {
      t = lex_.peek();
      if (t.kind == Kind::kEnd || is_special(t, '>') || is_special(t, '@') || is_special(t, ',')) break;
      lex_.next();
      if (is_word(t)) local += t.text;
    }
    a.mailbox = local;
    if (is_special(lex_.peek(), '@')) {
      lex_.next();
      std::string d;
      for (;;) {
        t = lex_.peek();
        if (t.kind == Kind::kEnd || is_special(t, '>') || is_special(t, ',')) break;
        lex_.next();
        if (t.kind == Kind::kAtom || t.kind == Kind::kDomainLiteral) d += t.text;
      }
      a.host = d;
    }
    if (is_special(lex_.peek(), '>')) lex_.next();
    // Anything after '>' up to the separator is junk ("<a@b> (comment) junk").
    for (;;) {
      t = lex_.peek();
      if (t.kind == Kind::kEnd || is_special(t, ',') || is_special(t, ';')) break;
      lex_.next();
    }
  }

  FieldLexer lex_;
  size_t max_;
  std::vector<Address> out_;
};

}  // namespace

std::string Address::addr_spec() const {
  std::string local;
  if (is_dot_atom(mailbox)) {
    local = mailbox;
  } else {
    local = "\"";
    for (char c : mailbox) {
      if (c == '"' || c == '\\') local += '\\';
      local += c;
    }
    local += '"';
  }
  if (host.empty()) return local;
  return local + "@" + host;
}

std::vector<Address> parse_address_list(std::string_view raw, size_t max_addresses) {
  return Parser(raw, max_addresses).run();
}

std::string address_display(const Address& a) {
  switch (a.kind) {
    case Address::Kind::kGroupStart:
      return decode_header_text(a.mailbox) + ":";
    case Address::Kind::kGroupEnd:
      return ";";
    case Address::Kind::kMailbox:
      break;
  }
  if (a.name.empty()) return a.addr_spec();
  return decode_header_text(a.name) + " <" + a.addr_spec() + ">";
}

}  // namespace tern::common::mime
