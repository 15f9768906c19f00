// ternctl postmap: compile Postfix-style lookup tables (postmap(1)), and
// ternctl postmap -q KEY TABLE to query one (postmap -q).
#include <sysexits.h>

#include <cstdio>

#include "common/maps.h"
#include "master/ternctl.h"

namespace tern::ternctl {

int cmd_postmap(const Invocation& inv) {
  std::vector<std::string> args = inv.args;
  common::MapSyntax syntax = common::MapSyntax::kPostmap;
  std::string query;
  bool have_query = false;
  std::vector<std::string> tables;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-a") {
      syntax = common::MapSyntax::kAliases;  // aliases(5) syntax, as postalias(1)
    } else if (args[i] == "-q" && i + 1 < args.size()) {
      query = args[++i];
      have_query = true;
    } else if (!args[i].empty() && args[i][0] == '-') {
      std::fprintf(stderr, "ternctl postmap: unknown option %s\n", args[i].c_str());
      return EX_USAGE;
    } else {
      tables.push_back(args[i]);
    }
  }
  if (tables.empty()) {
    std::fprintf(stderr, "usage: ternctl postmap [-a] [type:]file...   or   ternctl postmap [-a] -q key [type:]file\n");
    return EX_USAGE;
  }
  if (have_query) {
    for (const std::string& t : tables) {
      auto m = common::Map::open(t, syntax);
      if (!m) {
        std::fprintf(stderr, "ternctl postmap: %s\n", m.error().message.c_str());
        return EX_UNAVAILABLE;
      }
      auto v = (*m)->lookup(query);
      if (!v) {
        std::fprintf(stderr, "ternctl postmap: %s\n", v.error().message.c_str());
        return EX_UNAVAILABLE;
      }
      if (v->has_value()) {
        std::printf("%s\n", (*v)->c_str());
        return EX_OK;
      }
    }
    return 1;  // not found, as postmap -q
  }
  int rc = EX_OK;
  for (const std::string& t : tables) {
    common::Status st = common::compile_map(t, syntax);
    if (!st) {
      std::fprintf(stderr, "ternctl postmap: %s\n", st.error().message.c_str());
      rc = st.error().kind == common::ErrorKind::kConfig ? EX_DATAERR : EX_CANTCREAT;
    }
  }
  return rc;
}

}  // namespace tern::ternctl
