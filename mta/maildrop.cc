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
      // "" is the submitting user, "<>" the null sender (sendmail -f '').
      if (!v.empty() && v != "<>") {
        if (auto m = parse_local_address(v, ""); !m) {
          return common::make_error(ErrorKind::kProtocol, "maildrop file: bad sender address: " + m.error().message);
        }
      }
      env.sender = std::string(v);
    } else if (line[0] == 'R') {
      // The sender comes first: one canonical layout, nothing to reorder.
      if (!sender_seen) return common::make_error(ErrorKind::kProtocol, "maildrop file: recipient before sender");
      if (env.rcpts.size() >= kMaildropMaxRcpts) {
        return common::make_error(ErrorKind::kProtocol, "maildrop file: too many recipients");
      }
      if (auto m = parse_local_address(v, ""); !m) {
        return common::make_error(ErrorKind::kProtocol, "maildrop file: bad recipient address: " + m.error().message);
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

common::Result<common::smtp::Mailbox> parse_local_address(std::string_view text, std::string_view origin) {
  if (text.size() >= 2 && text.front() == '<' && text.back() == '>') text = text.substr(1, text.size() - 2);
  // A bare user name: the same check as with any domain after it.
  if (text.find('@') == std::string_view::npos) {
    std::string full = std::string(text) + "@" + std::string(origin.empty() ? "localhost" : origin);
    return common::smtp::parse_mailbox(full, true);
  }
  return common::smtp::parse_mailbox(text, true);
}

bool stale_maildrop_temp(std::string_view name, int64_t mtime, int64_t now) {
  if (name.empty() || name[0] != '.' || name == "." || name == "..") return false;
  return now - mtime >= kMaildropStaleTempSeconds;
}

}  // namespace tern::mta
