// mbox: the classic single-file mailbox (/var/mail/%u, ~/mail/<folder>), in the
// "mboxrd" dialect that Postfix's local(8), Dovecot and mutt all read.
//
// A message starts with a "From <sender> <asctime date>" line and ends with an empty
// line. A body line that would look like a separator is quoted: any line matching
// /^>*From / gets one more '>' (mboxrd), and reading removes one.
//
// Locking (Dovecot's mbox_write_locks = dotlock fcntl; Postfix's
// mailbox_delivery_lock): first the dotlock "<path>.lock" (created with O_EXCL;
// one older than `stale_seconds` is broken), then an fcntl write lock on the whole
// file. The fcntl lock is an open-file-description lock (F_OFD_SETLK): it conflicts
// with the classic POSIX locks of mutt and Dovecot, and unlike them it also keeps two
// threads of one process apart. When the directory does not let us create the
// dotlock (EACCES: /var/mail is group mail, and we are not), the fcntl lock alone is
// used, as Dovecot does without mail_privileged_group.
//
// mail_privileged_group (Dovecot): a delivery process whose saved set-group-ID is
// that group (LockOptions::privileged_gid) makes it its effective group only for the
// spool-directory operations that need it, and only after they failed without:
// creating a missing mbox (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, so owner the user
// and group the privileged group), creating the dotlock, removing it (or a stale
// one). Reading the message and writing the mbox never run with it.
//
// Failure safety: the size before the append is remembered; any failure (a write
// error, a full disk, a failed fsync) truncates the file back to it, so a reader
// never sees half a message.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "common/maildir.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common::mbox {

struct LockOptions {
  bool dotlock = true;
  bool fcntl = true;
  int timeout_seconds = 30;   // give up (kInUse, a temporary failure) after this long
  int stale_seconds = 300;    // a dotlock older than this is left over from a crash
  // The saved set-group-ID to switch to around spool-directory operations that fail
  // with EACCES (mail_privileged_group); -1 for none. The caller must have set it as
  // its saved gid (setresgid), or the switch fails and the operation with it.
  gid_t privileged_gid = static_cast<gid_t>(-1);
};

// "From sender Thu Nov 27 20:54:21 2026" (asctime form in UTC, as Postfix writes it).
// An empty sender is written as MAILER-DAEMON.
std::string from_line(std::string_view sender, time_t when);

// Quotes /^>*From / lines of a stream fed in pieces (mboxrd).
class FromQuoter {
 public:
  void feed(std::string_view in, std::string& out);
  void finish(std::string& out);  // flushes a partial line held back
  bool ends_with_newline() const { return last_ == '\n'; }

 private:
  void flush_held(std::string& out);
  bool at_start_ = true;
  uint64_t gts_ = 0;     // '>'s at the start of the current line, not yet written
  size_t matched_ = 0;   // bytes of "From " matched after them
  char last_ = '\n';
};

// Appends one message under the locks.
class Appender {
 public:
  // Opens (creating with mode 0600) and locks the mbox, writes the From_ line.
  static Result<Appender> begin(const std::string& path, std::string_view sender, time_t when,
                                const LockOptions& locks);
  Appender(Appender&&) noexcept;
  Appender(const Appender&) = delete;
  Appender& operator=(const Appender&) = delete;
  ~Appender();  // rolls back unless committed

  // Message bytes (header and body, LF line ends); quoted as they pass.
  Status write(std::string_view data);
  // Ends the message with its blank line, fsyncs, unlocks.
  Status commit(maildir::Fsync fsync);
  // Truncates back to the old size and unlocks.
  void rollback();
  uint64_t old_size() const { return old_size_; }

 private:
  Appender() = default;
  Status flush(bool force);
  void unlock();
  std::string path_;
  std::string lock_path_;
  gid_t privileged_gid_ = static_cast<gid_t>(-1);
  UniqueFd fd_;
  bool have_dotlock_ = false;
  uint64_t old_size_ = 0;
  FromQuoter quoter_;
  std::string buf_;
  bool done_ = false;
};

// One message read back (separator line and quoting removed).
struct Message {
  std::string from_line;  // without "From " and the newline
  std::string content;    // header and body, LF line ends, without the separating blank line
};
Result<std::vector<Message>> read_all(const std::string& path);
// The messages of an mbox's bytes (what read_all() does after reading): a message
// starts at a From_ line at the start of the data or after an empty line.
std::vector<Message> split(std::string_view data);

}  // namespace tern::common::mbox
