// Recipient expansion: virtual_alias_maps (any domain, catch-all "@domain"), then
// aliases(5) for local domains (addresses, |command, /file, :include:/file, \user),
// with recipient_delimiter extensions, recursion and fan-out limits, and Postfix's
// rules for who may use commands and files (allow_mail_to_commands,
// allow_mail_to_files: by default only the alias database itself, not :include:
// files, and never a virtual alias).
//
// Pure apart from the lookups it is given (maps and include-file reading are
// functions, so the unit tests drive it with tables in memory). Expansion happens
// once, when the message is queued; Postfix expands local aliases again at delivery,
// Tern keeps what was expanded at arrival so the queue says exactly what will be
// delivered (`ternctl queue show`).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "mta/address.h"

namespace tern::mta {

struct Destination {
  enum class Kind {
    kAddress,  // deliver to this address (local, virtual mailbox or remote)
    kCommand,  // pipe into this shell command (from aliases)
    kFile,     // append to this file (from aliases)
    kError,    // cannot be delivered: bounce with `value` as the reason ("5.7.1 text")
  };
  Kind kind = Kind::kAddress;
  std::string value;
  std::string orig;  // the recipient the client named (orig_to= in the log)
  uid_t owner = static_cast<uid_t>(-1);  // commands/files: owner of the alias or include file
};

// Where an alias entry came from, for allow_mail_to_commands / allow_mail_to_files.
enum class AliasSource { kAlias, kInclude };

// An aliases(5) entry and the owner of the table it was found in: each table of
// alias_maps has its own (Postfix local(8) takes the owner of the table the entry
// came from, not of the first one).
struct AliasHit {
  std::string value;
  uid_t owner = static_cast<uid_t>(-1);
};

struct ExpandTables {
  using Lookup = std::function<common::Result<std::optional<std::string>>(const std::string& key)>;
  using AliasLookup = std::function<common::Result<std::optional<AliasHit>>(const std::string& key)>;
  Lookup virtual_alias;  // keys "user@domain", "user", "@domain"; empty function: no table
  AliasLookup alias;     // keys "user"; local domains only
  std::function<common::Result<AddressClass>(const std::string& domain)> classify;
  // Reads an :include: file: its text and owner.
  // The text and owner of an :include: file named by an entry whose table (or
  // include file) `parent_owner` owns: opened with that owner's rights, as
  // Postfix local(8) does, so an include cannot read what its owner could not.
  std::function<common::Result<std::pair<std::string, uid_t>>(const std::string& path, uid_t parent_owner)>
      read_include;
  std::string delimiters = "+";
  std::string myorigin;            // domain for unqualified virtual alias results
  size_t expansion_limit = 1000;
  int recursion_limit = 20;
  bool propagate_unmatched_extensions = true;
  bool commands_from_alias = true, commands_from_include = false;
  bool files_from_alias = true, files_from_include = false;
};

class Expander {
 public:
  explicit Expander(const ExpandTables& tables) : t_(tables) {}
  // Expands one recipient (local@domain, domain lower-cased) into its destinations.
  // A lookup failure is a kTemp error (the caller answers 451 4.3.0 or defers).
  common::Result<std::vector<Destination>> expand(const std::string& address);
  // Whether the address (or its catch-all) is in virtual_alias_maps.
  common::Result<bool> has_virtual_alias(const std::string& address);
  // Whether the local part (with or without extension) is an alias.
  common::Result<bool> has_alias(const std::string& local_part);

 private:
  common::Status expand_one(const std::string& address, const std::string& orig, int depth,
                            std::vector<Destination>& out);
  // `self`: the alias name being expanded (a value naming it is the user itself).
  common::Status expand_alias_value(const std::string& value, const std::string& self, const std::string& domain,
                                    const std::string& orig,
                                    AliasSource source, uid_t owner, int depth, std::vector<Destination>& out);
  common::Result<std::optional<std::string>> virtual_lookup(const std::string& local, const std::string& domain,
                                                           bool local_domain, bool& matched_without_ext);
  void add(std::vector<Destination>& out, Destination d);

  const ExpandTables& t_;
};

// Splits an alias or virtual value into its items. aliases(5): commas separate and
// double quotes group ("|\"/bin/prog a, b\""), so a command keeps its spaces;
// virtual(5): commas and whitespace separate.
std::vector<std::string> split_alias_value(std::string_view value, bool whitespace_separates);

}  // namespace tern::mta
