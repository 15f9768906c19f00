// IMAP commands as values: what parse_command() (imap_parser.h) makes of a client's
// command and what the session (imap_session.h) executes.
//
// Covers IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) and the extensions the session
// offers: LITERAL+, SASL-IR (AUTHENTICATE's initial response), ENABLE, ID, IDLE,
// UNSELECT, UIDPLUS (UID EXPUNGE), MOVE, NAMESPACE, LIST-EXTENDED / LIST-STATUS /
// SPECIAL-USE (LIST selection and return options), STATUS=SIZE, QUOTA, APPENDLIMIT,
// BINARY, ESEARCH / SEARCHRES (SEARCH RETURN), CONDSTORE (CHANGEDSINCE,
// UNCHANGEDSINCE, MODSEQ). Strings are as the client sent them: mailbox names still
// in modified UTF-7 (or UTF-8 after ENABLE IMAP4rev2), search strings in the
// command's CHARSET. The session converts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mra/imap_sequence.h"

namespace tern::mra::imap {

// Every command name the parser knows.
enum class CommandName {
  kCapability,    // CAPABILITY
  kNoop,          // NOOP
  kLogout,        // LOGOUT
  kStartTls,      // STARTTLS
  kAuthenticate,  // AUTHENTICATE mech [initial-response]
  kLogin,         // LOGIN user password
  kEnable,        // ENABLE cap...
  kId,            // ID (...)|NIL
  kSelect,        // SELECT mailbox [(params)]
  kExamine,       // EXAMINE mailbox [(params)]
  kCreate,        // CREATE mailbox
  kDelete,        // DELETE mailbox
  kRename,        // RENAME from to
  kSubscribe,     // SUBSCRIBE mailbox
  kUnsubscribe,   // UNSUBSCRIBE mailbox
  kList,          // LIST [(select-opts)] ref pattern(s) [RETURN (opts)]
  kLsub,          // LSUB ref pattern
  kNamespace,     // NAMESPACE
  kStatus,        // STATUS mailbox (items)
  kAppend,        // APPEND mailbox [flags] [date] literal
  kIdle,          // IDLE
  kCheck,         // CHECK
  kClose,         // CLOSE
  kUnselect,      // UNSELECT
  kExpunge,       // EXPUNGE, UID EXPUNGE set
  kSearch,        // [UID] SEARCH ...
  kFetch,         // [UID] FETCH set items
  kStore,         // [UID] STORE set [+-]FLAGS[.SILENT] flags
  kCopy,          // [UID] COPY set mailbox
  kMove,          // [UID] MOVE set mailbox
  kGetQuota,      // GETQUOTA root
  kGetQuotaRoot,  // GETQUOTAROOT mailbox
  kSetQuota,      // SETQUOTA root (limits)
};

const char* command_name(CommandName name);

// --- arguments ---------------------------------------------------------------------

struct LoginArgs {
  std::string user;
  std::string password;
};

struct AuthenticateArgs {
  std::string mechanism;                       // upper-cased
  std::optional<std::string> initial_response;  // SASL-IR: base64 as sent, "=" for empty
};

struct MailboxArgs {
  std::string mailbox;
  bool condstore = false;  // SELECT/EXAMINE (CONDSTORE)
};

struct RenameArgs {
  std::string from;
  std::string to;
};

struct ListArgs {
  std::string reference;
  std::vector<std::string> patterns;  // one, or several in LIST-EXTENDED's list form
  bool extended = false;              // LIST-EXTENDED syntax was used
  // Selection options (RFC 5258 3.1, RFC 6154).
  bool select_subscribed = false;
  bool select_remote = false;
  bool select_recursive = false;
  bool select_special_use = false;
  // Return options (RFC 5258 3.2, RFC 5819, RFC 6154).
  bool return_subscribed = false;
  bool return_children = false;
  bool return_special_use = false;
  std::vector<std::string> return_status;  // STATUS items, upper-cased (LIST-STATUS)
  bool lsub = false;  // this is LSUB
};

struct StatusArgs {
  std::string mailbox;
  std::vector<std::string> items;  // upper-cased: MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE DELETED HIGHESTMODSEQ APPENDLIMIT
};

// "17-Jul-1996 02:44:25 -0700" (RFC 3501 date-time).
struct DateTime {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  int zone = 0;  // minutes east of UTC
  int64_t to_unix() const;
};

// A date of SEARCH (no time, no zone).
struct Date {
  int year = 0, month = 0, day = 0;
  bool operator<(const Date& o) const {
    return year != o.year ? year < o.year : month != o.month ? month < o.month : day < o.day;
  }
  bool operator==(const Date& o) const { return year == o.year && month == o.month && day == o.day; }
};

struct AppendArgs {
  std::string mailbox;
  std::vector<std::string> flags;
  std::optional<DateTime> internal_date;
  std::string_view message;  // points into the RawCommand's text; empty when spooled
  bool binary = false;       // sent as literal8
  bool spooled = false;      // the message is in the session's spool (ReaderLimits::spool_above)
};

// SEARCH keys (RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 7162 MODSEQ).
struct SearchKey {
  enum class Op {
    kAll, kAnswered, kDeleted, kDraft, kFlagged, kSeen, kRecent, kNew, kOld,
    kUnanswered, kUndeleted, kUndraft, kUnflagged, kUnseen,
    kKeyword, kUnkeyword,                    // str = keyword
    kBcc, kCc, kFrom, kTo, kSubject, kBody, kText,  // str = value
    kHeader,                                 // header = field, str = value
    kBefore, kOn, kSince,                    // internal date vs date
    kSentBefore, kSentOn, kSentSince,        // Date: header vs date
    kLarger, kSmaller,                       // number = size
    kUid,                                    // set (UIDs)
    kSeqSet,                                 // set (sequence numbers)
    kModSeq,                                 // number = mod-sequence (CONDSTORE)
    kOlder, kYounger,                        // number = seconds (WITHIN, RFC 5032)
    kNot,                                    // children[0]
    kOr,                                     // children[0], children[1]
    kAnd,                                    // children (a parenthesised list, or the top level)
  };
  Op op = Op::kAll;
  std::string str;
  std::string header;
  uint64_t number = 0;
  Date date;
  SequenceSet set;
  std::vector<SearchKey> children;
};

struct SearchArgs {
  std::optional<std::string> charset;  // as sent; the session checks and converts
  SearchKey key;                       // kAnd of the top-level keys
  // ESEARCH result options (RFC 4731 / RFC 9051): empty `return_given` = plain SEARCH.
  bool return_given = false;
  bool ret_min = false, ret_max = false, ret_all = false, ret_count = false, ret_save = false;
};

// A BODY[...] / BINARY[...] section (RFC 3501 6.4.5).
struct Section {
  // What follows the part number.
  enum class Spec {
    kNone,             // BODY[] or BODY[1.2]: the whole message / the part's body
    kHeader,           // HEADER
    kHeaderFields,     // HEADER.FIELDS (fields)
    kHeaderFieldsNot,  // HEADER.FIELDS.NOT (fields)
    kText,             // TEXT
    kMime,             // MIME (needs a part number)
  };
  std::vector<uint32_t> part;
  Spec spec = Spec::kNone;
  std::vector<std::string> fields;  // as sent

