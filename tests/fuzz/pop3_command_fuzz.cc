// Fuzzes the POP3 parser and session: the bytes go to a session before login and,
// after an injected successful login, to one in the TRANSACTION state on the
// in-memory test store. Nothing may crash, and DELE must never remove a message
// before QUIT.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "../unit/mra/memory_store_fixture.h"
#include "mra/pop3_session.h"

using namespace tern::mra;
using namespace tern::mra::pop3;

namespace {

bool drive(Pop3Session& s) {
  for (int i = 0; i < 100000; ++i) {
    Pop3Session::Step st = s.step();
    if (st.action == Pop3Session::Action::kAuthenticate) {
      (void)s.auth_challenge("x");
      continue;
    }
    if (st.action == Pop3Session::Action::kClose) return false;
    if (st.action != Pop3Session::Action::kContinue && st.action != Pop3Session::Action::kAuthCancel &&
        st.action != Pop3Session::Action::kStartTls) {
      return true;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)parse_command(in.substr(0, in.find('\n')));
  SessionConfig cfg;
  cfg.max_bad_commands = 1000;
  Pop3Session pre(cfg);
  pre.feed(in);
  drive(pre);

  testing::MemoryStore store;
  store.deliver("INBOX", "Subject: one\n\n.line\nbody\n");
  store.deliver("INBOX", "Subject: two\r\n\r\nx");
  Pop3Session s(cfg);
  (void)s.open_maildrop(store, "fuzz");
  s.feed(in);
  drive(s);
  // Until QUIT's UPDATE state, DELE only marks.
  if (s.state() == Pop3Session::State::kTransaction && store.box("INBOX").msgs.size() != 2) __builtin_trap();
  return 0;
}
