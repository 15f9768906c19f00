// Fuzz target: the SMTP client's protocol state machine (mta/smtp_client_session.h)
// driven by hostile server bytes, through the same LineReader + ReplyParser path as
// the driver (mta/smtp_client_conn.cc).
//
// Input: byte 0 picks the session's configuration (TLS policy, implicit TLS, AUTH
// with a mechanism filter, discarded EHLO keywords); byte 1 the transaction (number
// of recipients, 8-bit, SMTPUTF8, DSN); the rest is what the server says, as lines.
// The fuzzer plays the driver: the TLS handshake succeeds when asked for, the first
// time the session is ready it starts a transaction, the body is "sent" when the
// session asks for it, and the second time it quits.
//
// Invariants: no crash; every byte the client writes is whole command lines (CRLF,
// no bare CR or LF, no NUL, at most 1000 octets with CRLF as RFC 5321 4.5.3.1.4
// allows), so nothing a server says is ever echoed into a command; a transaction's
// results have one entry per recipient, each a complete reply.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/line_reader.h"
#include "common/smtp_reply.h"
#include "mta/smtp_client_session.h"

using namespace tern;
using namespace tern::mta;

namespace {

void check_write(const std::string& w) {
  size_t pos = 0;
  while (pos < w.size()) {
    size_t e = w.find("\r\n", pos);
    if (e == std::string::npos) std::abort();  // a partial line
    std::string_view line(w.data() + pos, e - pos);
    if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) std::abort();
    if (line.size() + 2 > 1000) std::abort();
    pos = e + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t c = data[0], t = data[1];
  SessionConfig cfg;
  cfg.helo_name = "mx.a.test";
  cfg.tls = static_cast<TlsPolicy>(c & 3);
  cfg.tls_on_connect = c & 4;
  if (c & 8) {
    cfg.auth = true;
    cfg.user = "user@a.test";
    cfg.password = "secret";
    if (c & 16) cfg.mechanism_filter = {"LOGIN"};
    cfg.plaintext_auth_without_tls = c & 32;
  }
  if (c & 64) cfg.discard_ehlo = {"pipelining", "chunking"};
  if (c & 128) cfg.discard_ehlo.insert("8bitmime");

  Transaction tx;
  tx.sender = (t & 1) ? "" : "alice@a.test";
  const size_t nrcpt = 1 + (t >> 1 & 3);
  for (size_t i = 0; i < nrcpt; ++i) {
    TxRecipient r;
    r.address = "user" + std::to_string(i) + "@b.test";
    if (t & 8) r.notify = "SUCCESS,FAILURE";
    if (t & 8) r.orcpt = "rfc822;user@b.test";
    tx.rcpts.push_back(r);
  }
  tx.size = 1234;
  tx.eightbit = t & 16;
  tx.smtputf8 = t & 32;
  if (t & 64) {
    tx.ret = "HDRS";
    tx.envid = "id+2B1";
  }

  ClientSession s(cfg);
  common::LineReader lines(4096);
  common::smtp::ReplyParser parser(false);
  bool began = false;
  ClientSession::Out out;
  auto drive = [&]() {
    // What the driver does between replies.
    for (int guard = 0; guard < 4; ++guard) {
      check_write(out.write);
      out = ClientSession::Out{};
      if (s.results_ready()) {
        auto res = s.take_results();
        if (res.size() != nrcpt) std::abort();
        for (const RecipientReply& r : res) {
          if (r.reply.code < 200 || r.reply.code > 599 || r.reply.lines.empty()) std::abort();
        }
      }
      switch (s.phase()) {
        case ClientSession::Phase::kHandshake: s.tls_ready(out); continue;
        case ClientSession::Phase::kBody: s.body_sent(out); continue;
        case ClientSession::Phase::kReady:
          if (!began) {
            began = true;
            s.begin(tx, out);
          } else {
            s.quit(out);
          }
          continue;
        default: return;
      }
    }
  };
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (cfg.tls_on_connect) s.tls_ready(out);
  drive();
  lines.feed(in);
  common::LineReader::Line line;
  while (s.phase() != ClientSession::Phase::kFailed) {
    common::LineReader::Status st = lines.next(line);
    if (st != common::LineReader::Status::kLine) break;
    common::smtp::ReplyParser::Status ps = parser.feed(line.text);
    if (ps == common::smtp::ReplyParser::Status::kNeedMore) continue;
    if (ps == common::smtp::ReplyParser::Status::kError) break;
    s.on_reply(parser.take(), out);
    if (out.close) break;
    drive();
    parser.set_enhanced(s.caps().enhanced);
  }
  check_write(out.write);
  // The connection ends: every recipient still open gets an outcome.
  s.connection_lost(common::smtp::Reply(421, "4.4.2", "lost connection"));
  if (s.results_ready()) {
    if (s.take_results().size() != nrcpt) std::abort();
  }
  (void)s.stage_text();
  return 0;
}
