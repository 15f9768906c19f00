#include "mra/imap_mailbox_name.h"

#include <catch2/catch.hpp>

using namespace tern::mra::imap;

TEST_CASE("check_mailbox_name accepts ordinary names and canonicalises INBOX", "[imap][mailbox]") {
  CHECK(check_mailbox_name("INBOX").value() == "INBOX");
  CHECK(check_mailbox_name("inbox").value() == "INBOX");
  CHECK(check_mailbox_name("Inbox/Sub").value() == "INBOX/Sub");
  CHECK(check_mailbox_name("Inboxes").value() == "Inboxes");
  CHECK(check_mailbox_name("Work/2024/Q1").value() == "Work/2024/Q1");
  CHECK(check_mailbox_name("Entw\xc3\xbcrfe").value() == "Entw\xc3\xbcrfe");
  CHECK(check_mailbox_name("a.b").value() == "a.b");
  CHECK(check_mailbox_name("with space").value() == "with space");
}

TEST_CASE("check_mailbox_name refuses names that could escape the mail root", "[imap][mailbox]") {
  const char* bad[] = {"", "..", "../etc", "a/../../etc", "a/..", ".", "./a", "a/./b", "/etc/passwd", "/",
                       "a//b", "a/", ".hidden", "a/.hidden", "~root", "~/x", "a*", "%", "tab\tname",
                       "del\x7f", ("bad\xff" "utf8")};
  for (const char* b : bad) {
    INFO(b);
    CHECK_FALSE(check_mailbox_name(b));
  }
  CHECK_FALSE(check_mailbox_name(std::string("nul\0byte", 8)));
  CHECK_FALSE(check_mailbox_name(std::string(256, 'a')));
  CHECK(check_mailbox_name(std::string(255, 'a')));
  std::string deep;
  for (int i = 0; i < 33; ++i) deep += (i ? "/d" : "d");
  CHECK_FALSE(check_mailbox_name(deep));
  CHECK_FALSE(check_mailbox_name(std::string(1025, 'a')));
  MailboxNameRules dot;
  dot.separator = '.';
  CHECK_FALSE(check_mailbox_name("a..b", dot));
  CHECK(check_mailbox_name("a.b", dot).value() == "a.b");
}

TEST_CASE("list_match implements * and % (RFC 3501 6.3.8)", "[imap][mailbox]") {
  struct Case {
    const char* pattern;
    const char* name;
    bool match;
  };
  const Case cases[] = {
      {"*", "INBOX", true},          {"*", "a/b/c", true},     {"%", "a", true},
      {"%", "a/b", false},           {"a/%", "a/b", true},     {"a/%", "a/b/c", false},
      {"a/*", "a/b/c", true},        {"a*", "abc", true},      {"a*", "b", false},
      {"inbox", "INBOX", true},      {"INBOX/%", "INBOX/x", true}, {"inbox/%", "INBOX/x", true},
      {"Inbox*", "Inboxes", true},  {"inbox*", "Inboxes", false},  {"", "a", false},          {"a%c", "abc", true},
      {"a%c", "a/c", false},         {"*c", "a/b/c", true},    {"%/%", "a/b", true},
      {"a", "A", false},
      // INBOX's own letters compare without case, in whole or in part (as Dovecot).
      {"iNbOx*", "INBOX", true},     {"in%", "INBOX", true},   {"iNbOx*", "INBOX/x", true},
      {"in%", "inner", true},        {"IN%", "inner", false},  {"i*", "Inboxes", false},
  };
  for (const Case& c : cases) {
    INFO(c.pattern << " vs " << c.name);
    CHECK(list_match(c.pattern, c.name) == c.match);
  }
  // A pattern of many wildcards against a long name does not backtrack exponentially.
  std::string pat;
  for (int i = 0; i < 500; ++i) pat += "*a";
  std::string name(1000, 'a');
  CHECK_FALSE(list_match(pat + "b", name));
  CHECK(list_pattern("Work/", "%") == "Work/%");
}
