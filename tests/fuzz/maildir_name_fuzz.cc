// Fuzzes Maildir file-name parsing (common/maildir.h), which every reader of a
// Maildir runs on names other programs and the mailbox owner chose: parse_name,
// normalize_flags, make_name, valid_entry_name. Invariants: the base is the name up
// to its first ':'; flags come out sorted, unique and normalised (normalising twice
// changes nothing); make_name() of a parsed name parses back to the same base and
// flags; a name with '/' or NUL, or a dotfile, is never a valid entry.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/maildir.h"

using namespace tern::common::maildir;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view name(reinterpret_cast<const char*>(data), size);
  FileName f = parse_name(name);
  if (f.base != name.substr(0, name.find(':'))) __builtin_trap();
  if (normalize_flags(f.flags) != f.flags) __builtin_trap();
  if (!std::is_sorted(f.flags.begin(), f.flags.end())) __builtin_trap();
  if (std::adjacent_find(f.flags.begin(), f.flags.end()) != f.flags.end()) __builtin_trap();
  const std::string again = make_name(f.base, f.flags);
  FileName g = parse_name(again);
  if (g.base != f.base || g.flags != f.flags || !g.has_info) __builtin_trap();
  if (g.size != f.size || g.vsize != f.vsize) __builtin_trap();
  const bool bad = name.empty() || name[0] == '.' || name.find('/') != std::string_view::npos ||
                   name.find('\0') != std::string_view::npos;
  if (bad && valid_entry_name(name)) __builtin_trap();
  (void)sanitize_host(name);
  return 0;
}
