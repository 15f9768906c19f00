// TEST FIXTURE: a strict checker of IMAP server output against the formal syntax of
// RFC 3501 section 9 and RFC 9051 section 9 (with the extensions Tern sends: ESEARCH,
// ENABLE, ID, NAMESPACE, QUOTA, LIST-EXTENDED, CONDSTORE, BINARY, UIDPLUS codes).
//
// Written from the RFC grammar, independently of the renderer, so the session and
// renderer tests (and the imap_session fuzzer) check that whatever Tern sends is
// something Thunderbird, mutt, iOS Mail or mbsync can parse: balanced structures,
// exact BODYSTRUCTURE member lists, literal sizes that match, no NUL outside literal8,
// no 8-bit in quoted strings unless IMAP4rev2 was enabled. It is a test tool, not
// part of the server.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

namespace tern::mra::testing {

class ResponseChecker {
 public:
  // Checks a complete server output (any number of responses); "" when it conforms,
  // else what and where.
  static std::string check(std::string_view out, bool utf8 = false) {
    ResponseChecker c(out, utf8);
    while (c.i_ < c.s_.size()) {
      if (!c.response()) return c.err_ + " at offset " + std::to_string(c.i_) + ": " + c.context();
    }
    return "";
  }

 private:
  ResponseChecker(std::string_view s, bool utf8) : s_(s), utf8_(utf8) {}

