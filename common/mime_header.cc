#include "common/mime_header.h"

#include <algorithm>
#include <map>

#include "common/mime_charset.h"
#include "common/mime_decode.h"

namespace tern::common::mime {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// RFC 5322 ftext: printable US-ASCII except colon.
bool valid_field_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 33 || u > 126 || c == ':') return false;
  }
  return true;
}

// Text that is not an encoded-word: UTF-8 as it is, anything else as windows-1252.
void append_raw_text(std::string& out, std::string_view text) {
  if (is_valid_utf8(text)) {
    out.append(text);
  } else {
    out += to_utf8_lenient("windows-1252", text);
  }
}

struct EncodedWord {
  std::string charset;  // without an RFC 2231 "*lang" suffix
  std::string bytes;    // decoded, in `charset`
  size_t length = 0;    // bytes of the word in the input
};

// Parses an encoded-word "=?charset?e?text?=" at s[i] (RFC 2047 2). Lenient: any
// length, blanks allowed inside the text (some mailers do that).
std::optional<EncodedWord> parse_encoded_word(std::string_view s, size_t i) {
  if (s.substr(i, 2) != "=?") return std::nullopt;
  size_t cs_begin = i + 2;
  size_t q1 = s.find('?', cs_begin);
  if (q1 == std::string_view::npos || q1 == cs_begin || q1 - cs_begin > 80) return std::nullopt;
  if (q1 + 3 > s.size() || s[q1 + 2] != '?') return std::nullopt;
  char enc = ascii_lower(s[q1 + 1]);
  if (enc != 'q' && enc != 'b') return std::nullopt;
  size_t text_begin = q1 + 3;
  size_t end = s.find("?=", text_begin);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view charset = s.substr(cs_begin, q1 - cs_begin);
  for (char c : charset) {
    if (is_blank(c)) return std::nullopt;
  }
  size_t star = charset.find('*');
  if (star != std::string_view::npos) charset = charset.substr(0, star);
  std::string_view text = s.substr(text_begin, end - text_begin);
  EncodedWord w;
  w.charset = std::string(charset);
  if (enc == 'b') {
    decode_base64(text, w.bytes);
  } else {
    decode_quoted_printable(text, w.bytes, /*q_encoding=*/true);
  }
  w.length = end + 2 - i;
  return w;
}

// Control bytes that decoding can introduce would let a header value break the line
// structure of whatever displays it; they become blanks.
void neutralise_controls(std::string& s) {
  for (char& c : s) {
    if (c == '\0' || c == '\r' || c == '\n') c = ' ';
  }
}

}  // namespace

std::optional<std::string_view> HeaderSection::first(std::string_view name) const {
  for (const HeaderField& f : fields) {
    if (iequal(f.name, name)) return f.value;
  }
  return std::nullopt;
}

std::vector<std::string_view> HeaderSection::all(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const HeaderField& f : fields) {
    if (iequal(f.name, name)) out.push_back(f.value);
  }
  return out;
}

HeaderSection parse_header_section(std::string_view text, size_t max_fields) {
  HeaderSection h;
  size_t n = text.size();
  size_t i = 0;
  bool in_field = false;  // the last line started a field that continuation lines extend
  size_t value_begin = 0;
  size_t value_end = 0;
  std::string_view name;
  auto finish = [&] {
    if (!in_field) return;
    in_field = false;
    if (h.fields.size() >= max_fields) {
      h.truncated = true;
      return;
    }
    h.fields.push_back(HeaderField{name, text.substr(value_begin, value_end - value_begin)});
  };
  while (i < n) {
    size_t lf = text.find('\n', i);
    size_t line_end = lf == std::string_view::npos ? n : lf;
    size_t next = lf == std::string_view::npos ? n : lf + 1;
    size_t content_end = line_end;
    if (content_end > i && text[content_end - 1] == '\r') --content_end;
    if (content_end == i) {  // the blank line that ends the section
      finish();
      h.size = next;
      h.has_blank = lf != std::string_view::npos;
      return h;
    }
    if (is_blank(text[i])) {
      if (in_field) value_end = content_end;
    } else {
      finish();
      std::string_view line = text.substr(i, content_end - i);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string_view nm = line.substr(0, colon);
        while (!nm.empty() && is_blank(nm.back())) nm.remove_suffix(1);  // obs-optional
        if (valid_field_name(nm)) {
          in_field = true;
          name = nm;
          value_begin = i + colon + 1;
          value_end = content_end;
        }
      }
    }
    i = next;
  }
  finish();
  h.size = n;
  return h;
}

std::string unfold(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    if (c != '\r' && c != '\n') out += c;
  }
  size_t b = 0;
  while (b < out.size() && is_blank(out[b])) ++b;
  size_t e = out.size();
  while (e > b && is_blank(out[e - 1])) --e;
  return out.substr(b, e - b);
}

