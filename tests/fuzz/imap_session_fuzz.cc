// Fuzzes the IMAP session after login, on the in-memory test store with a few real
// messages: any byte stream of commands (FETCH of every item, SEARCH programs, STORE,
// COPY/MOVE, APPEND, LIST patterns, IDLE) must never crash, the session must always
// make progress, and everything it sends must conform to the RFC 3501/9051 response
// grammar (checked by the test fixture's independent checker).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "../unit/mra/imap_grammar_fixture.h"
#include "../unit/mra/memory_store_fixture.h"
#include "mra/imap_session.h"

using namespace tern::mra;
using namespace tern::mra::imap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  testing::MemoryStore store;
  store.deliver("INBOX", "From: A <a@x.test>\nSubject: =?utf-8?q?h=C3=A9llo?=\nDate: 1 Jan 2024 00:00:00 +0000\n\nbody\n");
  store.deliver("INBOX",
                "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=iso-8859-1\n"
                "Content-Transfer-Encoding: quoted-printable\n\ncaf=E9\n--b\nContent-Type: message/rfc822\n\n"
                "Subject: inner\n\ninner body\n--b\nContent-Transfer-Encoding: base64\n\nAAEC\n--b--\n",
                {"\\Seen"});
  store.deliver("Sent", "Subject: sent\n\nx\n");
  SessionConfig cfg;
  cfg.limits.max_line = 4096;
  cfg.limits.max_command = 8192;
  cfg.limits.max_literal = 4096;
  cfg.limits.max_append = 8192;
  cfg.output_chunk = 4096;
  cfg.max_bad_commands = 1000;
  ImapSession s(cfg, store, "fuzz");
  s.feed("s SELECT INBOX\r\n");
  s.feed(std::string_view(reinterpret_cast<const char*>(data), size));
  std::string out;
  for (int i = 0; i < 100000; ++i) {
    ImapSession::Step st = s.step();
    out += st.out;
    if (st.action == ImapSession::Action::kIdle) {
      out += s.poll();
      st = s.step();
      out += st.out;
      if (st.action == ImapSession::Action::kIdle) break;
    }
    if (st.action != ImapSession::Action::kContinue) break;
  }
  if (!testing::ResponseChecker::check(out).empty()) __builtin_trap();
  return 0;
}
