// The command line of sendmail(1) as programs use it (Postfix sendmail(1)), and the
// -t header scan. Pure: argv and message bytes in, decisions out.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace tern::mta {

struct SendmailArgs {
  enum class Mode {
    kDeliver,      // read a message, submit it (the default)
    kSmtp,         // -bs: SMTP on standard input and output
    kPrintQueue,   // -bp, or invoked as mailq
    kNewAliases,   // -bi, -I, or invoked as newaliases
    kFlush,        // -q: retry deferred mail now
  };
  Mode mode = Mode::kDeliver;
  bool extract_recipients = false;  // -t
  bool ignore_dots = false;         // -i, -oi: a line with a single dot does not end the message
  bool verbose = false;             // -v
  std::optional<std::string> sender;  // -f / -r ("" or "<>" is the null sender)
  std::string full_name;            // -F
  std::string config;               // -C
  std::vector<std::string> overrides;  // -o key=value is not sendmail's; kept for tests: -O key=value
  std::vector<std::string> recipients;
};

// Parses argv (argv[0] decides mailq / newaliases). Unknown options that sendmail
// accepts and Postfix ignores (-odb, -odi, -oem, -oee, -om, -oA, -B, -N, -R, -U, -V,
// -X) are accepted. An error is a usage message.
common::Result<SendmailArgs> parse_sendmail_args(const std::vector<std::string>& argv);

// -t: the addresses in To, Cc and Bcc (and Resent-To/Cc/Bcc when present, which
// replace them, RFC 5322 3.6.6), from the header section. Groups, display names and
// comments are understood; "undisclosed-recipients:;" yields nothing.
std::vector<std::string> header_recipients(std::string_view headers);

// The message with Bcc headers (and their continuation lines) removed, for -t.
std::string remove_bcc(std::string_view message);

// Whether the header section has a header of this name (case-insensitive).
bool has_header(std::string_view headers, std::string_view name);

// Addresses out of an RFC 5322 address-list (To: value).
std::vector<std::string> parse_address_list(std::string_view value);

}  // namespace tern::mta
