// ImapReader: frames an IMAP client's byte stream into commands, with their literals.
//
// A parser, not I/O: feed() bytes as they arrive, then call next() until it says
// kNeedMore. A command is one line, or several lines joined by literals
// ("{n}" CRLF n-bytes, RFC 3501 4.3; "{n+}" LITERAL+, RFC 7888; "~{n}" literal8,
// RFC 3516). The reader decides about each literal from its announcement alone,
// before any of its bytes is read, and tells the I/O layer what to do:
//
//   kContinue        a synchronising literal is accepted: send "+ Ready", keep reading
//   kLiteralRefused  a synchronising literal is too big, or does not fit the
//                    memory budget: send the tagged reply in refusal(); the client
//                    sends no data and the command is dropped (also after a
//                    non-synchronising literal over the budget, read and dropped)
//   kFatal           a line longer than max_line, or a non-synchronising literal
//                    over the limit (its bytes are already on the way and cannot be
//                    told apart from commands): send "* BYE" and close
//
// Bounds, each because the client controls the size: one line (max_line), a whole
// command (max_command), a literal (max_literal; APPEND's message: max_append). A
// literal announcing 1 GB is refused from its announcement. The reader holds at most
// one command plus what was fed and not yet consumed; the I/O layer keeps that
// bounded by not reading from the socket while buffered() is large (back-pressure),
// so 100,000 pipelined commands cost no more memory than one.
//
// For AUTHENTICATE's responses and IDLE's "DONE", which are lines but not commands,
// the session calls next_line() instead of next(). clear() drops everything buffered,
// for STARTTLS (RFC 3501 6.2.1: nothing sent before the handshake is kept).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/line_reader.h"

namespace tern::mra::imap {

// The memory one process lets its sessions' APPEND literals take together (a
// session worker's sessions share one): accounting only, the reader never touches
// memory through it. Each reader reserves a literal's announced size before it
// answers "+" and gives it back when the command is done, so a client's upload is
// counted while the worker holds it whole. One account's concurrent uploads (or many
// users' at once) then meet a "NO [LIMIT]" (RFC 5530 3) instead of growing the shared
// worker until the kernel's OOM killer ends every session in it.
struct MemoryBudget {
  uint64_t limit = UINT64_MAX;
  uint64_t used = 0;
  bool reserve(uint64_t n) {
    if (n > limit || used > limit - n) return false;
    used += n;
    return true;
  }
  void release(uint64_t n) { used -= n < used ? n : used; }
};

struct ReaderLimits {
  // One line of a command. RFC 7162 3.2.2 asks servers to accept 8192 octets; Dovecot
  // takes 64 KiB, which long UID sets from Thunderbird need.
  size_t max_line = 65536;
  // All lines and literals of one command except APPEND's message.
  size_t max_command = 262144;
  // One literal outside APPEND (a mailbox name, a search string, a password).
  size_t max_literal = 65536;
  // APPEND's message literal: the APPENDLIMIT (RFC 7889) the session announces.
  uint64_t max_append = 50ull << 20;
  // Whether {n+} is accepted (the session announces LITERAL+ when it is).
  bool literal_plus = true;
  // APPEND messages larger than this are not held: their bytes are handed out as
  // they arrive (kSpoolStart, kSpoolData) for the session to write to its store's
  // spool (Maildir tmp/), so a message of any size up to max_append costs the worker
  // one read buffer. UINT64_MAX: never (before login).
  uint64_t spool_above = UINT64_MAX;
  // Shared by the readers of one process; null for none. An APPEND literal that does
  // not fit is refused "NO [LIMIT]": a synchronising one from its announcement, a
  // non-synchronising one (its bytes are on the way) after they are read and dropped.
  MemoryBudget* budget = nullptr;
};

// A literal inside RawCommand::text.
struct LiteralSpan {
  size_t brace = 0;   // offset of '{' (or '~' of a literal8) in text
  size_t data = 0;    // offset of its first data byte (right after "}")
  size_t size = 0;    // data bytes
  bool binary = false;  // literal8 "~{n}" (RFC 3516)
  bool spooled = false; // its data went to the spool (kSpoolData): text holds none of it
};

// A framed command: its lines joined, each literal's data right after its "{n}",
// line ends removed. Parse it with parse_command() (imap_parser.h).
struct RawCommand {
  std::string text;
  std::vector<LiteralSpan> literals;
};

class ImapReader {
 public:
  enum class Status {
    kNeedMore,        // nothing complete is buffered
    kCommand,         // command() holds a whole command
    kContinue,        // send a continuation request ("+ ..."); the literal follows
    kLiteralRefused,  // send refusal(); the command is dropped
    kFatal,           // send "* BYE " + error() and close the connection
    kSpoolStart,      // an APPEND literal of spool_size() bytes is coming, too big to
                      // hold: open a spool, then accept_spool() or refuse_spool()
    kSpoolData,       // spool_data() holds the literal's next bytes, for the spool
  };