std::string decode_header_text(std::string_view raw) {
  std::string s = unfold(raw);
  std::string out;
  out.reserve(s.size());
  std::string pending_charset;  // encoded bytes not yet converted, all in one charset
  std::string pending;
  bool have_pending = false;
  auto flush = [&] {
    if (!have_pending) return;
    out += to_utf8_lenient(pending_charset, pending);
    pending.clear();
    have_pending = false;
  };
  std::string_view sv(s);
  size_t i = 0;
  size_t plain_begin = 0;
  bool last_was_word = false;  // the previous non-blank item was an encoded-word
  while (i < sv.size()) {
    size_t eq = sv.find("=?", i);
    if (eq == std::string_view::npos) break;
    std::optional<EncodedWord> w = parse_encoded_word(sv, eq);
    if (!w) {
      i = eq + 2;
      continue;
    }
    std::string_view between = sv.substr(plain_begin, eq - plain_begin);
    bool only_blanks = std::all_of(between.begin(), between.end(), is_blank);
    if (!(last_was_word && only_blanks)) {
      flush();
      append_raw_text(out, between);
    }
    std::optional<std::string> cs = normalize_charset_name(w->charset);
    std::string charset = cs ? *cs : w->charset;
    if (have_pending && charset != pending_charset) flush();
    pending_charset = charset;
    pending += w->bytes;
    have_pending = true;
    last_was_word = true;
    i = eq + w->length;
    plain_begin = i;
  }
  flush();
  append_raw_text(out, sv.substr(plain_begin));
  neutralise_controls(out);
  return out;
}

// --- FieldLexer ---------------------------------------------------------------

namespace {

bool is_rfc5322_special(char c) {
  // '.' is deliberately not special: atoms keep their dots (dot-atom, obs-phrase).
  switch (c) {
    case '(': case ')': case '<': case '>': case '[': case ']': case ':': case ';':
    case '@': case '\\': case ',': case '"':
      return true;
    default:
      return false;
  }
}

bool is_mime_tspecial(char c) {
  switch (c) {
    case '(': case ')': case '<': case '>': case '@': case ',': case ';': case ':':
    case '\\': case '"': case '/': case '[': case ']': case '?': case '=':
      return true;
    default:
      return false;
  }
}

bool is_ctl_or_space(char c) {
  auto u = static_cast<unsigned char>(c);
  return u <= 32 || u == 127;
}

}  // namespace

void FieldLexer::skip_cfws(bool& saw) {
  while (i_ < s_.size()) {
    char c = s_[i_];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      saw = true;
      ++i_;
      continue;
    }
    if (c != '(') return;
    saw = true;
    int depth = 0;
    std::string text;
    while (i_ < s_.size()) {
      char d = s_[i_++];
      if (d == '\\' && i_ < s_.size()) {
        text += s_[i_++];
        continue;
      }
      if (d == '(') {
        if (depth > 0) text += d;
        // Past the bound, '(' no longer nests: the comment still ends at some ')'.
        if (depth < kMaxCommentDepth) ++depth;
        continue;
      }
      if (d == ')') {
        if (--depth == 0) break;
        text += d;
        continue;
      }
      if (d != '\r' && d != '\n') text += d;
    }
    last_comment_ = std::move(text);
  }
}

FieldLexer::Token FieldLexer::peek() {
  if (!have_peek_) {
    peek_pos_ = i_;
    peek_ = next();
    have_peek_ = true;
  }
  return peek_;
}

std::string_view FieldLexer::rest() {
  if (have_peek_) {  // un-read the peeked token
    i_ = peek_pos_;
    have_peek_ = false;
  }
  bool saw = false;
  skip_cfws(saw);
  return s_.substr(i_);
}

FieldLexer::Token FieldLexer::next() {
  if (have_peek_) {
    have_peek_ = false;
    return std::move(peek_);
  }
  Token t;
  skip_cfws(t.space_before);
  if (i_ >= s_.size()) return t;
  char c = s_[i_];
  if (c == '"') {
    ++i_;
    t.kind = Kind::kQuoted;
    while (i_ < s_.size()) {
      char d = s_[i_++];
      if (d == '"') break;
      if (d == '\\' && i_ < s_.size()) {
        t.text += s_[i_++];
        continue;
      }
      if (d != '\r' && d != '\n') t.text += d;
    }
    return t;
  }
  if (c == '[' && !mime_) {
    t.kind = Kind::kDomainLiteral;
    while (i_ < s_.size()) {
      char d = s_[i_++];
      if (d == '\\' && i_ < s_.size()) {
        t.text += s_[i_++];
        continue;
      }
      if (d != '\r' && d != '\n') t.text += d;
      if (d == ']') break;
    }
    return t;
  }
  bool special = mime_ ? is_mime_tspecial(c) : is_rfc5322_special(c);
  if (special || is_ctl_or_space(c)) {
    t.kind = Kind::kSpecial;
    t.text = std::string(1, c);
    ++i_;
    return t;
  }
  t.kind = Kind::kAtom;
  size_t b = i_;
  while (i_ < s_.size()) {
    char d = s_[i_];
    if (is_ctl_or_space(d)) break;
    if (mime_ ? is_mime_tspecial(d) : is_rfc5322_special(d)) break;
    ++i_;
  }
  t.text = std::string(s_.substr(b, i_ - b));
  return t;
}

