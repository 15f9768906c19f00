// Evaluation of IMAP SEARCH programs (RFC 3501 6.4.4, RFC 9051 6.4.4) over an abstract
// message, so the same code serves the session and its tests.
//
// Cheap keys (flags, sizes, dates, sets) use only the message's metadata; header and
// text keys ask for the parsed message, which the caller loads lazily, so a flag
// search never reads a message file. String matching is case-insensitive substring
// matching (RFC 3501 6.4.4) on UTF-8 after decoding: headers through RFC 2047,
// bodies through their Content-Transfer-Encoding and charset, folded with
// mime::fold_case(). Search strings must already be UTF-8 (the session converts from
// the command's CHARSET). Recursion follows the parsed key, whose depth the parser
// bounds (kMaxSearchDepth). No I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/mime.h"
#include "mra/imap_command.h"
#include "mra/imap_sequence.h"

namespace tern::mra::imap {

// What the evaluator needs of one message.
class SearchMessage {
 public:
  virtual ~SearchMessage() = default;
  virtual uint32_t seq() const = 0;
  virtual uint32_t uid() const = 0;
  virtual const std::vector<std::string>& flags() const = 0;
  virtual bool recent() const = 0;
  virtual uint64_t size() const = 0;
  virtual int64_t internal_date() const = 0;  // UNIX time
  virtual int internal_date_zone() const = 0; // minutes east of UTC the date is kept in
  virtual uint64_t modseq() const = 0;
  // The parsed message, loaded on first use; nullptr when it cannot be read (it then
  // matches no header or text key).
  virtual const tern::common::mime::Message* message() = 0;
};

struct SearchContext {
  uint32_t max_seq = 0;                // "*" in a sequence set
  uint32_t max_uid = 0;                // "*" in a UID set
  const NumberSet* saved = nullptr;    // "$" (SEARCHRES), as UIDs
  int64_t now = 0;                     // for OLDER / YOUNGER (RFC 5032)
};

// True when the message matches the key.
bool search_matches(const SearchKey& key, SearchMessage& msg, const SearchContext& ctx);

// True when evaluating the key needs the message text (headers or body).
bool search_needs_message(const SearchKey& key);

// Whether a flag list holds a flag, case-insensitively (RFC 3501 2.3.2).
bool has_flag(const std::vector<std::string>& flags, std::string_view flag);

}  // namespace tern::mra::imap
