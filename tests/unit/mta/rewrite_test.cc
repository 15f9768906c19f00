// Alias and virtual alias expansion with tables in memory.
#include "mta/rewrite.h"

#include <catch2/catch.hpp>
#include <map>

using namespace tern;
using mta::AddressClass;
using mta::Destination;
using mta::ExpandTables;
using mta::Expander;

namespace {

struct Fixture {
  std::map<std::string, std::string> virt, alias, includes;
  std::map<std::string, uid_t> owners;  // alias name -> owner of its table (default 0)
  bool fail_alias = false;
  ExpandTables t;
  Fixture() {
    t.virtual_alias = [this](const std::string& k) -> common::Result<std::optional<std::string>> {
      auto it = virt.find(k);
      return it == virt.end() ? std::optional<std::string>() : std::optional<std::string>(it->second);
    };
    t.alias = [this](const std::string& k) -> common::Result<std::optional<mta::AliasHit>> {
      if (fail_alias) return common::make_error(common::ErrorKind::kTemp, "alias table down");
      auto it = alias.find(k);
      if (it == alias.end()) return std::optional<mta::AliasHit>();
      auto o = owners.find(k);
      return std::optional<mta::AliasHit>(mta::AliasHit{it->second, o == owners.end() ? 0 : o->second});
    };
    t.classify = [](const std::string& d) -> common::Result<AddressClass> {
      if (d == "example.org" || d == "mail.example.org") return AddressClass::kLocal;
      if (d == "virtual.example") return AddressClass::kVirtualAlias;
      return AddressClass::kDefault;
    };
    t.read_include = [this](const std::string& p, uid_t) -> common::Result<std::pair<std::string, uid_t>> {
      auto it = includes.find(p);
      if (it == includes.end()) return common::make_error(common::ErrorKind::kNotFound, "no such file");
      return std::make_pair(it->second, static_cast<uid_t>(1000));
    };
    t.myorigin = "example.org";
  }
  std::vector<std::string> expand(const std::string& a) {
    Expander e(t);
    auto r = e.expand(a);
    REQUIRE(r.ok());
    std::vector<std::string> out;
    for (const Destination& d : *r) {
      const char* k = d.kind == Destination::Kind::kCommand ? "|" : d.kind == Destination::Kind::kFile ? "file:"
                      : d.kind == Destination::Kind::kError ? "error:" : "";
      out.push_back(k + d.value);
    }
    return out;
  }
};

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("no table entry: the address itself") {
  Fixture f;
  CHECK(f.expand("alice@example.org") == V{"alice@example.org"});
  CHECK(f.expand("bob@remote.example") == V{"bob@remote.example"});
}

TEST_CASE("aliases for local domains with extensions") {
  Fixture f;
  f.alias["postmaster"] = "root";
  f.alias["root"] = "alice, bob@remote.example";
  f.alias["list"] = "alice, \\bob, carol";
  CHECK(f.expand("postmaster@example.org") == V{"alice@example.org", "bob@remote.example"});
  // user+ext falls back to user; the result keeps no extension (aliases(5)).
  CHECK(f.expand("root+x@example.org") == V{"alice@example.org", "bob@remote.example"});
  CHECK(f.expand("list@example.org") == V{"alice@example.org", "bob@example.org", "carol@example.org"});
  // An unqualified result names a user of the alias's own local domain.
  CHECK(f.expand("list@mail.example.org") ==
        V{"alice@mail.example.org", "bob@mail.example.org", "carol@mail.example.org"});
  // Aliases do not apply to other domains.
  CHECK(f.expand("root@remote.example") == V{"root@remote.example"});
}

TEST_CASE("self reference and loops") {
  Fixture f;
  f.alias["alice"] = "alice, bob";
  CHECK(f.expand("alice@example.org") == V{"alice@example.org", "bob@example.org"});
  f.alias["a"] = "b";
  f.alias["b"] = "a2";
  f.alias["a2"] = "b2";
  f.alias["b2"] = "a";
  V r = f.expand("a@example.org");
  REQUIRE(r.size() == 1);
  CHECK(r[0].rfind("error:5.4.6", 0) == 0);
}

TEST_CASE("commands and files only from the alias table by default") {
  Fixture f;
  f.alias["prog"] = "|\"/usr/bin/prog -x, y\"";
  f.alias["log"] = "/var/log/mail.copy";
  f.alias["inc"] = ":include:/etc/mail/inc";
  f.includes["/etc/mail/inc"] = "# comment\nalice\n|/bin/evil\n/tmp/evil\n";
  CHECK(f.expand("prog@example.org") == V{"|/usr/bin/prog -x, y"});
  CHECK(f.expand("log@example.org") == V{"file:/var/log/mail.copy"});
  CHECK(f.expand("inc@example.org") ==
        V{"alice@example.org", "error:5.7.1 mail to command is restricted", "error:5.7.1 mail to file is restricted"});
  f.t.commands_from_include = true;
  f.t.files_from_include = true;
  CHECK(f.expand("inc@example.org") == V{"alice@example.org", "|/bin/evil", "file:/tmp/evil"});
  f.t.commands_from_alias = false;
  CHECK(f.expand("prog@example.org") == V{"error:5.7.1 mail to command is restricted"});
}

TEST_CASE("commands and files carry the owner of the table their entry came from") {
  // Postfix local(8): the owner of the alias table the entry was found in, not of
  // the first table; an :include: file's own owner for what it lists.
  Fixture f;
  f.t.commands_from_include = true;
  f.alias["both"] = "rootprog, userprog, inc";
  f.alias["rootprog"] = "|/bin/root-owned";
  f.alias["userprog"] = "|/bin/user-owned, /var/tmp/user-file";
  f.alias["inc"] = ":include:/etc/mail/inc";
  f.includes["/etc/mail/inc"] = "|/bin/included\n";
  f.owners["userprog"] = 1001;
  Expander e(f.t);
  auto r = e.expand("both@example.org");
  REQUIRE(r.ok());
  std::map<std::string, uid_t> got;
  for (const Destination& d : *r) got[d.value] = d.owner;
  CHECK(got == std::map<std::string, uid_t>{{"/bin/root-owned", 0},
                                            {"/bin/user-owned", 1001},
                                            {"/var/tmp/user-file", 1001},
                                            {"/bin/included", 1000}});
}

TEST_CASE("virtual aliases, catch-all and extension propagation") {
  Fixture f;
  f.virt["info@virtual.example"] = "alice@example.org bob@remote.example";
  f.virt["@virtual.example"] = "catchall@example.org";
  f.virt["sales@virtual.example"] = "sales@virtual.example, alice@example.org";
  f.virt["evil@virtual.example"] = "|/bin/sh";
  CHECK(f.expand("info@virtual.example") == V{"alice@example.org", "bob@remote.example"});
  CHECK(f.expand("anything@virtual.example") == V{"catchall@example.org"});
  // +ext matched through user@domain: the extension goes with the result.
  CHECK(f.expand("info+news@virtual.example") == V{"alice+news@example.org", "bob+news@remote.example"});
  CHECK(f.expand("sales@virtual.example") == V{"sales@virtual.example", "alice@example.org"});
  CHECK(f.expand("evil@virtual.example") == V{"error:5.7.1 mail to command or file is restricted (virtual_alias_maps)"});
  f.t.propagate_unmatched_extensions = false;
  CHECK(f.expand("info+news@virtual.example") == V{"alice@example.org", "bob@remote.example"});
}

TEST_CASE("expansion limit and duplicates") {
  Fixture f;
  std::string many;
  for (int i = 0; i < 50; ++i) many += "u" + std::to_string(i) + ", ";
  many += "u0, U0";
  f.alias["big"] = many;
  CHECK(f.expand("big@example.org").size() == 50);
  f.t.expansion_limit = 10;
  V r = f.expand("big@example.org");
  CHECK(r.size() == 11);
  CHECK(r.back().rfind("error:5.3.0", 0) == 0);
}

TEST_CASE("a failing table is a temporary error") {
  Fixture f;
  f.fail_alias = true;
  Expander e(f.t);
  auto r = e.expand("alice@example.org");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind == common::ErrorKind::kTemp);
}

TEST_CASE("split_alias_value") {
  CHECK(mta::split_alias_value("a, b,c ,, d", false) == V{"a", "b", "c", "d"});
  CHECK(mta::split_alias_value("|\"prog a, b\", x", false) == V{"|prog a, b", "x"});
  CHECK(mta::split_alias_value("a b\tc,d", true) == V{"a", "b", "c", "d"});
  CHECK(mta::split_alias_value("", true).empty());
}

TEST_CASE("split_extension") {
  using P = std::pair<std::string, std::string>;
  CHECK(mta::split_extension("user+ext", "+") == P{"user", "+ext"});
  CHECK(mta::split_extension("user-a+b", "+-") == P{"user", "-a+b"});
  CHECK(mta::split_extension("+user", "+") == P{"+user", ""});
  CHECK(mta::split_extension("user+ext", "") == P{"user+ext", ""});
}
