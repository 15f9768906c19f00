// Fuzz target: tern-mda's LMTP state machine (mda/lmtp_session.h), fed what an LMTP
// client (tern-mta, or anything that reaches the socket) sends.
//
// Input: byte 0 picks the options (bare-newline policy, a small size limit, a small
// recipient and error limit, XTERN-DELIVERY-ID, failing deliveries); byte 1 seeds
// the chunking; the rest is the client's byte stream, after the session's greeting.
// The fake host knows a few users and delivers every job.
//
// The stream is run three times: fed whole with synchronous lookups; fed one byte
// at a time with lookups held until the next byte (as a real userdb answers later,
// while the session is paused); and fed in pseudo-random chunks. Invariants: no
// crash; the three runs write exactly the same bytes, deliver the same bodies to the
// same recipients and close at the same point; everything written is whole reply
// lines "ddd SP/- text CRLF" with no CR, LF or NUL inside, a multi-line reply keeps
// its code, and no line is longer than the reply text could make it.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "mda/lmtp_session.h"

using namespace tern;
using namespace tern::mda;

namespace {

struct Host : LmtpSession::Host {
  std::string out;
  bool closed = false;
  bool hold = false;  // keep lookups until release()
  bool ids = false;
  bool fail_some = false;
  std::vector<std::pair<std::string, LookupDone>> pending;
  std::vector<std::string> log;  // deliveries: body and recipients
  std::map<std::string, bool> recorded;

  void write(std::string_view b) override {
    if (closed) std::abort();  // nothing is written after close()
    out += b;
  }
  void close() override { closed = true; }
  void pause(bool) override {}
  void lookup(const std::string& user, LookupDone done) override {
    if (hold) {
      pending.emplace_back(user, std::move(done));
      return;
    }
    answer(user, std::move(done));
  }
  static void answer(const std::string& user, LookupDone done) {
    if (user == "temp@example.test") return done(common::make_error(common::ErrorKind::kTemp, "authd down"));
    if (user == "demo@example.test" || user == "sys" || user == "postmaster") {
      MailUser u;
      u.name = user;
      return done(u);
    }
    done(common::make_error(common::ErrorKind::kNotFound, "no such user"));
  }
  void release() {
    while (!pending.empty()) {
      auto p = std::move(pending);
      pending.clear();
      for (auto& [u, d] : p) answer(u, std::move(d));
    }
  }
  bool delivery_ids() const override { return ids; }
  bool delivered_before(const std::string& id, const MailUser&, const std::string& r) override {
    return recorded.count(id + "\n" + r) > 0;
  }
  void record_delivered(const std::string& id, const std::vector<std::string>& rs, RecordDone done) override {
    for (const std::string& r : rs) recorded[id + "\n" + r] = true;
    done({});
  }
  void deliver(std::shared_ptr<const MessageSpool> body, std::vector<DeliveryJob> jobs, DeliverDone done) override {
    std::string b;
    (void)body->read([&](std::string_view c) {
      b.append(c);
      return common::Status();
    });
    std::string entry = "body " + std::to_string(body->size()) + "\n" + b;
    std::vector<Outcome> outs;
    for (size_t i = 0; i < jobs.size(); ++i) {
      const Envelope& e = jobs[i].envelope;
      entry += "\nto " + jobs[i].user.name + " " + e.recipient + " folder " + e.folder + " from " + e.sender +
               " key " + e.delivery_key;
      Outcome o;
      o.reply = fail_some && i % 2 ? common::smtp::Reply(452, "4.2.2", "<" + e.recipient + "> Mailbox is full")
                                   : common::smtp::Reply(250, "2.0.0", "<" + e.recipient + "> Saved");
      outs.push_back(o);
    }
    log.push_back(entry);
    done(outs);
  }
};

LmtpSession::Options options(uint8_t c) {
  LmtpSession::Options o;
  o.hostname = "mda.example.test";
  o.peer = "local";
  o.forbid_bare_newline = !(c & 1);
  if (c & 2) o.size_limit = 64;
  if (c & 4) {
    o.recipient_limit = 2;
    o.hard_error_limit = 3;
  }
  o.save_to_detail_mailbox = !(c & 32);
  o.local_domains = {"example.test"};
  return o;
}

struct Run {
  std::string out;
  std::vector<std::string> log;
  bool closed = false;
};

// mode 0: whole; 1: byte by byte, lookups answered one byte later; 2: chunks.
Run run(uint8_t c, uint32_t seed, std::string_view in, int mode) {
  Host h;
  h.ids = c & 8;
  h.fail_some = c & 16;
  h.hold = mode == 1;
  auto s = std::make_shared<LmtpSession>(options(c), &h, "fz");
  s->start();
  if (mode == 0) {
    s->on_input(in);
  } else {
    for (size_t pos = 0; pos < in.size();) {
      size_t n = 1;
      if (mode == 2) {
        seed = seed * 1103515245u + 12345u;
        n = 1 + (seed >> 16) % 23;
      }
      s->on_input(in.substr(pos, n));
      pos += n;
      h.release();
    }
  }
  h.release();
  return Run{h.out, h.log, h.closed};
}

void check_replies(const std::string& out) {
  size_t pos = 0;
  std::string_view cont_code;  // the code of an unfinished multi-line reply
  while (pos < out.size()) {
    size_t e = out.find("\r\n", pos);
    if (e == std::string::npos) std::abort();  // a partial line
    std::string_view line(out.data() + pos, e - pos);
    if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) std::abort();
    if (line.size() < 4) std::abort();
    for (int i = 0; i < 3; ++i) {
      if (line[i] < '0' || line[i] > '9') std::abort();
    }
    if (line[0] < '2' || line[0] > '5') std::abort();
    if (line[3] != ' ' && line[3] != '-') std::abort();
    if (!cont_code.empty() && line.substr(0, 3) != cont_code) std::abort();
    cont_code = line[3] == '-' ? line.substr(0, 3) : std::string_view();
    // Replies echo at most an address from one command line (kMaxLine) plus text.
    if (line.size() > LmtpSession::kMaxLine + 200) std::abort();
    pos = e + 2;
  }
  if (!cont_code.empty()) std::abort();
}

}  // namespace

// The session logs every delivery; at a thousand runs a second that is gigabytes of
// fuzzer log an hour, so its lines are dropped.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  common::log::Options options;
  options.sink = common::log::Sink::kNone;
  common::log::init(options);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 16384) return 0;
  const uint8_t c = data[0];
  const uint32_t seed = data[1] * 2654435761u + 1;
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  Run whole = run(c, seed, in, 0);
  check_replies(whole.out);
  if (whole.out.rfind("220 ", 0) != 0) std::abort();
  Run bytes = run(c, seed, in, 1);
  if (bytes.out != whole.out || bytes.log != whole.log || bytes.closed != whole.closed) std::abort();
  Run chunks = run(c, seed, in, 2);
  if (chunks.out != whole.out || chunks.log != whole.log || chunks.closed != whole.closed) std::abort();
  return 0;
}
