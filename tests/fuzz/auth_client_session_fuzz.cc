// Fuzz target: what tern-authd does with the bytes of an auth-client peer (any local
// process may connect: the socket is 0666), up to and through the SASL steps.
//
// The connection object itself (authd/auth_server.cc AuthServer::Conn) is tied to
// the event loop, a socket, timers and the threadpool, so it is not driven here.
// This target runs the same sequence of pure calls it makes, in the same order: the
// LineReader; parse_line; the handshake rules (VERSION first, CPID once and
// non-zero); parse_auth, drop_client_claims() for an untrusted peer, the offered
// mechanism check; parse_cont; and then the real SASL requests (authd/sasl.h:
// SaslRequest::create / start / step, that is Cyrus SASL's PLAIN, LOGIN, CRAM-MD5,
// SCRAM-SHA-1 and SCRAM-SHA-256 with Tern's canon_user, checkpass and auxprop
// callbacks) with the client's decoded initial responses and CONT responses.
//
// Input: byte 0 bit 0 says whether the peer is trusted; the rest is the peer's
// byte stream, fed in two uneven pieces.
//
// Invariants: no crash or leak; with no user in any database no SASL exchange ever
// succeeds; an untrusted peer's AUTH keeps none of its client claims; every line
// the server would send (CONT with a challenge, FAIL) parses back to the same words.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "authd/auth_core.h"
#include "authd/client_trust.h"
#include "authd/sasl.h"
#include "common/auth_protocol.h"
#include "common/line_reader.h"
#include "common/loop.h"
#include "common/text.h"

using namespace tern;
namespace ap = tern::common::auth_protocol;

namespace {

struct Globals {
  common::ev::Loop loop;
  std::unique_ptr<authd::AuthCore> core;
  std::vector<std::string> mechs;
  bool sasl = false;
  Globals() {
    authd::AuthSettings s;
    s.mechanisms = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"};
    s.disable_plaintext_auth = false;
    s.failure_delay_ms = 0;
    s.default_realm = "example.test";
    // No user database: every user is unknown, so nothing may authenticate.
    core = std::make_unique<authd::AuthCore>(loop, s, nullptr, nullptr);
    sasl = static_cast<bool>(authd::Sasl::init(*core));
    mechs = authd::Sasl::available(*core);
  }
};

Globals& globals() {
  static Globals* g = new Globals();
  return *g;
}

void check_line(const std::vector<std::string>& words) {
  std::string l = ap::make_line(words);
  if (l.empty() || l.back() != '\n') std::abort();
  l.pop_back();
  if (l.find('\n') != std::string::npos) std::abort();
  ap::ParsedLine p = ap::parse_line(l);
  if (!p.ok || p.line.command != words[0]) std::abort();
  if (p.line.args != std::vector<std::string>(words.begin() + 1, words.end())) std::abort();
}

struct Request {
  std::unique_ptr<authd::SaslRequest> sasl;
};

// One SASL outcome: the reply the server would send; false when the request is over.
bool answer(ap::RequestId id, const authd::SaslRequest::Step& s) {
  const std::string ids = std::to_string(id);
  switch (s.outcome) {
    case authd::SaslRequest::Outcome::kContinue:
      check_line({"CONT", ids, s.data.empty() ? std::string() : common::base64_encode(s.data)});
      return true;
    case authd::SaslRequest::Outcome::kOk:
      std::abort();  // no user exists: a success is an authentication bypass
    case authd::SaslRequest::Outcome::kTemp:
      check_line({"FAIL", ids, "temp", "reason=Temporary authentication failure"});
      return false;
    case authd::SaslRequest::Outcome::kFail: {
      std::vector<std::string> w{"FAIL", ids};
      if (!s.user.empty() && ap::valid_user_name(s.user)) w.push_back("user=" + s.user);
      check_line(w);
      return false;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  Globals& g = globals();
  const bool trusted = data[0] & 1;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  common::LineReader reader(ap::kMaxLineLength);
  reader.feed(in.substr(0, in.size() / 3));
  reader.feed(in.substr(in.size() / 3));
  bool got_version = false;
  uint32_t cpid = 0;
  int sasl_requests = 0;  // bounds the work per input, not a protocol rule
  std::map<ap::RequestId, Request> requests;
  common::LineReader::Line line;
  for (;;) {
    common::LineReader::Status st = reader.next(line);
    if (st != common::LineReader::Status::kLine) break;  // need more, or too long: disconnect
    ap::ParsedLine p = ap::parse_line(line.text);
    if (!p.ok) break;
    const std::string& cmd = p.line.command;
    if (!got_version) {
      if (cmd != "VERSION" || p.line.args.size() < 2 || p.line.args[0] != std::to_string(ap::kClientMajor)) break;
      got_version = true;
      continue;
    }
    if (cmd == "VERSION") break;
    if (cmd == "CPID") {
      const uint64_t pid = p.line.args.empty() ? 0 : common::parse_u64(p.line.args[0]).value_or(0);
      if (cpid != 0 || pid == 0 || pid > 0xffffffffu) break;
      cpid = static_cast<uint32_t>(pid);
      continue;
    }
    if (cpid == 0) break;
    if (cmd == "AUTH") {
      ap::AuthParse a = ap::parse_auth(p.line);
      if (a.error == ap::AuthParseError::kMissingArgs || a.error == ap::AuthParseError::kBadId) break;
      if (requests.count(a.cmd.id) || requests.size() >= ap::kMaxRequestsPerConnection) break;
      if (a.error != ap::AuthParseError::kNone) {
        check_line({"FAIL", std::to_string(a.cmd.id), std::string("reason=") + ap::auth_parse_error_text(a.error)});
        continue;
      }
      if (a.cmd.initial_response.size() > ap::kMaxSaslMessage) std::abort();
      if (!trusted) {
        (void)authd::drop_client_claims(a.cmd);
        if (!a.cmd.rip.empty() || !a.cmd.lip.empty() || !a.cmd.rport.empty() || !a.cmd.lport.empty() ||
            a.cmd.secured || a.cmd.valid_client_cert || a.cmd.no_penalty) {
          std::abort();
        }
      }
      bool offered = false;
      for (const std::string& m : g.mechs) offered = offered || m == a.cmd.mech;
      if (!offered || !g.sasl || ++sasl_requests > 8) continue;
      authd::SaslRequest::Params params{a.cmd.service, a.cmd.lip, a.cmd.rip, a.cmd.lport, a.cmd.rport,
                                        a.cmd.final_resp_ok};
      common::Result<std::unique_ptr<authd::SaslRequest>> r = authd::SaslRequest::create(*g.core, params);
      if (!r) continue;
      Request req{std::move(r).value()};
      authd::SaslRequest::Step s =
          req.sasl->start(a.cmd.mech, a.cmd.has_initial_response ? &a.cmd.initial_response : nullptr);
      if (answer(a.cmd.id, s)) requests[a.cmd.id] = std::move(req);
    } else if (cmd == "CONT") {
      ap::ContParse c = ap::parse_cont(p.line);
      if (!c.ok) break;
      auto it = requests.find(c.id);
      if (it == requests.end()) {
        check_line({"FAIL", std::to_string(c.id), "reason=Authentication request timed out"});
        continue;
      }
      if (c.response.size() > ap::kMaxSaslMessage) std::abort();
      authd::SaslRequest::Step s = it->second.sasl->step(c.response);
      if (!answer(c.id, s)) requests.erase(it);
    } else {
      break;
    }
  }
  return 0;
}
