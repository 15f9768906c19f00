#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "authd/userdb.h"

using namespace tern::authd;

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/tern-userdb-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};
}  // namespace

TEST_CASE("user records round-trip, including awkward values") {
  UserRecord u;
  u.name = "demo@example.test";
  u.password = "$y$j9T$abc$def";
  u.scram = {"SCRAM-SHA-256$4096:c2FsdA==$a:b", "SCRAM-SHA-1$4096:c2FsdA==$c:d"};
  u.home = "/var/mail/with\ttab=and=equals";
  u.quota_rule = "*:storage=1G";
  u.enabled = false;
  auto d = decode_user(u.name, encode_user(u));
  REQUIRE(d);
  CHECK(d->password == u.password);
  CHECK(d->scram == u.scram);
  CHECK(d->home == u.home);
  CHECK(d->quota_rule == u.quota_rule);
  CHECK_FALSE(d->enabled);
  CHECK(d->cram.empty());
  CHECK_FALSE(decode_user("x", "password"));        // no '='
  CHECK_FALSE(decode_user("x", "password=a\001z"));  // bad escape
  CHECK(decode_user("x", "future_field=1"));        // unknown fields ignored
  CHECK(decode_user("x", "scram=\tscram=")->scram.empty());  // found by the fuzzer
}

TEST_CASE("canonical user names") {
  CHECK(canonical_user("Demo@Example.TEST", "").value() == "demo@example.test");
  CHECK(canonical_user("demo", "example.test").value() == "demo@example.test");
  CHECK(canonical_user("demo", "").value() == "demo");
  CHECK_FALSE(canonical_user("a@b@c", ""));
  CHECK_FALSE(canonical_user("@b", ""));
  CHECK_FALSE(canonical_user("a@", ""));
  CHECK_FALSE(canonical_user("a b@c", ""));
  CHECK_FALSE(canonical_user("", ""));
}

TEST_CASE("templates expand Dovecot variables") {
  CHECK(expand_template("/var/mail/vhosts/%d/%n", "demo@example.test") == "/var/mail/vhosts/example.test/demo");
  CHECK(expand_template("%u|%%|%{domain}|%{username}|%x", "a@b") == "a@b|%|b|a|%x");
  CHECK(expand_template("maildir:~/Maildir", "a@b") == "maildir:~/Maildir");
}

TEST_CASE("userdb fields: user over domain over default") {
  UserdbDefaults def{"5000", "5000", "/var/mail/vhosts/%d/%n", "maildir:~/Maildir", ""};
  UserRecord u;
  u.name = "demo@example.test";
  DomainRecord d;
  d.name = "example.test";
  d.home = "/srv/%d/%n";
  auto f = userdb_fields(u, &d, def);
  REQUIRE(f.size() == 4);
  CHECK(f[0] == std::make_pair(std::string("uid"), std::string("5000")));
  CHECK(f[2].second == "/srv/example.test/demo");
  u.uid = "6001";
  u.quota_rule = "*:storage=10M";
  f = userdb_fields(u, &d, def);
  CHECK(f[0].second == "6001");
  REQUIRE(f.size() == 5);
  CHECK(f[4] == std::make_pair(std::string("quota_rule"), std::string("*:storage=10M")));
  f = userdb_fields(u, nullptr, def);
  CHECK(f[2].second == "/var/mail/vhosts/example.test/demo");
}

TEST_CASE("glob masks") {
  CHECK(glob_match("*", "anything"));
  CHECK(glob_match("*@example.test", "demo@example.test"));
  CHECK_FALSE(glob_match("*@example.test", "demo@example.org"));
  CHECK(glob_match("d?mo@*", "demo@x"));
  CHECK(glob_match("", ""));
  CHECK_FALSE(glob_match("", "a"));
}

TEST_CASE("the LMDB database stores, lists and deletes users and domains") {
  TempDir dir;
  auto db = UserDb::open(dir.path + "/users.lmdb", true);
  REQUIRE(db);
  UserRecord a;
  a.name = "a@one.test";
  a.password = "$y$x";
  REQUIRE((*db)->put_user(a, true));
  CHECK((*db)->put_user(a, true).error().kind == tern::common::ErrorKind::kExists);
  REQUIRE((*db)->put_user(a, false));
  UserRecord b = a;
  b.name = "b@two.test";
  REQUIRE((*db)->put_user(b, true));
  CHECK((*db)->get_user("a@one.test")->password == "$y$x");
  CHECK((*db)->get_user("nobody@one.test").error().kind == tern::common::ErrorKind::kNotFound);
  CHECK((*db)->list_users("", 100).value() == std::vector<std::string>{"a@one.test", "b@two.test"});
  CHECK((*db)->list_users("*@two.test", 100).value() == std::vector<std::string>{"b@two.test"});
  CHECK((*db)->list_users("", 1)->size() == 1);
  DomainRecord d;
  d.name = "one.test";
  REQUIRE((*db)->put_domain(d, true));
  CHECK((*db)->del_domain("one.test", false).error().kind == tern::common::ErrorKind::kInUse);
  REQUIRE((*db)->del_domain("one.test", true));
  CHECK_FALSE((*db)->get_user("a@one.test"));
  REQUIRE((*db)->del_user("b@two.test"));
  CHECK((*db)->del_user("b@two.test").error().kind == tern::common::ErrorKind::kNotFound);
  // A second handle (another process, in real life) sees the writes at once.
  auto db2 = UserDb::open(dir.path + "/users.lmdb", false);
  REQUIRE(db2);
  CHECK((*db2)->list_users("", 100)->empty());
  CHECK_FALSE(UserDb::open(dir.path + "/missing.lmdb", false));
}

TEST_CASE("any_scram: whether SCRAM can still be offered with auth_scram_secrets = no") {
  TempDir dir;
  auto db = UserDb::open(dir.path + "/users.lmdb", true);
  REQUIRE(db);
  CHECK((*db)->any_scram().value() == false);  // empty
  UserRecord a;
  a.name = "a@one.test";
  a.password = "$y$x";
  // A field that merely contains the word is not a secret.
  a.home = "/var/mail/scram=";
  REQUIRE((*db)->put_user(a, true));
  CHECK((*db)->any_scram().value() == false);
  UserRecord b = a;
  b.name = "b@one.test";
  b.scram = {"SCRAM-SHA-256$10000:c2FsdA==$a:b"};
  REQUIRE((*db)->put_user(b, true));
  CHECK((*db)->any_scram().value() == true);
  REQUIRE((*db)->del_user("b@one.test"));
  CHECK((*db)->any_scram().value() == false);
}
