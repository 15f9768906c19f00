// The message body of SMTP/LMTP: the DATA reader (RFC 5321 4.1.1.4, 4.5.2) and the
// BDAT chunk reader (RFC 3030). Parsers, no I/O: bytes in, message bytes out.
//
// DataReader takes the bytes after "354" and finds the end of the message. ONLY
// CR LF "." CR LF ends DATA: the CRLF before the dot must be a real CRLF and so must
// the one after it. That is the whole defence against SMTP smuggling (SEC Consult,
// 2023): "\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r\n.\r", "\r.\r\n" and friends do
// not end DATA here, so a second message hidden behind them can never be taken as
// commands. A bare LF or a bare CR in the body is reported (bare_lf(), bare_cr()),
// and the session then treats the message as Postfix's `smtpd_forbid_bare_newline =
// yes` does: it reads on to the real end of DATA, rejects the message with 550 5.5.2
// and disconnects, so whatever the peer sent after the ambiguous line is never
// interpreted.
//
// Dot-unstuffing (RFC 5321 4.5.2): a line that starts with "." has that dot removed.
// Line starts are only after a CRLF (and at the start of the body), for the same
// reason as above.
//
// Output is the body with its CRLFs as received (minus stuffing dots), appended to a
// caller's string, so the caller decides how much to hold in memory. The reader keeps
// a fixed amount of state; it never buffers a line. It counts the body size and the
// longest line, so the session can enforce its size limit (RFC 1870: keep reading,
// then 552 5.3.4) and RFC 5321's 1000-octet line limit if it wants to.
//
// BdatReader counts the bytes of one BDAT chunk; BDAT data is not dot-stuffed and
// needs no end marker. LineEndings checks BDAT bodies for bare CR/LF (which RFC 3030
// forbids unless BODY=BINARYMIME).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tern::common::smtp {

class DataReader {
 public:
  struct Feed {
    size_t consumed = 0;  // bytes of the input used; the rest belongs to the next command
    bool done = false;    // the end-of-data line was seen
  };

  // Appends message bytes to `out`. After done, feed() consumes nothing.
  Feed feed(std::string_view in, std::string& out);
  bool done() const { return state_ == State::kDone; }
  // Message bytes produced so far (after unstuffing, CRLFs counted as two).
  uint64_t size() const { return size_; }
  bool bare_lf() const { return bare_lf_; }
  bool bare_cr() const { return bare_cr_; }
  bool nul() const { return nul_; }            // a NUL byte (RFC 5321 forbids it in text)
  bool eight_bit() const { return eight_bit_; }  // a byte >= 0x80
  // Longest line seen, in octets without its CRLF.
  uint64_t longest_line() const { return longest_line_; }
  void reset() { *this = DataReader(); }

 private:
  enum class State {
    kLineStart,   // at the start of a line (after CRLF, or the body start)
    kDot,         // "." at line start
    kDotCr,       // ".\r" at line start
    kInLine,      // inside a line
    kCr,          // "\r" inside a line
    kDone,
  };
  void emit(std::string& out, char c);
  void line_end();

  State state_ = State::kLineStart;
  uint64_t size_ = 0;
  uint64_t line_len_ = 0;
  uint64_t longest_line_ = 0;
  bool bare_lf_ = false;
  bool bare_cr_ = false;
  bool nul_ = false;
  bool eight_bit_ = false;
};

class BdatReader {
 public:
  explicit BdatReader(uint64_t chunk_size) : remaining_(chunk_size) {}
  // The prefix of `in` that belongs to this chunk; consumed from `in`.
  std::string_view take(std::string_view& in);
  bool done() const { return remaining_ == 0; }
  uint64_t remaining() const { return remaining_; }

 private:
  uint64_t remaining_;
};

// Checks a stream (fed in pieces) for bare CR and bare LF.
class LineEndings {
 public:
  void feed(std::string_view in);
  // Call at the end of the message: a trailing lone CR is a bare CR.
  void finish();
  bool bare_lf() const { return bare_lf_; }
  bool bare_cr() const { return bare_cr_; }

 private:
  bool pending_cr_ = false;
  bool bare_lf_ = false;
  bool bare_cr_ = false;
};

// Makes every line end CRLF, streaming: CRLF stays, and a bare LF or a bare CR
// becomes CRLF. RFC 5321 2.3.8: a client "MUST NOT transmit these characters
// except when they are intended as line terminators and then MUST ... transmit
// them only as a <CRLF> sequence". For text from a local program (sendmail, a
// maildrop file), where a line end is whatever the program wrote; SMTP and LMTP
// input is checked with LineEndings instead, and refused when it is not clean.
class LineEndNormalizer {
 public:
  void feed(std::string_view in, std::string& out);
  // Call at the end: a trailing lone CR is a line end too.
  void finish(std::string& out);

 private:
  bool pending_cr_ = false;
};
std::string normalize_line_ends(std::string_view in);

// Dot-stuffs a message for sending with DATA and appends the end marker (the SMTP
// client side). `body` must use CRLF line endings; a body that does not end in CRLF
// gets one.
std::string dot_stuff(std::string_view body);

}  // namespace tern::common::smtp
