// The Dovecot authentication protocols as Tern speaks them, defined once for both
// sides: tern-authd serves them; tern-mta, tern-mra and tern-mda use
// common/auth_client.h; a real Postfix (smtpd_sasl_type = dovecot) speaks the
// auth-client side on its own.
//
// auth-client (Dovecot "auth protocol" 1.2; socket $base_dir/auth-client, mode 0666):
//
//   server -> client on connect        client -> server
//   VERSION  1  2                      VERSION  1  2
//   MECH  PLAIN  plaintext             CPID  <pid>
//   MECH  SCRAM-SHA-256  mutual-auth
//   SPID  <server pid>                 AUTH  <id>  <mech>  service=smtp  [secured]
//   CUID  <connection id>                    [no-penalty]  [final-resp-ok]  lip=  rip=  lport=  rport=
//   COOKIE  <32 hex digits>                  [resp=<base64 initial response>]
//   DONE                               CONT  <id>  <base64 response>
//
//   server -> client per request: CONT <id> <base64 challenge> | OK <id> user=<u> ... |
//   FAIL <id> [reason=<text>] [temp] [user=<u>]
//
// auth-userdb (Dovecot "auth-master" 1.0; socket $base_dir/auth-userdb; only root,
// mail_uid, mail_owner and auth_userdb_allow_users may use it, by SO_PEERCRED):
//
//   server -> client on connect: VERSION 1 0, SPID <pid>; client sends VERSION 1 0.
//   USER <id> <user> service=<s> ...        -> USER <id> <user> uid= gid= home= mail= quota_rule=
//                                              | NOTFOUND <id> | FAIL <id> reason=
//   PASS <id> <user> service=<s> ...        -> PASS <id> user=<u> (never a password field)
//                                              | NOTFOUND <id> | FAIL <id> reason=
//   REQUEST <id> <client pid> <auth id> <cookie>
//                                           -> USER <id> <user> <userdb fields> | NOTFOUND <id>
//                                              | FAIL <id> reason=
//   LIST <id> [user=<mask>]                 -> LIST <id> <user> ... DONE <id> | FAIL <id>
//
// Lines are TAB-separated and end in LF. A value containing TAB, LF, CR or \001 is
// escaped as Dovecot's str_tabescape does (\001 -> \0011, TAB -> \001t, LF -> \001n,
// CR -> \001r). This header also holds the pure parser of such lines: bytes in, a
// command or an error out, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::common::auth_protocol {

// auth-client protocol version (Dovecot AUTH_CLIENT_PROTOCOL_MAJOR/MINOR_VERSION).
inline constexpr unsigned kClientMajor = 1;
inline constexpr unsigned kClientMinor = 2;
// auth-master (userdb) protocol version (Dovecot AUTH_MASTER_PROTOCOL_*).
inline constexpr unsigned kMasterMajor = 1;
inline constexpr unsigned kMasterMinor = 0;

// Socket names under base_dir (the names tern-master's service table binds).
inline constexpr const char* kClientSocket = "auth-client";
inline constexpr const char* kUserdbSocket = "auth-userdb";

// Longest line either side accepts, terminator excluded. Dovecot uses 16 KiB; an
// initial response or a CONT carries at most one SASL message in base64, so SASL
// messages are bounded at kMaxSaslMessage decoded bytes (3/4 of the line, less the
// command words).
inline constexpr size_t kMaxLineLength = 16384;
inline constexpr size_t kMaxSaslMessage = 8192;
// Requests one auth-client connection may have in flight. Postfix has one per smtpd
// process and a login process one per client connection in authentication; the bound
// stops one peer from holding the whole daemon's memory.
inline constexpr size_t kMaxRequestsPerConnection = 1024;
// Userdb lookups one auth-userdb connection may have in flight.
inline constexpr size_t kMaxUserdbRequests = 1024;
// Longest user name accepted ("local@domain"): RFC 5321 4.5.3.1 allows 64 + 1 + 255.
inline constexpr size_t kMaxUserName = 320;
// The connection cookie: 16 random bytes, sent as 32 lowercase hex digits.
inline constexpr size_t kCookieHexLength = 32;
// Request ids are unsigned 32-bit decimal numbers chosen by the client.
using RequestId = uint32_t;

