#include <catch2/catch.hpp>

#include <vector>

#include "authd/client_trust.h"

using namespace tern::authd;
namespace ap = tern::common::auth_protocol;

TEST_CASE("only root and the listed uids may vouch for their clients") {
  const std::vector<uid_t> trusted{105, 106};
  struct Case {
    bool has_creds;
    uid_t uid;
    bool trusted;
  } cases[] = {
      {true, 0, true},        // root: tern-mra's login process before it dropped, ternctl
      {true, 105, true},      // mail_owner (tern-mta)
      {true, 106, true},      // default_login_user
      {true, 1000, false},    // a local user
      {true, 65534, false},   // nobody
      {false, 0, false},      // no SO_PEERCRED: nothing is known about the peer
      {false, 105, false},
  };
  for (const Case& c : cases) {
    INFO("uid " << c.uid << " creds " << c.has_creds);
    CHECK(peer_trusted(c.has_creds, c.uid, trusted) == c.trusted);
  }
  CHECK_FALSE(peer_trusted(true, 105, std::vector<uid_t>{}));
}

TEST_CASE("an untrusted peer's claims about its client are dropped and named") {
  ap::Line line;
  line.command = "AUTH";
  line.args = {"1", "PLAIN", "service=imap", "lip=127.0.0.1", "rip=192.0.2.7", "lport=143", "rport=5555",
               "secured", "valid-client-cert", "no-penalty", "final-resp-ok"};
  ap::AuthParse p = ap::parse_auth(line);
  REQUIRE(p.error == ap::AuthParseError::kNone);
  REQUIRE(p.cmd.secured);
  REQUIRE(p.cmd.no_penalty);
  std::vector<std::string> dropped = drop_client_claims(p.cmd);
  CHECK(dropped == std::vector<std::string>{"rip", "lip", "rport", "lport", "secured", "valid-client-cert", "no-penalty"});
  CHECK(p.cmd.rip.empty());
  CHECK(p.cmd.lip.empty());
  CHECK(p.cmd.rport.empty());
  CHECK(p.cmd.lport.empty());
  CHECK_FALSE(p.cmd.secured);
  CHECK_FALSE(p.cmd.valid_client_cert);
  CHECK_FALSE(p.cmd.no_penalty);
  // What is the client's own business stays.
  CHECK(p.cmd.service == "imap");
  CHECK(p.cmd.mech == "PLAIN");
  CHECK(p.cmd.final_resp_ok);
  // Nothing sent, nothing named (the log line is only for peers that tried).
  CHECK(drop_client_claims(p.cmd).empty());
}

TEST_CASE("a local peer's penalty key is its uid and never an address") {
  CHECK(local_penalty_key(1000) == "local uid 1000");
  CHECK(local_penalty_key(1000) != local_penalty_key(1001));
  CHECK(local_penalty_key(0).find('.') == std::string::npos);
}
