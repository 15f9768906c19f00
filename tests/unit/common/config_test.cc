// config.h: tern.conf parsing on good and bad files. Every error names file:line;
// continuation lines, comments, $name expansion in all its forms, computed defaults,
// dump() as `ternctl config` [-n] prints it, and set() overrides.
#include "common/config.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "common/text.h"

using namespace tern::common;
using namespace std::string_literals;

namespace {

Config parse_ok(const std::string& text) {
  Result<Config> c = Config::parse(text, "t.conf");
  if (!c) FAIL("unexpected error: " << c.error().message);
  return std::move(c).value();
}

std::string parse_error(const std::string& text) {
  Result<Config> c = Config::parse(text, "t.conf");
  if (c) FAIL("parsed but should not have: " << text);
  CHECK(c.error().kind == ErrorKind::kConfig);
  return c.error().message;
}

// The first key of a type in the table, so that the tests keep covering every type
// as areas add keys (nullptr when no key of that type exists yet).
const KeyDef* first_key_of(KeyType t) {
  for (const KeyDef& k : known_keys()) {
    if (k.type == t && std::string_view(k.default_value) != "@computed") return &k;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("a good file: values, spacing, comments, continuation lines", "[config]") {
  Config c = parse_ok(
      "# a comment line\n"
      "myhostname=mail.example.org\n"
      "   # an indented comment is still a comment\n"
      "mydomain   =   example.org   \n"
      "\n"
      "mydestination = $myhostname,\n"
      "    localhost.$mydomain,\n"
      "\n"                    // a blank line does not end the value
      "    # nor does a comment\n"
      "\tlocalhost\n"
      "syslog_name = tern # not a comment: only whole lines are\n"
      "smtpd_port = 2525\r\n"  // CRLF line endings are accepted
      "tern_debug = YES\n"
      "master_stop_timeout = 2m\n"
      "maillog_file =\n");
  CHECK(c.str("myhostname") == "mail.example.org");
  CHECK(c.str("mydomain") == "example.org");
  CHECK(c.raw("mydestination") == "$myhostname, localhost.$mydomain, localhost");
  CHECK(c.str("mydestination") == "mail.example.org, localhost.example.org, localhost");
  CHECK(c.list("mydestination") == std::vector<std::string>{"mail.example.org", "localhost.example.org", "localhost"});
  CHECK(c.str("syslog_name") == "tern # not a comment: only whole lines are");
  CHECK(c.integer("smtpd_port") == 2525);
  CHECK(c.boolean("tern_debug"));
  CHECK(c.seconds("master_stop_timeout") == 120);
  CHECK(c.str("maillog_file") == "");
  CHECK(c.is_set("maillog_file"));
  CHECK_FALSE(c.is_set("imap_port"));
  CHECK(c.integer("imap_port") == 143);
  CHECK(c.origin("myhostname") == "t.conf:2");
  CHECK(c.origin("mydestination") == "t.conf:6");
  CHECK(c.origin("imap_port") == "default");
  CHECK(c.path() == "t.conf");
}

TEST_CASE("a file without a final newline, and an empty file", "[config]") {
  CHECK(parse_ok("smtpd_port = 26").integer("smtpd_port") == 26);
  CHECK(parse_ok("").integer("smtpd_port") == 25);
  CHECK(parse_ok("\n\n# only comments\n").integer("smtpd_port") == 25);
}

TEST_CASE("a key set twice: the last one wins, with its line", "[config]") {
  Config c = parse_ok("smtpd_port = 1\nsmtpd_port = 2\n");
  CHECK(c.integer("smtpd_port") == 2);
  CHECK(c.origin("smtpd_port") == "t.conf:2");
}

TEST_CASE("every parse error names file:line", "[config]") {
  struct Case {
    const char* name;
    std::string text;
    std::string error;  // the whole message
  };
  const Case cases[] = {
      {"unknown key, with a suggestion", "myhostname = a.b\nmyhostnme = x\n",
       "t.conf:2: unknown parameter 'myhostnme'; did you mean 'myhostname'?"},
      {"unknown key, Dovecot spelling slip", "ssl_cret = /x\n",
       "t.conf:1: unknown parameter 'ssl_cret'; did you mean 'ssl_cert'?"},
      {"unknown key, nothing close", "\n\nzzzzzzzzzzzzzzzzzz = 1\n",
       "t.conf:3: unknown parameter 'zzzzzzzzzzzzzzzzzz'"},
      {"unknown key on a continued value: the line of the key", "nosuch = a\n  b\n",
       "t.conf:1: unknown parameter 'nosuch'"},
      {"missing '='", "# c\nmyhostname mail.example.org\n",
       "t.conf:2: missing '=' after parameter name 'myhostname mail.example.org'"},
      {"bad name", "my-hostname = x\n", "t.conf:1: bad parameter name 'my-hostname'"},
      {"bad name with a space", "my hostname = x\n", "t.conf:1: bad parameter name 'my hostname'"},
      {"empty name", "= x\n", "t.conf:1: bad parameter name ''"},
      {"bad name is escaped", "my\x01name = x\n", "t.conf:1: bad parameter name 'my\\001name'"},
      {"continuation without a key", "  indented = 1\n",
       "t.conf:1: continuation line without a parameter before it"},
      {"continuation after comments only", "# c\n\n\tvalue\n",
       "t.conf:3: continuation line without a parameter before it"},
      {"NUL byte", "myhostname = a\nmydomain = b\0c\n"s, "t.conf:2: NUL byte in line"},
      {"NUL byte in a comment", "# \0\n"s, "t.conf:1: NUL byte in line"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    CHECK(parse_error(c.text) == c.error);
  }
}

TEST_CASE("bad values name file:line, the key, and what is wrong", "[config]") {
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"tern_debug = maybe\n", "t.conf:1: parameter 'tern_debug': 'maybe' is not yes or no"},
      {"tern_debug =\n", "t.conf:1: parameter 'tern_debug': '' is not yes or no"},
      {"\nsmtpd_port = 25x\n", "t.conf:2: parameter 'smtpd_port': '25x' is not a number"},
      {"smtpd_port = -1\n", "t.conf:1: parameter 'smtpd_port': -1 is out of range 0..65535"},
      {"smtpd_port = 65536\n", "t.conf:1: parameter 'smtpd_port': 65536 is out of range 0..65535"},
      {"smtpd_port = 99999999999999999999\n", "t.conf:1: parameter 'smtpd_port': '99999999999999999999' is not a number"},
      {"master_stop_timeout = 10x\n",
       "t.conf:1: parameter 'master_stop_timeout': '10x' is not a time (a number with unit s, m, h, d or w)"},
      {"master_stop_timeout = 2h\n",
       "t.conf:1: parameter 'master_stop_timeout': 2h is out of range 1s..3600s"},
      {"master_stop_timeout = 0\n",
       "t.conf:1: parameter 'master_stop_timeout': 0 is out of range 1s..3600s"},
      {"master_stop_timeout = s\n",
       "t.conf:1: parameter 'master_stop_timeout': 's' is not a time (a number with unit s, m, h, d or w)"},
      // The value is checked after expansion; the error names the line of the key.
      {"imap_port = x\nsmtpd_port = $imap_port\n", "t.conf:1: parameter 'imap_port': 'x' is not a number"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK(parse_error(c.text) == c.error);
  }
}

TEST_CASE("every key type rejects junk with file:line", "[config]") {
  struct Case {
    KeyType type;
    const char* bad;
    const char* why;
  };
  const Case cases[] = {
      {KeyType::kBool, "1", "is not yes or no"},
      {KeyType::kInt, "1.5", "is not a number"},
      {KeyType::kTime, "5 minutes", "is not a time"},
      {KeyType::kSize, "10 MB", "is not a size"},
      {KeyType::kSize, "-1", "is not a size"},
  };
  for (const Case& c : cases) {
    const KeyDef* k = first_key_of(c.type);
    if (!k) {
      WARN("no key of this type in the table yet; its checks are covered by the parse_* tests");
      continue;
    }
    std::string text = "# x\n"s + k->name + " = " + c.bad + "\n";
    CAPTURE(text);
    std::string err = parse_error(text);
    CHECK(err.rfind("t.conf:2: parameter '"s + k->name + "': ", 0) == 0);
    CHECK(err.find(c.why) != std::string::npos);
  }
}

TEST_CASE("expansion errors name file:line and the key", "[config]") {
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"myorigin = $nosuch\n", "t.conf:1: parameter 'myorigin': $nosuch: unknown parameter 'nosuch'"},
      {"myorigin = ${myhostnme}\n",
       "t.conf:1: parameter 'myorigin': $myhostnme: unknown parameter 'myhostnme'; did you mean 'myhostname'?"},
      {"myorigin = ${myhostname\n", "t.conf:1: parameter 'myorigin': unterminated {"},
      {"myorigin = $(myhostname\n", "t.conf:1: parameter 'myorigin': unterminated ("},
      {"myorigin = ${}\n", "t.conf:1: parameter 'myorigin': $: unknown parameter ''"},
      {"myorigin = ${nosuch?x}\n", "t.conf:1: parameter 'myorigin': $nosuch: unknown parameter 'nosuch'"},
      {"myorigin = ${myhostname?$nosuch}\n", "t.conf:1: parameter 'myorigin': $nosuch: unknown parameter 'nosuch'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK(parse_error(c.text) == c.error);
  }
}

TEST_CASE("an expansion loop is an error naming the loop, not a hang or a crash", "[config]") {
  struct Case {
    std::string text;
    std::string error;
  };
  const Case cases[] = {
      {"# x\nmyorigin = $myorigin\n", "t.conf:2: parameter 'myorigin': $name expansion loops: myorigin -> myorigin"},
      {"myhostname = $mydomain\nmydomain = x.$myhostname\n",
       "t.conf:1: parameter 'myhostname': $name expansion loops: myhostname -> mydomain -> myhostname"},
      {"myorigin = ${myhostname?$myorigin}\n",
       "t.conf:1: parameter 'myorigin': $name expansion loops: myorigin -> myorigin"},
      // Through a computed default (mydomain is computed from myhostname): this one
      // used to recurse until the stack overflowed.
      {"myhostname = $mydomain\n",
       "t.conf:1: parameter 'myhostname': $name expansion loops: myhostname -> mydomain -> myhostname"},
      // Through a plain default (myorigin = $myhostname): blamed on the line of a key
      // in the loop that the file sets, never on "default".
      {"mail_name = x\nmyhostname = a.$myorigin\n",
       "t.conf:2: parameter 'myhostname': $name expansion loops: myhostname -> myorigin -> myhostname"},
      {"syslog_name = $myorigin\nmyhostname = $mail_name.$syslog_name\n",
       "t.conf:1: parameter 'syslog_name': $name expansion loops: syslog_name -> myorigin -> myhostname -> syslog_name"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    CHECK(parse_error(c.text) == c.error);
  }
}

TEST_CASE("deeply nested conditionals are refused, not a stack overflow", "[config]") {
  std::string v;
  for (int i = 0; i < 100000; ++i) v += "${myhostname?";
  v += "x" + std::string(100000, '}');
  std::string e = parse_error("myhostname = a.b\nmyorigin = " + v + "\n");
  CHECK(e == "t.conf:2: parameter 'myorigin': $name expansion nested too deeply");
}

TEST_CASE("an expansion that doubles at every level is refused, not computed", "[config]") {
  // Eight keys, each naming the next one 16 times: 16^7 references and 2^28 bytes if
  // it were expanded in full.
  const char* keys[] = {"mail_name", "syslog_name", "myorigin", "queue_directory", "data_directory",
                        "base_dir", "daemon_directory", "command_directory"};
  std::string text;
  for (int i = 0; i < 7; ++i) {
    text += std::string(keys[i]) + " = ";
    for (int j = 0; j < 16; ++j) text += "$" + std::string(keys[i + 1]);
    text += "\n";
  }
  text += std::string(keys[7]) + " = xy\n";
  std::string e = parse_error(text);
  CHECK(e.rfind("t.conf:", 0) == 0);
  CHECK(e.find("expansion is too large") != std::string::npos);
}

TEST_CASE("$name, ${name}, $(name), $$ and the conditional forms", "[config]") {
  struct Case {
    std::string value;  // of myorigin
    std::string want;
  };
  const std::string base = "myhostname = mail.example.org\nmaillog_file =\n";
  const Case cases[] = {
      {"$myhostname", "mail.example.org"},
      {"${myhostname}", "mail.example.org"},
      {"$(myhostname)", "mail.example.org"},
      {"x$myhostname.y", "xmail.example.org.y"},  // a name ends at the first non-name byte
      {"${myhostname}suffix", "mail.example.orgsuffix"},
      {"$$myhostname", "$myhostname"},
      {"$$", "$"},
      {"a$", "a$"},                 // a '$' at the end stays
      {"$-x", "$-x"},               // '$' not followed by a name stays
      {"${myhostname?set}", "set"},         // non-empty: the text
      {"${maillog_file?set}", ""},          // empty: nothing
      {"${myhostname:unset}", ""},          // non-empty: nothing
      {"${maillog_file:unset}", "unset"},   // empty: the text
      {"${maillog_file:$myhostname}", "mail.example.org"},  // the text is expanded too
      {"${myhostname?[$myhostname]}", "[mail.example.org]"},
      {"${myhostname?${mydomain}}", "example.org"},  // brackets nest
      {"${maillog_file:${myhostname?(${mydomain})}}", "(example.org)"},
      {"$(myhostname?yes)", "yes"},
      {"$mydomain", "example.org"},  // a computed default from a set key
  };
  for (const Case& c : cases) {
    CAPTURE(c.value);
    Config cfg = parse_ok(base + "myorigin = " + c.value + "\n");
    CHECK(cfg.str("myorigin") == c.want);
    CHECK(cfg.raw("myorigin") == c.value);
  }
}

TEST_CASE("computed defaults", "[config]") {
  SECTION("mydomain follows a configured myhostname") {
    Config c = parse_ok("myhostname = mx1.mail.example.net\n");
    CHECK(c.str("mydomain") == "mail.example.net");
    CHECK(c.str("myorigin") == "mx1.mail.example.net");  // default $myhostname
    CHECK(c.list("mydestination") ==
          std::vector<std::string>{"mx1.mail.example.net", "localhost.mail.example.net", "localhost"});
    CHECK(c.origin("mydomain") == "default");
  }
  SECTION("myhostname defaults to the system name, fully qualified") {
    char buf[256] = {};
    REQUIRE(::gethostname(buf, sizeof buf - 1) == 0);
    std::string h = to_lower(buf);
    if (h.find('.') == std::string::npos) h += ".localdomain";
    Config c;
    CHECK(c.str("myhostname") == h);
    CHECK(c.str("mydomain") == h.substr(h.find('.') + 1));
  }
  SECTION("a set mydomain wins over the computed one") {
    Config c = parse_ok("myhostname = a.b.c\nmydomain = other.test\n");
    CHECK(c.str("mydomain") == "other.test");
  }
}

TEST_CASE("Dovecot's '<file' form of ssl_cert and ssl_key", "[config]") {
  Config c = parse_ok("ssl_cert = </etc/ssl/x.pem\nssl_key = < /etc/ssl/x.key\n");
  CHECK(c.str("ssl_cert") == "/etc/ssl/x.pem");
  CHECK(c.str("ssl_key") == "/etc/ssl/x.key");
  Config d = parse_ok("smtpd_tls_cert_file = /c.pem\n");
  CHECK(d.str("ssl_cert") == "/c.pem");  // defaults to the Postfix key
  CHECK(d.str("ssl_key") == "/c.pem");   // via smtpd_tls_key_file's default
}

TEST_CASE("typed parsers", "[config]") {
  SECTION("bool") {
    CHECK(Config::parse_bool("yes") == true);
    CHECK(Config::parse_bool("YES") == true);
    CHECK(Config::parse_bool("true") == true);
    CHECK(Config::parse_bool("no") == false);
    CHECK(Config::parse_bool("False") == false);
    CHECK_FALSE(Config::parse_bool("1"));
    CHECK_FALSE(Config::parse_bool("on"));
    CHECK_FALSE(Config::parse_bool(""));
    CHECK_FALSE(Config::parse_bool("yes "));
  }
  SECTION("int") {
    CHECK(Config::parse_int("0") == 0);
    CHECK(Config::parse_int("-5") == -5);
    CHECK(Config::parse_int("9223372036854775807") == INT64_MAX);
    CHECK_FALSE(Config::parse_int("9223372036854775808"));
    CHECK_FALSE(Config::parse_int("-"));
    CHECK_FALSE(Config::parse_int("--1"));
    CHECK_FALSE(Config::parse_int("+1"));
    CHECK_FALSE(Config::parse_int(""));
    CHECK_FALSE(Config::parse_int("1k"));
  }
  SECTION("time") {
    struct Case {
      const char* in;
      char unit;
      std::optional<int64_t> want;
    };
    const Case cases[] = {
        {"10", 's', 10},  {"10", 'm', 600},   {"10s", 'm', 10},   {"3m", 's', 180},
        {"2h", 's', 7200}, {"1d", 's', 86400}, {"1w", 's', 604800}, {"5M", 's', 300},  // units fold case
        {"0", 's', 0},     {"", 's', std::nullopt},  {"s", 's', std::nullopt},  {"1x", 's', std::nullopt},
        {"-1s", 's', std::nullopt}, {"1.5h", 's', std::nullopt}, {"1 h", 's', std::nullopt},
        {"1hh", 's', std::nullopt}, {"99999999999999999w", 's', std::nullopt},  // overflow
        {"10", 0, 10},
    };
    for (const Case& c : cases) {
      CAPTURE(c.in, c.unit);
      CHECK(Config::parse_time(c.in, c.unit) == c.want);
    }
  }
  SECTION("size") {
    struct Case {
      const char* in;
      std::optional<uint64_t> want;
    };
    const Case cases[] = {
        {"0", 0},
        {"10240000", 10240000},
        {"1k", 1024},
        {"1K", 1024},
        {"10M", 10u << 20},
        {"10MB", 10u << 20},
        {"2G", 2ull << 30},
        {"1T", 1ull << 40},
        {"16777215T", 16777215ull << 40},
        {"16777216T", std::nullopt},  // 2^64: overflow
        {"", std::nullopt},
        {"B", std::nullopt},
        {"k", std::nullopt},
        {"kB", std::nullopt},
        {"1.5M", std::nullopt},
        {"-1", std::nullopt},
        {"1X", std::nullopt},
        {"10 M", std::nullopt},
    };
    for (const Case& c : cases) {
      CAPTURE(c.in);
      CHECK(Config::parse_size(c.in) == c.want);
    }
  }
}

TEST_CASE("dump() prints every key like postconf, or only the set ones with -n", "[config]") {
  Config c = parse_ok("smtpd_port = 2525\nmyhostname = mail.example.org\nmyorigin = $mydomain\n");
  SECTION("all keys, sorted, unexpanded") {
    std::string all = c.dump(false);
    std::vector<std::string> lines = split_any(all, "\n");
    CHECK(lines.size() == known_keys().size());
    CHECK(std::is_sorted(lines.begin(), lines.end()));
    CHECK(all.find("smtpd_port = 2525\n") != std::string::npos);
    CHECK(all.find("imap_port = 143\n") != std::string::npos);
    CHECK(all.find("myorigin = $mydomain\n") != std::string::npos);
    CHECK(all.find("mydomain = example.org\n") != std::string::npos);  // computed: shown as computed
    for (const std::string& l : lines) CHECK(l.find(" = ") != std::string::npos);
  }
  SECTION("-n: only what the file sets") {
    CHECK(c.dump(true) == "myhostname = mail.example.org\nmyorigin = $mydomain\nsmtpd_port = 2525\n");
  }
  SECTION("-n -x: expanded") {
    CHECK(c.dump(true, true) == "myhostname = mail.example.org\nmyorigin = example.org\nsmtpd_port = 2525\n");
  }
  SECTION("the built-in defaults alone set nothing") {
    CHECK(Config().dump(true).empty());
    CHECK(split_any(Config().dump(false), "\n").size() == known_keys().size());
  }
}

TEST_CASE("set() overrides a file value and is checked like one", "[config]") {
  Config c = parse_ok("smtpd_port = 2525\n");
  REQUIRE(c.set("smtpd_port", " 2626 ", "-o smtpd_port=2626"));
  CHECK(c.validate());
  CHECK(c.integer("smtpd_port") == 2626);
  CHECK(c.origin("smtpd_port") == "-o smtpd_port=2626");
  CHECK(c.dump(true) == "smtpd_port = 2626\n");

  Status unknown = c.set("smtpd_prot", "1", "-o smtpd_prot=1");
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().kind == ErrorKind::kConfig);
  CHECK(unknown.error().message == "-o smtpd_prot=1: unknown parameter 'smtpd_prot'; did you mean 'smtpd_port'?");

  REQUIRE(c.set("smtpd_port", "abc", "-o smtpd_port=abc"));  // stored; validate() refuses it
  Status v = c.validate();
  REQUIRE_FALSE(v);
  CHECK(v.error().message == "-o smtpd_port=abc: parameter 'smtpd_port': 'abc' is not a number");
}

TEST_CASE("load_file reads a real file and names it in errors", "[config]") {
  char tmpl[] = "/tmp/tern-config-test-XXXXXX";
  int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  const std::string path = tmpl;
  {
    std::ofstream f(path);
    f << "myhostname = a.example\n\nsmtpd_prot = 1\n";
  }
  Result<Config> bad = Config::load_file(path);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == path + ":3: unknown parameter 'smtpd_prot'; did you mean 'smtpd_port'?");
  {
    std::ofstream f(path);
    f << "myhostname = a.example\n";
  }
  Result<Config> good = Config::load_file(path);
  REQUIRE(good);
  CHECK(good->str("myhostname") == "a.example");
  CHECK(good->origin("myhostname") == path + ":1");
  ::unlink(path.c_str());

  Result<Config> missing = Config::load_file(path);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().kind == ErrorKind::kNotFound);
  CHECK(missing.error().message == "open " + path + ": No such file or directory");
}

TEST_CASE("unknown_key_message suggests only close keys", "[config]") {
  CHECK(unknown_key_message("inet_interface") == "unknown parameter 'inet_interface'; did you mean 'inet_interfaces'?");
  CHECK(unknown_key_message("mail_locaton") == "unknown parameter 'mail_locaton'; did you mean 'mail_location'?");
  CHECK(unknown_key_message("completely_unrelated_thing") == "unknown parameter 'completely_unrelated_thing'");
}

TEST_CASE("the key table is consistent", "[config]") {
  // Every default parses as its type and stays in its bounds (validate() of the
  // defaults), names are unique and well-formed, every key has a line of doc.
  Config defaults;
  Status s = defaults.validate();
  INFO((s ? "" : s.error().message));
  CHECK(s);
  std::vector<std::string> names;
  for (const KeyDef& k : known_keys()) {
    CAPTURE(k.name);
    names.emplace_back(k.name);
    CHECK(std::string_view(k.doc).size() > 10);
    CHECK(find_key(k.name) == &k);
  }
  std::sort(names.begin(), names.end());
  CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());
}