// --- MIME parameters ------------------------------------------------------------

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int h = hex_value(s[i + 1]);
      int l = hex_value(s[i + 2]);
      if (h >= 0 && l >= 0) {
        out += static_cast<char>(h * 16 + l);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// RFC 2231 attribute-char: what may stand unencoded in an extended value.
bool is_attribute_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 32 || u >= 127) return false;
  return !is_mime_tspecial(c) && c != '*' && c != '\'' && c != '%';
}

std::string percent_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    if (is_attribute_char(c)) {
      out += c;
    } else {
      auto u = static_cast<unsigned char>(c);
      out += '%';
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out;
}

struct RawParam {
  std::string name;  // lower-cased, with any RFC 2231 "*N*" suffix
  std::string value;
};

// Reads "; name=value" pairs from s[i...]. Lenient: a value may be a quoted-string or
// anything up to the next ';' (unquoted blanks and all: "name=my file.pdf"), and a
// parameter without '=' is skipped.
std::vector<RawParam> read_raw_params(std::string_view s, size_t i) {
  std::vector<RawParam> out;
  // Bound: a header can hold thousands of "a=b;" but no real part has more than a
  // few dozen parameters; past this they are dropped.
  constexpr size_t kMaxParams = 256;
  auto skip_blanks_and_comments = [&] {
    while (i < s.size()) {
      char c = s[i];
      if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        ++i;
      } else if (c == '(') {
        int depth = 0;
        while (i < s.size()) {
          char d = s[i++];
          if (d == '\\') {
            ++i;
          } else if (d == '(') {
            if (depth < FieldLexer::kMaxCommentDepth) ++depth;
          } else if (d == ')' && --depth == 0) {
            break;
          }
        }
      } else {
        return;
      }
    }
  };
  while (i < s.size() && out.size() < kMaxParams) {
    skip_blanks_and_comments();
    if (i >= s.size()) break;
    if (s[i] == ';') {
      ++i;
      continue;
    }
    size_t nb = i;
    while (i < s.size() && s[i] != '=' && s[i] != ';' && !is_ctl_or_space(s[i]) && s[i] != '(' &&
           s[i] != '"') {
      ++i;
    }
    std::string name = lower(s.substr(nb, i - nb));
    skip_blanks_and_comments();
    if (name.empty() || i >= s.size() || s[i] != '=') {
      while (i < s.size() && s[i] != ';') ++i;  // not a parameter: skip it
      continue;
    }
    ++i;
    skip_blanks_and_comments();
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      while (i < s.size()) {
        char d = s[i++];
        if (d == '"') break;
        if (d == '\\' && i < s.size()) {
          value += s[i++];
          continue;
        }
        if (d != '\r' && d != '\n') value += d;
      }
      while (i < s.size() && s[i] != ';') ++i;  // junk after the closing quote
    } else {
      std::string v;
      while (i < s.size() && s[i] != ';') {
        if (s[i] == '(') {
          skip_blanks_and_comments();  // a comment inside an unquoted value is dropped
          v += ' ';
          continue;
        }
        v += s[i++];
      }
      value = unfold(v);
    }
    out.push_back(RawParam{std::move(name), std::move(value)});
  }
  return out;
}