  explicit ImapReader(const ReaderLimits& limits = {});
  ~ImapReader();
  ImapReader(const ImapReader&) = delete;
  ImapReader& operator=(const ImapReader&) = delete;

  void feed(std::string_view data) { lines_.feed(data); }
  Status next();
  // The command after kCommand; valid until the next call to next().
  RawCommand& command() { return cmd_; }

  // After kSpoolStart: the literal's announced size.
  uint64_t spool_size() const { return literal_left_; }
  // After kSpoolStart: whether the literal is synchronising (the client waits for
  // "+", which the session sends once the spool is open).
  bool spool_sync() const { return spool_sync_; }
  // After kSpoolStart: the spool is open; kSpoolData follows.
  void accept_spool() { spool_pending_ = false; }
  // After kSpoolStart: no spool (quota, disk). A synchronising literal is dropped
  // with its command at once (the session sends `refusal`, the tagged line without
  // CRLF); a non-synchronising one is read and dropped first, then next() says
  // kLiteralRefused with `refusal`.
  void refuse_spool(std::string refusal);
  // After kSpoolData: the bytes, valid until the next call.
  std::string_view spool_data() const { return spool_data_; }

  // After kLiteralRefused: the complete tagged response line, without CRLF.
  const std::string& refusal() const { return refusal_; }
  // After kFatal: the reason, fit for "* BYE <reason>".
  const std::string& error() const { return error_; }

  // Raw line mode (AUTHENTICATE responses, IDLE's DONE). Returns kCommand with the
  // line in `line` (without its line end), kNeedMore, or kFatal (too long).
  Status next_line(std::string& line);

  size_t buffered() const { return lines_.buffered(); }
  // Everything fed and not consumed, byte for byte; the reader is cleared. For
  // handing a connection to another process between commands.
  std::string take_buffered() {
    std::string s(lines_.peek());
    clear();
    return s;
  }
  void clear();
  void set_limits(const ReaderLimits& limits);
  const ReaderLimits& limits() const { return lim_; }

 private:
  Status on_line(std::string_view line);
  void reset_command();
  // The tagged "NO [LIMIT]" of a command refused by the memory budget.
  std::string limit_refusal() const;

  ReaderLimits lim_;
  tern::common::LineReader lines_;
  RawCommand cmd_;
  bool in_literal_ = false;
  uint64_t literal_left_ = 0;
  bool is_append_ = false;
  bool delivered_ = false;  // cmd_ was handed out and must be reset before reuse
  uint64_t reserved_ = 0;   // taken from lim_.budget for this command's literals
  bool discard_ = false;    // the command is refused: its literal bytes are dropped
  bool spooling_ = false;   // the literal being read goes out as kSpoolData
  bool spool_pending_ = false;  // kSpoolStart said, accept_spool()/refuse_spool() not yet
  bool spool_sync_ = false;
  std::string_view spool_data_;
  std::string discard_refusal_;  // the refusal after a dropped non-synchronising literal
  std::string refusal_;
  std::string error_;
};

// The tag at the start of a command line, if it is a valid tag (RFC 3501 9: 1*<any
// ASTRING-CHAR except "+">), else "".
std::string_view command_tag(std::string_view line);

}  // namespace tern::mra::imap
