// Fuzz target: the SMTP client's message conversions (mta/smtp_client_mime.h): the
// 8BITMIME downgrade (RFC 6152 3) of a hostile message, quoted-printable encoding,
// and the SMTPUTF8 test.
//
// Input: a message (headers, body, MIME structure as the fuzzer makes it).
// Invariants: no crash; a downgraded message has no 8-bit byte; an error is kPerm;
// quoted-printable output is 7-bit, with lines of at most 76 characters plus CRLF;
// a message without 8-bit bytes is never refused.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "mta/smtp_client_mime.h"

using namespace tern;
using namespace tern::mta;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  common::Result<std::string> d = downgrade_8bit(in);
  if (d) {
    if (has_8bit(*d)) std::abort();
  } else {
    if (d.error().kind != common::ErrorKind::kPerm) std::abort();
    if (!has_8bit(in)) std::abort();
  }
  std::string qp = qp_encode(in);
  if (has_8bit(qp)) std::abort();
  size_t pos = 0;
  while (pos < qp.size()) {
    size_t e = qp.find("\r\n", pos);
    size_t len = (e == std::string::npos ? qp.size() : e) - pos;
    if (len > 76) std::abort();
    if (e == std::string::npos) break;
    pos = e + 2;
  }
  (void)needs_smtputf8("alice@a.test", {std::string(in.substr(0, 64))}, message_headers(in));
  return 0;
}
