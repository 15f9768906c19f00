// LineReader: splits a byte stream into protocol lines under a length limit.
//
// A parser, not I/O: feed() bytes as they arrive, then take lines with next() until it
// says kNeedMore. Each line reports how it ended, because SMTP must tell CRLF from a
// bare LF (RFC 5321 2.3.8; the SMTP smuggling attacks live in that difference) while
// IMAP and POP3 servers traditionally accept both. A bare CR inside a line is kept in
// the text for the protocol to judge.
//
// A line longer than `max_line` (excluding its terminator) is reported once as
// kTooLong, and its remaining bytes up to the next LF are discarded without being
// stored: a peer cannot make us buffer more than max_line bytes ("even when a
// malicious client sends commands of unreasonable length", Postfix smtpd.c).
//
// take_raw() returns counted bytes (an IMAP literal, an SMTP BDAT chunk) from the same
// buffer, so switching between lines and raw bytes loses nothing. clear() throws
// away everything buffered: STARTTLS calls it so that commands pipelined before the
// handshake are never executed after it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tern::common {

class LineReader {
 public:
  // How a line ended.
  enum class Ending {
    kCrLf,  // "\r\n", the only terminator the mail RFCs allow
    kLf,    // a bare "\n"
  };
  // What next() found.
  enum class Status {
    kLine,      // a complete line is in `line`
    kNeedMore,  // no complete line is buffered
    kTooLong,   // a line exceeded max_line; it is being discarded
  };
  struct Line {
    std::string_view text;  // without the terminator; valid until the next call
    Ending ending = Ending::kCrLf;
  };

  explicit LineReader(size_t max_line) : max_line_(max_line) {}

  void feed(std::string_view data);
  Status next(Line& out);

  size_t buffered() const { return buf_.size() - off_; }
  // Up to n buffered bytes, consumed; fewer if fewer are buffered.
  std::string_view take_raw(size_t n);
  // Everything buffered, not consumed.
  std::string_view peek() const { return std::string_view(buf_).substr(off_); }
  void clear();
  void set_max_line(size_t n) { max_line_ = n; }
  size_t max_line() const { return max_line_; }

 private:
  void compact();
  std::string buf_;
  size_t off_ = 0;
  size_t scanned_ = 0;      // bytes after off_ already searched for LF
  size_t max_line_;
  bool discarding_ = false; // inside an overlong line, dropping bytes until LF
};

}  // namespace tern::common