  std::string context() const {
    size_t b = i_ > 40 ? i_ - 40 : 0;
    std::string c(s_.substr(b, 80));
    for (char& ch : c) {
      if (ch == '\r') ch = '|';
      if (ch == '\n') ch = '|';
    }
    return c;
  }
  bool fail(const char* what) {
    if (err_.empty()) err_ = what;
    return false;
  }
  char peek(size_t k = 0) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool expect(char c) { return eat(c) || fail("unexpected character"); }
  bool sp() { return eat(' ') || fail("expected SP"); }
  bool crlf() { return (eat('\r') && eat('\n')) || fail("expected CRLF"); }
  static char up(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }
  // A keyword, case-insensitive, not followed by more atom characters.
  bool word(const char* w) {
    size_t n = std::strlen(w);
    if (i_ + n > s_.size()) return false;
    for (size_t k = 0; k < n; ++k) {
      if (up(s_[i_ + k]) != up(w[k])) return false;
    }
    // A section ('[') may follow a fetch item name directly.
    if (i_ + n < s_.size() && atom_char(s_[i_ + n]) && s_[i_ + n] != '[') return false;
    i_ += n;
    return true;
  }
  static bool atom_char(char c) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
    return std::strchr("(){%*\"\\]", c) == nullptr;
  }
  bool atom() {
    size_t b = i_;
    while (i_ < s_.size() && atom_char(s_[i_])) ++i_;
    return i_ > b || fail("expected atom");
  }
  bool number() {
    size_t b = i_;
    while (peek() >= '0' && peek() <= '9') ++i_;
    return i_ > b || fail("expected number");
  }
  bool nz_number() {
    if (peek() == '0') return fail("expected nz-number");
    return number();
  }
  bool utf8_tail(size_t n) {
    for (size_t k = 0; k < n; ++k) {
      if ((static_cast<unsigned char>(peek()) & 0xC0) != 0x80) return fail("bad UTF-8 in quoted string");
      ++i_;
    }
    return true;
  }
  bool quoted() {
    if (!eat('"')) return fail("expected quoted string");
    for (;;) {
      if (i_ >= s_.size()) return fail("unterminated quoted string");
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c == '\\') {
        ++i_;
        if (peek() != '"' && peek() != '\\') return fail("bad escape in quoted string");
        ++i_;
        continue;
      }
      if (c == 0 || c == '\r' || c == '\n') return fail("CR, LF or NUL in quoted string");
      ++i_;
      if (c >= 0x80) {
        // RFC 9051 / RFC 6855: UTF-8 only after ENABLE IMAP4rev2.
        if (!utf8_) return fail("8-bit character in quoted string (IMAP4rev1)");
        if (c >= 0xC2 && c <= 0xDF) {
          if (!utf8_tail(1)) return false;
        } else if (c >= 0xE0 && c <= 0xEF) {
          if (!utf8_tail(2)) return false;
        } else if (c >= 0xF0 && c <= 0xF4) {
          if (!utf8_tail(3)) return false;
        } else {
          return fail("bad UTF-8 in quoted string");
        }
      }
    }
  }
  bool literal(bool binary_ok) {
    bool binary = false;
    if (binary_ok && eat('~')) binary = true;
    if (!expect('{')) return false;
    size_t b = i_;
    if (!number()) return false;
    size_t n = std::stoul(std::string(s_.substr(b, i_ - b)));
    if (!expect('}') || !crlf()) return false;
    if (i_ + n > s_.size()) return fail("literal longer than the output");
    if (!binary && s_.substr(i_, n).find('\0') != std::string_view::npos) return fail("NUL in literal");
    i_ += n;
    return true;
  }
  bool string() {
    if (peek() == '"') return quoted();
    if (peek() == '{') return literal(false);
    return fail("expected string");
  }
  bool nil() { return word("NIL"); }
  bool nstring() { return nil() || string(); }
  bool astring() {
    if (peek() == '"' || peek() == '{') return string();
    size_t b = i_;
    while (i_ < s_.size() && (atom_char(s_[i_]) || s_[i_] == ']')) ++i_;
    return i_ > b || fail("expected astring");
  }
  bool flag(bool perm) {
    if (eat('\\')) {
      if (perm && eat('*')) return true;
      return atom();
    }
    return atom();
  }
  bool flag_list(bool perm = false) {
    if (!expect('(')) return false;
    if (eat(')')) return true;
    for (;;) {
      if (!flag(perm)) return false;
      if (eat(')')) return true;
      if (!sp()) return false;
    }
  }
  // resp-text = ["[" resp-text-code "]" SP] text
  bool resp_text() {
    if (eat('[')) {
      if (!atom()) return false;
      int depth = 0;
      while (i_ < s_.size() && !(s_[i_] == ']' && depth == 0)) {
        char c = s_[i_];
        if (c == '\r' || c == '\n') return fail("unterminated response code");
        if (c == '(') ++depth;
        if (c == ')') --depth;
        ++i_;
      }
      if (!expect(']')) return false;
      if (peek() == '\r') return true;  // RFC 9051 allows the text to be empty
      if (!sp()) return false;
    }
    size_t b = i_;
    while (i_ < s_.size() && s_[i_] != '\r' && s_[i_] != '\n') {
      if (s_[i_] == '\0') return fail("NUL in text");
      ++i_;
    }
    return i_ > b || fail("empty text");
  }
  bool date_time() {
    // DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
    std::string_view v = s_.substr(i_);
    if (v.size() < 28 || v[0] != '"' || v[27] != '"') return fail("bad date-time");
    auto d = [&](size_t k) { return v[k] >= '0' && v[k] <= '9'; };
    bool ok = (v[1] == ' ' || d(1)) && d(2) && v[3] == '-' && v[7] == '-' && d(8) && d(9) && d(10) && d(11) &&
              v[12] == ' ' && d(13) && d(14) && v[15] == ':' && d(16) && d(17) && v[18] == ':' && d(19) && d(20) &&
              v[21] == ' ' && (v[22] == '+' || v[22] == '-') && d(23) && d(24) && d(25) && d(26);
    static const char* kMonths = "JanFebMarAprMayJunJulAugSepOctNovDec";
    bool month = false;
    for (int m = 0; m < 12; ++m) month = month || v.substr(4, 3) == std::string_view(kMonths + 3 * m, 3);
    if (!ok || !month) return fail("bad date-time");
    i_ += 28;
    return true;
  }
  bool address() {
    return expect('(') && nstring() && sp() && nstring() && sp() && nstring() && sp() && nstring() && expect(')');
  }
  bool address_list() {
    if (nil()) return true;
    if (!expect('(')) return false;
    do {
      if (!address()) return false;
    } while (peek() == '(');
    return expect(')');
  }
  bool envelope() {
    if (!expect('(') || !nstring() || !sp() || !nstring()) return false;
    for (int k = 0; k < 6; ++k) {
      if (!sp() || !address_list()) return false;
    }
    return sp() && nstring() && sp() && nstring() && expect(')');
  }
  bool body_fld_param() {
    if (nil()) return true;
    if (!expect('(')) return false;
    for (;;) {
      if (!string() || !sp() || !string()) return false;
      if (eat(')')) return true;
      if (!sp()) return false;
    }
  }
  bool body_fld_dsp() {
    if (nil()) return true;
    return expect('(') && string() && sp() && body_fld_param() && expect(')');
  }
  bool body_fld_lang() {
    if (peek() != '(') return nstring();
    ++i_;
    for (;;) {
      if (!string()) return false;
      if (eat(')')) return true;
      if (!sp()) return false;
    }
  }
  // body-extension: nstring / number / "(" body-extension *(SP body-extension) ")"
  bool body_extension() {
    if (peek() >= '0' && peek() <= '9') return number();
    if (peek() != '(') return nstring();
    ++i_;
    for (;;) {
      if (!body_extension()) return false;
      if (eat(')')) return true;
      if (!sp()) return false;
    }
  }
  // [SP dsp [SP lang [SP loc *(SP body-extension)]]] after md5 or params
  bool ext_tail() {
    if (peek() != ' ') return true;
    if (!sp() || !body_fld_dsp()) return false;
    if (peek() != ' ') return true;
    if (!sp() || !body_fld_lang()) return false;
    if (peek() != ' ') return true;
    if (!sp() || !nstring()) return false;
    while (peek() == ' ') {
      if (!sp() || !body_extension()) return false;
    }
    return true;
  }
  bool quoted_word_is(std::string_view q, const char* w) {
    if (q.size() != std::strlen(w) + 2) return false;
    for (size_t k = 0; k < std::strlen(w); ++k) {
      if (up(q[k + 1]) != w[k]) return false;
    }
    return true;
  }
  bool body(int depth = 0) {
    if (depth > 120) return fail("body nested too deep");
    if (!expect('(')) return false;
    if (peek() == '(') {
      // body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
      while (peek() == '(') {
        if (!body(depth + 1)) return false;
      }
      if (!sp() || !string()) return false;
      if (peek() == ' ') {
        if (!sp() || !body_fld_param() || !ext_tail()) return false;
      }
      return expect(')');
    }
    size_t tb = i_;
    if (!string()) return false;
    std::string_view type = s_.substr(tb, i_ - tb);
    size_t sb = i_ + 1;
    if (!sp() || !string()) return false;
    std::string_view sub = s_.substr(sb, i_ - sb);
    // body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP body-fld-octets
    if (!sp() || !body_fld_param() || !sp() || !nstring() || !sp() || !nstring() || !sp() || !string() || !sp() ||
        !number()) {
      return false;
    }
    if (quoted_word_is(type, "MESSAGE") && (quoted_word_is(sub, "RFC822") || quoted_word_is(sub, "GLOBAL"))) {
      if (!sp() || !envelope() || !sp() || !body(depth + 1) || !sp() || !number()) return false;
    } else if (quoted_word_is(type, "TEXT")) {
      if (!sp() || !number()) return false;
    }
    if (peek() == ' ') {  // body-ext-1part = body-fld-md5 [...]
      if (!sp() || !nstring() || !ext_tail()) return false;
    }
    return expect(')');
  }
  bool section() {
    if (!expect('[')) return false;
    while (peek() >= '1' && peek() <= '9') {
      if (!nz_number()) return false;
      if (!eat('.')) break;
    }
    if (word("HEADER.FIELDS.NOT") || word("HEADER.FIELDS")) {
      if (!sp() || !expect('(')) return false;
      for (;;) {
        if (!astring()) return false;
        if (eat(')')) break;
        if (!sp()) return false;
      }
    } else {
      (void)(word("HEADER") || word("TEXT") || word("MIME"));
    }
    return expect(']');
  }
  bool partial_origin() {
    if (!eat('<')) return true;
    return number() && expect('>');
  }
  bool msg_att() {
    if (!expect('(')) return false;
    for (;;) {
      if (word("FLAGS")) {
        if (!sp() || !flag_list()) return false;
      } else if (word("ENVELOPE")) {
        if (!sp() || !envelope()) return false;
      } else if (word("INTERNALDATE")) {
        if (!sp() || !date_time()) return false;
      } else if (word("RFC822.SIZE")) {
        if (!sp() || !number()) return false;
      } else if (word("RFC822.HEADER") || word("RFC822.TEXT") || word("RFC822")) {
        if (!sp() || !nstring()) return false;
      } else if (word("BODYSTRUCTURE")) {
        if (!sp() || !body()) return false;
      } else if (word("BINARY.SIZE")) {
        if (!section() || !sp() || !number()) return false;
      } else if (word("BINARY")) {
        if (!section() || !partial_origin() || !sp()) return false;
        if (!nil() && !(peek() == '~' ? literal(true) : string())) return false;
      } else if (word("BODY")) {
        if (peek() == '[') {
          if (!section() || !partial_origin() || !sp() || !nstring()) return false;
        } else if (!sp() || !body()) {
          return false;
        }
      } else if (word("UID")) {
        if (!sp() || !nz_number()) return false;
      } else if (word("MODSEQ")) {
        if (!sp() || !expect('(') || !number() || !expect(')')) return false;
      } else {
        return fail("unknown FETCH item");
      }
      if (eat(')')) return true;
      if (!sp()) return false;
    }
  }
  bool mailbox_list() {
    if (!flag_list() || !sp()) return false;
    if (!nil()) {
      // DQUOTE QUOTED-CHAR DQUOTE
      if (!eat('"')) return fail("bad hierarchy delimiter");
      if (eat('\\')) {
        if (!eat('"') && !eat('\\')) return fail("bad hierarchy delimiter");
      } else if (!atom_char(peek()) && peek() != ' ') {
        return fail("bad hierarchy delimiter");
      } else {
        ++i_;
      }
      if (!expect('"')) return false;
    }
    if (!sp() || !astring()) return false;
    if (peek() == ' ') {  // mbox-list-extended = "(" [item *(SP item)] ")"
      if (!sp() || !expect('(')) return false;
      if (eat(')')) return true;
      for (;;) {
        if (!astring() || !sp() || !body_extension()) return false;
        if (eat(')')) break;
        if (!sp()) return false;
      }
    }
    return true;
  }
  bool sequence_set() {
    size_t b = i_;
    while ((peek() >= '0' && peek() <= '9') || peek() == ':' || peek() == ',' || peek() == '*') ++i_;
    return i_ > b || fail("expected sequence set");
  }
  bool untagged() {
    if (word("OK") || word("NO") || word("BAD") || word("BYE") || word("PREAUTH")) return sp() && resp_text();
    if (word("CAPABILITY")) {
      bool rev1 = false;
      while (peek() == ' ') {
        ++i_;
        size_t b = i_;
        if (!atom()) return false;
        rev1 = rev1 || s_.substr(b, i_ - b) == "IMAP4rev1";
      }
      return rev1 || fail("CAPABILITY without IMAP4rev1");
    }
    if (word("FLAGS")) return sp() && flag_list();
    if (word("LIST") || word("LSUB")) return sp() && mailbox_list();
    if (word("STATUS")) {
      if (!sp() || !astring() || !sp() || !expect('(')) return false;
      if (eat(')')) return true;
      for (;;) {
        if (!atom() || !sp() || !number()) return false;
        if (eat(')')) return true;
        if (!sp()) return false;
      }
    }
    if (word("SEARCH")) {
      while (peek() == ' ') {
        ++i_;
        if (eat('(')) return word("MODSEQ") && sp() && number() && expect(')');
        if (!nz_number()) return false;
      }
      return true;
    }
    if (word("ESEARCH")) {
      if (peek() == ' ' && peek(1) == '(') {
        i_ += 2;
        if (!word("TAG") || !sp() || !string() || !expect(')')) return false;
      }
      if (peek() == ' ' && (peek(1) == 'U' || peek(1) == 'u') && (peek(2) == 'I' || peek(2) == 'i')) {
        ++i_;
        if (!word("UID")) return fail("bad ESEARCH");
      }
      while (peek() == ' ') {
        ++i_;
        if (word("MIN") || word("MAX")) {
          if (!sp() || !nz_number()) return false;
        } else if (word("COUNT") || word("MODSEQ")) {
          if (!sp() || !number()) return false;
        } else if (word("ALL")) {
          if (!sp() || !sequence_set()) return false;
        } else {
          return fail("bad ESEARCH return data");
        }
      }
      return true;
    }
    if (word("ENABLED")) {
      while (peek() == ' ') {
        ++i_;
        if (!atom()) return false;
      }
      return true;
    }
    if (word("ID")) {
      if (!sp()) return false;
      if (nil()) return true;
      if (!expect('(')) return false;
      for (;;) {
        if (!string() || !sp() || !nstring()) return false;
        if (eat(')')) return true;
        if (!sp()) return false;
      }
    }
    if (word("NAMESPACE")) {
      for (int k = 0; k < 3; ++k) {
        if (!sp()) return false;
        if (nil()) continue;
        if (!expect('(')) return false;
        do {
          if (!expect('(') || !string() || !sp()) return false;
          if (!nil() && !quoted()) return false;
          if (!expect(')')) return false;
        } while (peek() == '(');
        if (!expect(')')) return false;
      }
      return true;
    }
    if (word("QUOTAROOT")) {
      if (!sp() || !astring()) return false;
      while (peek() == ' ') {
        ++i_;
        if (!astring()) return false;
      }
      return true;
    }
    if (word("QUOTA")) {
      if (!sp() || !astring() || !sp() || !expect('(')) return false;
      if (eat(')')) return true;
      for (;;) {
        if (!atom() || !sp() || !number() || !sp() || !number()) return false;
        if (eat(')')) return true;
        if (!sp()) return false;
      }
    }
    if (peek() >= '0' && peek() <= '9') {
      if (!number() || !sp()) return false;
      if (word("EXISTS") || word("RECENT") || word("EXPUNGE")) return true;
      if (word("FETCH")) return sp() && msg_att();
      return fail("unknown message data");
    }
    return fail("unknown untagged response");
  }
  bool response() {
    if (eat('+')) {
      // continue-req = "+" SP (resp-text / base64) CRLF
      if (!sp()) return false;
      while (i_ < s_.size() && s_[i_] != '\r') ++i_;
      return crlf();
    }
    if (eat('*')) {
      if (!sp() || !untagged()) return false;
      if (err_.empty() && peek() != '\r') return fail("junk at the end of a response");
      if (untagged_enables_utf8()) utf8_ = true;
      return crlf();
    }
    // tagged: tag SP resp-cond-state
    size_t b = i_;
    while (i_ < s_.size() && (atom_char(s_[i_]) || s_[i_] == ']') && s_[i_] != '+') ++i_;
    if (i_ == b) return fail("expected a tag, '*' or '+'");
    if (!sp()) return false;
    if (!(word("OK") || word("NO") || word("BAD"))) return fail("tagged response without OK/NO/BAD");
    return sp() && resp_text() && crlf();
  }
  bool untagged_enables_utf8() const {
    // "* ENABLED ... IMAP4rev2" switches the client into UTF-8 mode (RFC 9051).
    size_t line = s_.rfind("* ENABLED", i_);
    return line != std::string_view::npos && s_.substr(line, i_ - line).find("IMAP4rev2") != std::string_view::npos &&
           s_.substr(line, i_ - line).find('\n') == std::string_view::npos;
  }

  std::string_view s_;
  size_t i_ = 0;
  bool utf8_;
  std::string err_;
};

}  // namespace tern::mra::testing
