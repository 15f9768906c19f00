// Header fields of an RFC 5322 message or a MIME part: splitting a header section
// into fields, unfolding, RFC 2047 encoded-words decoded to UTF-8, and the structured
// MIME fields (Content-Type, Content-Disposition with RFC 2231 parameters,
// Content-Transfer-Encoding, Content-Language).
//
// Everything is lenient, because mail is malformed in every way a program can
// manage: bare LF line ends, 8-bit bytes and NULs in headers, lines without a colon,
// unterminated quotes and comments, encoded-words glued to words. Nothing fails;
// parsers return what they could make sense of. Every loop is bounded by the input
// size, and comment nesting by kMaxCommentDepth. No I/O.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::common::mime {

// One header field, as views into the header text.
struct HeaderField {
  std::string_view name;   // as written, without the colon and any blanks before it
  std::string_view value;  // raw value after the colon, folding kept, line end dropped
};

// A header section split into fields. Views point into the text given to parse().
struct HeaderSection {
  std::vector<HeaderField> fields;
  size_t size = 0;        // bytes of the section, including the blank line if any
  bool has_blank = false;  // ended by a blank line (not by the end of the input)
  bool truncated = false;  // more than max_fields fields; the rest were skipped

  // First field with this name (case-insensitive), or nullopt.
  std::optional<std::string_view> first(std::string_view name) const;
  // Every field with this name, in order.
  std::vector<std::string_view> all(std::string_view name) const;
};

// Splits `text` (starting at a header section) into fields, up to the first empty
// line (CRLF or bare LF). Lines without a colon and continuation lines with no field
// to continue belong to the section but are not fields. At most `max_fields` fields
// are kept, so an absurd header cannot make us allocate without bound.
HeaderSection parse_header_section(std::string_view text, size_t max_fields = 10000);

// Unfolds a raw value (RFC 5322 2.2.3): drops CR and LF, trims leading and trailing
// blanks. Interior blanks are kept as written.
std::string unfold(std::string_view raw);

// Decodes an unstructured field value (Subject, Comments, a display name) to UTF-8:
// unfolds, decodes RFC 2047 encoded-words (Q and B, any charset iconv knows, RFC 2231
// language suffix ignored), drops the blanks between adjacent encoded-words (6.2),
// joins adjacent words of one charset before converting, so a character split across
// two words survives, and reads raw 8-bit text as UTF-8 (RFC 6532) or, when that is
// ill-formed, as windows-1252. Undecodable words are kept as written.
std::string decode_header_text(std::string_view raw);

// A MIME parameter (RFC 2045 5.1, RFC 2231). The name is lower-cased. When any
// RFC 2231 section was charset-encoded, `extended` is set and `value` keeps the
// joined encoded form ("utf-8''%E2%82%AC"); decoded() gives UTF-8 either way.
struct Param {
  std::string name;
  std::string value;
  bool extended = false;

  std::string decoded() const;
};

// "type/subtype; params" (Content-Type) parsed. Names lower-cased.
struct ContentType {
  std::string type;     // empty when the field was unusable
  std::string subtype;
  std::vector<Param> params;

  // Value of a parameter, decoded to UTF-8 (RFC 2231 or RFC 2047 in quotes), or nullopt.
  std::optional<std::string> param(std::string_view name) const;
  // Raw (undecoded) value of a parameter, or nullopt.
  const Param* find(std::string_view name) const;
};
ContentType parse_content_type(std::string_view raw);

// "disposition; params" (Content-Disposition, RFC 2183). `type` is lower-cased and
// empty when the field was unusable.
ContentType parse_content_disposition(std::string_view raw);

// The mechanism token of Content-Transfer-Encoding, lower-cased; empty when absent
// or not a token.
std::string parse_content_transfer_encoding(std::string_view raw);

// The language tags of Content-Language (RFC 3282), as written.
std::vector<std::string> parse_content_language(std::string_view raw);

// Lexer for structured fields (RFC 5322 3.2): atoms, quoted-strings, domain literals,
// specials; comments and folding whitespace are skipped. Exposed for the address and
// date parsers.
class FieldLexer {
 public:
  enum class Kind {
    kAtom,           // 1*atext (or MIME token when mime_tokens)
    kQuoted,         // quoted-string, unescaped, without the quotes
    kDomainLiteral,  // [ ... ] including the brackets
    kSpecial,        // one of the specials, in `text`
    kEnd,            // no more input
  };
  struct Token {
    Kind kind = Kind::kEnd;
    std::string text;
    bool space_before = false;  // CFWS preceded the token
  };
  // `mime_tokens`: atoms are RFC 2045 tokens ('/', '=', '?' are specials; '.' is not).
  explicit FieldLexer(std::string_view text, bool mime_tokens = false) : s_(text), mime_(mime_tokens) {}
  Token next();
  Token peek();
  // The unconsumed rest, after skipping CFWS.
  std::string_view rest();
  // The last comment skipped (its text), for "addr (Name)" forms.
  const std::string& last_comment() const { return last_comment_; }

  // Comments nest (RFC 5322 3.2.2); deeper nesting is treated as text so that a
  // crafted "((((..." cannot cost more than one pass.
  static constexpr int kMaxCommentDepth = 32;

 private:
  void skip_cfws(bool& saw);
  std::string_view s_;
  size_t i_ = 0;
  bool mime_;
  bool have_peek_ = false;
  size_t peek_pos_ = 0;
  Token peek_;
  std::string last_comment_;
};

}  // namespace tern::common::mime
