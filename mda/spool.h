// MessageSpool: the body of one LMTP transaction while it is being received, held
// once for all its recipients and read back once per recipient.
//
// Bytes arrive with CRLF line ends (after the DATA reader's unstuffing, or raw BDAT
// chunks) and are stored with LF line ends, the form every Maildir and mbox reader
// expects; a CR not followed by LF is kept. Small messages stay in memory; past
// `memory_limit` the spool moves into an unnamed file (O_TMPFILE) in mail_temp_dir,
// so a 50 MB message costs 50 MB of disk, not of RAM, and the file vanishes with the
// process whatever happens (Dovecot's mail_temp_dir does the same job).
//
// Bytes past `max_size` are counted but dropped: the session refuses the message
// (552 5.3.4) once it has read to the end, without having buffered the excess.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::mda {

class MessageSpool {
 public:
  MessageSpool(std::string temp_dir, uint64_t max_size, size_t memory_limit = 1 << 20)
      : temp_dir_(std::move(temp_dir)), max_size_(max_size), memory_limit_(memory_limit) {}
  MessageSpool(MessageSpool&&) = default;
  MessageSpool& operator=(MessageSpool&&) = default;

  // Appends CRLF-form bytes. An error (temp file full) is kept and returned again
  // by finish(); later appends are dropped.
  void append(std::string_view crlf_bytes);
  // Flushes a trailing lone CR and any buffered bytes.
  common::Status finish();

  // Size as received in CRLF form (what SIZE= and the size limit are about).
  uint64_t received_size() const { return received_; }
  // Size as stored (LF form).
  uint64_t size() const { return stored_; }
  bool too_big() const { return max_size_ && received_ > max_size_; }

  // Calls fn with the stored bytes in order, in pieces. Safe from any thread once
  // finish() returned and no append runs (reads use pread, no shared offset).
  common::Status read(const std::function<common::Status(std::string_view)>& fn) const;
  // The first `n` stored bytes (for the Message-ID in logs).
  std::string head(size_t n) const;
  // A file descriptor with the stored bytes from offset 0 (the temporary file, or a
  // memfd filled from memory), for handing the message to another process.
  common::Result<common::UniqueFd> share_fd() const;
  // A spool over a descriptor received from another process (read-only use).
  static MessageSpool from_fd(common::UniqueFd fd, uint64_t size);

 private:
  void store(std::string_view lf_bytes);
  std::string temp_dir_;
  uint64_t max_size_;
  size_t memory_limit_;
  std::string mem_;
  common::UniqueFd fd_;
  std::string out_;  // pending writes to fd_
  uint64_t received_ = 0;
  uint64_t stored_ = 0;
  bool pending_cr_ = false;
  common::Status error_;
};

}  // namespace tern::mda