// Joins RFC 2231 continuations (name*0, name*1*, ...) and marks extended values.
std::vector<Param> join_rfc2231(std::vector<RawParam> raw) {
  struct Section {
    std::string value;
    bool extended;
  };
  struct Joined {
    std::map<unsigned, Section> sections;
    size_t first_index;  // order of appearance
  };
  std::vector<Param> out;
  std::map<std::string, Joined> multi;
  std::vector<std::pair<size_t, std::string>> order;  // (position in out, base name)
  for (RawParam& p : raw) {
    size_t star = p.name.find('*');
    if (star == std::string::npos) {
      out.push_back(Param{p.name, p.value, false});
      continue;
    }
    std::string base = p.name.substr(0, star);
    std::string_view suffix = std::string_view(p.name).substr(star + 1);
    bool extended = false;
    unsigned index = 0;
    if (suffix.empty()) {
      extended = true;  // name*=charset'lang'value
    } else {
      if (suffix.back() == '*') {
        extended = true;
        suffix.remove_suffix(1);
      }
      // RFC 2231 section numbers; 999 is far beyond any real header and keeps the
      // map small.
      if (suffix.empty() || suffix.size() > 3 ||
          !std::all_of(suffix.begin(), suffix.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          (suffix.size() > 1 && suffix[0] == '0')) {
        out.push_back(Param{p.name, p.value, false});  // not RFC 2231: keep as written
        continue;
      }
      index = static_cast<unsigned>(std::stoul(std::string(suffix)));
    }
    if (base.empty()) continue;
    auto it = multi.find(base);
    if (it == multi.end()) {
      it = multi.emplace(base, Joined{{}, out.size()}).first;
      out.push_back(Param{base, "", false});  // placeholder, filled below
      order.emplace_back(out.size() - 1, base);
    }
    it->second.sections.emplace(index, Section{std::move(p.value), extended});
  }
  for (auto& [pos, base] : order) {
    const Joined& j = multi[base];
    bool any_extended = false;
    for (auto& [idx, sec] : j.sections) any_extended = any_extended || sec.extended;
    std::string value;
    unsigned expect = 0;
    bool first = true;
    for (auto& [idx, sec] : j.sections) {
      if (idx != expect) break;  // a gap: RFC 2231 says stop at the first missing section
      ++expect;
      if (!any_extended) {
        value += sec.value;
      } else if (sec.extended) {
        value += sec.value;  // the first one carries charset'lang'
      } else {
        if (first) value += "''";  // an unencoded first section: no charset
        value += percent_encode(sec.value);
      }
      first = false;
    }
    out[pos].value = std::move(value);
    out[pos].extended = any_extended;
  }
  return out;
}

ContentType parse_type_and_params(std::string_view raw, bool want_subtype) {
  ContentType ct;
  FieldLexer lex(raw, /*mime_tokens=*/true);
  FieldLexer::Token t = lex.next();
  if (t.kind != FieldLexer::Kind::kAtom) return ct;
  std::string type = lower(t.text);
  std::string subtype;
  if (want_subtype) {
    FieldLexer::Token slash = lex.next();
    if (slash.kind != FieldLexer::Kind::kSpecial || slash.text != "/") return ct;
    FieldLexer::Token sub = lex.next();
    if (sub.kind != FieldLexer::Kind::kAtom) return ct;
    subtype = lower(sub.text);
  }
  std::string_view rest = lex.rest();
  size_t semi = rest.find(';');
  ct.type = std::move(type);
  ct.subtype = std::move(subtype);
  if (semi != std::string_view::npos) ct.params = join_rfc2231(read_raw_params(rest, semi));
  return ct;
}

}  // namespace

std::string Param::decoded() const {
  if (extended) {
    size_t a1 = value.find('\'');
    size_t a2 = a1 == std::string::npos ? std::string::npos : value.find('\'', a1 + 1);
    if (a2 == std::string::npos) return sanitize_utf8(percent_decode(value));
    std::string charset = value.substr(0, a1);
    std::string bytes = percent_decode(std::string_view(value).substr(a2 + 1));
    if (charset.empty()) charset = "us-ascii";
    std::string r = to_utf8_lenient(charset, bytes);
    neutralise_controls(r);
    return r;
  }
  if (value.find("=?") != std::string::npos) return decode_header_text(value);
  std::string r;
  append_raw_text(r, value);
  neutralise_controls(r);
  return r;
}

const Param* ContentType::find(std::string_view name) const {
  for (const Param& p : params) {
    if (iequal(p.name, name)) return &p;
  }
  return nullptr;
}

std::optional<std::string> ContentType::param(std::string_view name) const {
  const Param* p = find(name);
  if (!p) return std::nullopt;
  return p->decoded();
}

ContentType parse_content_type(std::string_view raw) { return parse_type_and_params(raw, true); }

ContentType parse_content_disposition(std::string_view raw) { return parse_type_and_params(raw, false); }

std::string parse_content_transfer_encoding(std::string_view raw) {
  FieldLexer lex(raw, /*mime_tokens=*/true);
  FieldLexer::Token t = lex.next();
  if (t.kind != FieldLexer::Kind::kAtom) return {};
  if (lex.next().kind != FieldLexer::Kind::kEnd) return {};
  return lower(t.text);
}

std::vector<std::string> parse_content_language(std::string_view raw) {
  std::vector<std::string> out;
  FieldLexer lex(raw);
  for (;;) {
    FieldLexer::Token t = lex.next();
    if (t.kind == FieldLexer::Kind::kEnd) break;
    if (t.kind == FieldLexer::Kind::kAtom) {
      // Bound: a language list longer than this is junk.
      if (out.size() < 64) out.push_back(t.text);
    } else if (t.kind != FieldLexer::Kind::kSpecial || t.text != ",") {
      break;
    }
  }
  return out;
}

}  // namespace tern::common::mime