  // "1.2.HEADER.FIELDS (FROM TO)" as it appears inside the brackets of a response.
  std::string to_string() const;
};

struct FetchAtt {
  enum class Kind {
    kEnvelope,       // ENVELOPE
    kFlags,          // FLAGS
    kInternalDate,   // INTERNALDATE
    kRfc822,         // RFC822: BODY[], sets \Seen
    kRfc822Header,   // RFC822.HEADER: BODY.PEEK[HEADER]
    kRfc822Size,     // RFC822.SIZE
    kRfc822Text,     // RFC822.TEXT: BODY[TEXT], sets \Seen
    kBody,           // BODY (non-extensible BODYSTRUCTURE)
    kBodyStructure,  // BODYSTRUCTURE
    kUid,
    kBodySection,    // BODY[section]<partial> / BODY.PEEK[...]
    kBinary,         // BINARY[section]<partial> / BINARY.PEEK[...]
    kBinarySize,     // BINARY.SIZE[section]
    kModSeq,         // MODSEQ (CONDSTORE)
  };
  Kind kind = Kind::kFlags;
  bool peek = false;
  Section section;
  std::optional<std::pair<uint64_t, uint64_t>> partial;  // <offset.count>
};

struct FetchArgs {
  SequenceSet set;
  std::vector<FetchAtt> atts;
  std::optional<uint64_t> changed_since;  // CONDSTORE
  bool vanished = false;                  // QRESYNC VANISHED (parsed, refused)
};

struct StoreArgs {
  SequenceSet set;
  enum class Mode {
    kReplace,  // FLAGS
    kAdd,      // +FLAGS
    kRemove,   // -FLAGS
  } mode = Mode::kReplace;
  bool silent = false;
  std::vector<std::string> flags;
  std::optional<uint64_t> unchanged_since;  // CONDSTORE
};

struct CopyArgs {
  SequenceSet set;
  std::string mailbox;
};

struct ExpungeArgs {
  std::optional<SequenceSet> uids;  // UID EXPUNGE (UIDPLUS)
};

struct EnableArgs {
  std::vector<std::string> capabilities;  // upper-cased
};

struct IdArgs {
  std::vector<std::pair<std::string, std::optional<std::string>>> fields;  // empty for NIL
};

struct QuotaArgs {
  std::string root;  // GETQUOTA/SETQUOTA root, or GETQUOTAROOT mailbox
};

using CommandArgs = std::variant<std::monostate, LoginArgs, AuthenticateArgs, MailboxArgs, RenameArgs, ListArgs,
                                 StatusArgs, AppendArgs, SearchArgs, FetchArgs, StoreArgs, CopyArgs, ExpungeArgs,
                                 EnableArgs, IdArgs, QuotaArgs>;

struct Command {
  std::string tag;
  CommandName name = CommandName::kNoop;
  bool uid = false;  // the UID prefix was used
  CommandArgs args;
};

}  // namespace tern::mra::imap
