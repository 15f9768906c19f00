#include "mta/maildrop.h"

namespace tern::mta {

using common::ErrorKind;

std::string maildrop_header(const MaildropEnvelope& env) {
  std::string h = "TERN-MAILDROP 1\n";
  h += "S " + env.sender + "\n";
  for (const std::string& r : env.rcpts) h += "R " + r + "\n";
  h += "\n";
  return h;
}

common::Result<MaildropEnvelope> parse_maildrop(std::string_view data, size_t& body_offset) {
  MaildropEnvelope env;
  size_t pos = 0;
  bool first = true, sender_seen = false;
  while (true) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string_view::npos || nl - pos > kMaildropMaxLine) {
      return common::make_error(ErrorKind::kProtocol, "maildrop file: truncated or overlong header line");
    }
    std::string_view line = data.substr(pos, nl - pos);
    pos = nl + 1;
    for (char c : line) {
      if (c == '\r' || c == '\0') return common::make_error(ErrorKind::kProtocol, "maildrop file: control character");
    }
    if (first) {
      if (line != "TERN-MAILDROP 1") return common::make_error(ErrorKind::kProtocol, "maildrop file: bad magic");
      first = false;
      continue;
    }
    if (line.empty()) break;
    if (line.size() < 2 || line[1] != ' ') return common::make_error(ErrorKind::kProtocol, "maildrop file: bad record");
    std::string_view v = line.substr(2);
    if (line[0] == 'S') {
      if (sender_seen) return common::make_error(ErrorKind::kProtocol, "maildrop file: two senders");
      sender_seen = true;
      env.sender = std::string(v);
    } else if (line[0] == 'R') {
      // The sender comes first: one canonical layout, nothing to reorder.
      if (!sender_seen) return common::make_error(ErrorKind::kProtocol, "maildrop file: recipient before sender");
      if (env.rcpts.size() >= kMaildropMaxRcpts) {
        return common::make_error(ErrorKind::kProtocol, "maildrop file: too many recipients");
      }
      env.rcpts.emplace_back(v);
    } else {
      return common::make_error(ErrorKind::kProtocol, "maildrop file: unknown record");
    }
  }
  if (!sender_seen) return common::make_error(ErrorKind::kProtocol, "maildrop file: no sender");
  body_offset = pos;
  return env;
}

std::string to_crlf(std::string_view in) {
  std::string out;
  out.reserve(in.size() + in.size() / 32);
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '\n' && (i == 0 || in[i - 1] != '\r')) out += '\r';
    out += c;
  }
  return out;
}

}  // namespace tern::mta
