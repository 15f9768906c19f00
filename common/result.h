// Result<T>: an expected failure as a value.
//
// Every operation that can fail for a reason outside the program's control (I/O, a
// peer, a bad config value, a full map) returns Result<T>. The error carries a Kind
// that protocol layers map to a reply (as Dovecot's enum mail_error does): TEMP is
// SMTP/LMTP 451 4.3.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]. The message is for
// the log; clients get a short text chosen by the protocol layer.
//
// Not std::expected: clang 14 cannot compile libstdc++'s <expected>, and fuzzing needs
// clang.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace tern::common {

// What went wrong, in the terms a protocol reply needs.
enum class ErrorKind {
  kTemp,      // transient: retry later (disk, peer down, lock busy)
  kPerm,      // permanent: retrying cannot help
  kNoQuota,   // the mailbox is over its quota
  kNotFound,  // no such user, mailbox, key or file
  kInUse,     // held by someone else right now (a lock, a POP3 session)
  kLimit,     // a configured limit was reached (connections, recipients)
  kTooBig,    // a size limit was exceeded
  kConfig,    // the configuration is wrong; the message names file:line and key
  kProtocol,  // the peer broke the protocol
  kDenied,    // not permitted (permissions, policy)
  kExists,    // already exists
  kMapFull,   // an LMDB map is full (grow it and retry)
};

const char* error_kind_name(ErrorKind kind);

struct Error {
  ErrorKind kind = ErrorKind::kTemp;
  std::string message;
};

inline Error make_error(ErrorKind kind, std::string message) { return Error{kind, std::move(message)}; }
// An error from errno, with what was being done: "open /x: No such file or directory".
Error errno_error(const std::string& what, int err);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}        // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const Error& error() const { return std::get<1>(v_); }
  Error&& take_error() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  Error&& take_error() { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace tern::common