// Dovecot's str_tabescape / str_tabunescape.
std::string tab_escape(std::string_view s);
// nullopt on a \001 not followed by 1, t, n or r.
std::optional<std::string> tab_unescape(std::string_view s);

// One parsed line: the command word and its unescaped arguments.
struct Line {
  std::string command;
  std::vector<std::string> args;
};
// Why a line was rejected.
enum class LineError {
  kEmpty,       // nothing on the line
  kNul,         // a NUL byte (never valid in this protocol)
  kBadEscape,   // a broken \001 escape
  kTooManyArgs, // more than kMaxArgs fields
};
inline constexpr size_t kMaxArgs = 64;  // AUTH has about a dozen; 64 leaves room
struct ParsedLine {
  bool ok = false;
  Line line;
  LineError error = LineError::kEmpty;
};
// Splits one line (without its LF; a trailing CR is removed) into fields.
ParsedLine parse_line(std::string_view text);
const char* line_error_text(LineError e);

// Builds a line: words joined by TAB, each escaped, ending in LF.
std::string make_line(std::initializer_list<std::string_view> words);
std::string make_line(const std::vector<std::string>& words);

// A "key=value" or bare "key" argument.
struct Field {
  std::string_view key;
  std::string_view value;
  bool has_value = false;
};
Field split_field(std::string_view arg);

// Parses a request id ("1" .. "4294967295"; 0 is invalid as in Dovecot).
std::optional<RequestId> parse_request_id(std::string_view s);

// ---- auth-client: the parsed AUTH command ---------------------------------------
struct AuthCommand {
  RequestId id = 0;
  std::string mech;           // upper-cased
  std::string service;        // "smtp", "imap", "pop3", "submission"...
  std::string lip, rip;       // local and remote IP as the login process saw them
  std::string lport, rport;
  bool secured = false;       // TLS, or a connection the login process trusts
  bool valid_client_cert = false;
  bool no_penalty = false;    // the login process already applied a penalty
  bool final_resp_ok = false; // the client takes the server's last SASL message in OK
                              // (resp=); otherwise it comes as a CONT answered empty
  bool has_initial_response = false;
  std::string initial_response;  // decoded bytes of resp=
};
// Why an AUTH line is malformed (the reply is a FAIL or a disconnect).
enum class AuthParseError {
  kNone,
  kMissingArgs,     // fewer than id and mechanism
  kBadId,           // not a positive 32-bit number
  kBadMech,         // empty or not a SASL mechanism name (RFC 4422 3.1)
  kNoService,       // service= missing (Dovecot requires it)
  kBadBase64,       // resp= is not base64
  kTooLong,         // resp= decodes to more than kMaxSaslMessage
};
struct AuthParse {
  AuthParseError error = AuthParseError::kNone;
  AuthCommand cmd;
};
AuthParse parse_auth(const Line& line);
const char* auth_parse_error_text(AuthParseError e);

// A CONT line: id and decoded response.
struct ContParse {
  bool ok = false;
  RequestId id = 0;
  std::string response;
  const char* error = "";
};
ContParse parse_cont(const Line& line);

// RFC 4422 3.1: 1-20 characters of A-Z 0-9 - _.
bool valid_mech_name(std::string_view m);

// User names accepted anywhere in the protocols: 1..kMaxUserName bytes, printable
// UTF-8 or ASCII without controls, TAB, space or the characters that would break a
// log line or a path (/ and NUL are refused; '@' at most once is not enforced here).
bool valid_user_name(std::string_view u);

}  // namespace tern::common::auth_protocol
