// Lookup tables as Postfix has them: a text source compiled into LMDB (`ternctl
// postmap`, `newaliases`), or read as it is (texthash:).
//
// A map is named "type:path". lmdb:/etc/tern/virtual reads /etc/tern/virtual.lmdb,
// compiled from /etc/tern/virtual. hash: and btree: (Berkeley DB in Postfix) are read
// as lmdb: so lines from an existing main.cf keep working after `ternctl postmap`.
// texthash:/path reads the source itself. Keys are lower-cased at compile time and
// lookup time (Postfix's default).
//
// Two source syntaxes: postmap(1) tables ("key value...", whitespace) and aliases(5)
// ("name: value, value", where the value may be |command, /file or :include:/file).
// Both allow # comments and continuation lines that start with whitespace.
//
// Compiling writes a new file and renames it into place, so a reader sees the old
// table or the new one, never half of one; open maps notice the change on their own.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/lmdb.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace tern::common {

enum class MapSyntax {
  kPostmap,  // key whitespace value
  kAliases,  // key: value
};

// Parses a source file; errors name "path:line".
Result<std::vector<std::pair<std::string, std::string>>> parse_map_source(const std::string& text,
                                                                        const std::string& path, MapSyntax syntax);

// The text of a table's file (a texthash: table, an alias source, an :include:
// file) and the status of the same open file: the owner that decides who the
// file's |commands run as is the owner of the bytes read, never of a file swapped in
// after a stat by name (independent review, finding 1). A plain file only, of at
// most max_size bytes when max_size > 0.
Result<std::string> read_table_file(const std::string& path, struct stat& st, off_t max_size = 0);
// The same from a descriptor already open (`path` is for messages).
Result<std::string> read_table_fd(int fd, const std::string& path, struct stat& st, off_t max_size = 0);

// Compiles "type:path" (or a bare path, taken as lmdb:) from its source file.
Status compile_map(const std::string& spec, MapSyntax syntax);

class Map {
 public:
  // A root process (tern-mta's local helper, ternctl) never maps a compiled table
  // that another user owns (LMDB does not check a hostile file): each lookup runs
  // in a child that is the owner, on the file root opened (run_as, privilege.h;
  // independent review, finding 7). Root's own tables are mapped as always.
  static Result<std::unique_ptr<Map>> open(const std::string& spec, MapSyntax syntax);
  // The value, nullopt when absent; an error when the table cannot be read.
  Result<std::optional<std::string>> lookup(const std::string& key);
  const std::string& spec() const { return spec_; }
  // The owner of the file actually read: the compiled .lmdb for lmdb:/hash:/btree:
  // (Postfix takes the owner of the .db file, dict_open's dict->owner), the source
  // itself for texthash:. As of the last lookup (a table replaced by rename may have
  // a new owner). local(8) runs |command and /file entries with this uid.
  uid_t owner() const { return owner_; }

 private:
  Map() = default;
  Status refresh();
  std::string spec_;
  std::string type_;
  std::string path_;        // the file actually read
  MapSyntax syntax_ = MapSyntax::kPostmap;
  struct timespec mtime_ = {0, 0};
  ino_t inode_ = 0;
  uid_t owner_ = static_cast<uid_t>(-1);
  std::unique_ptr<lmdb::Env> env_;
  MDB_dbi dbi_ = 0;
  bool owner_reads_ = false;
  UniqueFd owned_fd_;  // owner_reads_: the compiled table of another user, opened by root, never mapped here
  std::vector<std::pair<std::string, std::string>> text_;  // texthash: sorted entries
};

}  // namespace tern::common
