// SMTP/LMTP replies: building them (server side) and reading them (client side).
//
// A Reply is a code, an optional enhanced status code (RFC 2034, RFC 3463) and one or
// more text lines. format() produces the wire form, "250-first\r\n250 last\r\n", with
// the enhanced code repeated on every line as RFC 2034 section 3 requires. Replies to
// the greeting and to EHLO/LHLO carry no enhanced code (RFC 2034 says so), which is
// a Reply with an empty `enhanced`.
//
// ReplyParser is the client half: it takes lines (from LineReader) and returns a
// complete Reply once the last line ("250 " rather than "250-") has arrived. It is a
// parser, not I/O. A peer that sends a malformed line, mixes codes inside one
// multi-line reply or sends an endless continuation gets an error, never unbounded
// buffering.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::common::smtp {

struct Reply {
  int code = 0;               // 200..599
  std::string enhanced;       // "2.1.5"; empty for none
  std::vector<std::string> lines;  // at least one; may be empty strings

  Reply() = default;
  Reply(int c, std::string enh, std::string text) : code(c), enhanced(std::move(enh)), lines{std::move(text)} {}
  Reply(int c, std::string enh, std::vector<std::string> text) : code(c), enhanced(std::move(enh)), lines(std::move(text)) {}

  bool positive() const { return code >= 200 && code < 400; }
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500; }
  // The wire form. CR, LF and NUL in the text are replaced by spaces so that a text
  // built from peer data can never end a line early or inject a second reply.
  std::string format() const;
  // One line for logs: "250 2.0.0 Ok" (lines joined by a space).
  std::string summary() const;
};

// True when `s` is a valid enhanced status code whose class matches the reply
// code's first digit: "2.1.5" for 250, "5.1.1" for 550 (RFC 3463 section 2).
bool valid_enhanced(std::string_view s, int code);

class ReplyParser {
 public:
  // Why feed() failed.
  enum class Status {
    kComplete,   // a whole reply is ready: take()
    kNeedMore,   // a continuation line was stored; feed the next line
    kError,      // malformed; error() says why. The parser is reset.
  };
  // Bound on continuation lines: an EHLO reply has a dozen; a peer that keeps sending
  // "250-" lines forever must not make us buffer forever.
  static constexpr size_t kMaxLines = 200;

  // `enhanced`: split an enhanced status code off the front of each line's text
  // (after EHLO advertised ENHANCEDSTATUSCODES).
  explicit ReplyParser(bool enhanced = true) : enhanced_(enhanced) {}
  void set_enhanced(bool on) { enhanced_ = on; }

  // One line without its CRLF.
  Status feed(std::string_view line);
  Reply take();
  const std::string& error() const { return error_; }

 private:
  bool enhanced_;
  Reply cur_;
  bool in_reply_ = false;
  std::string error_;
};

}  // namespace tern::common::smtp
