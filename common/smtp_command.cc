#include "common/smtp_command.h"

#include <cstring>
#include <vector>

#include "common/text.h"

namespace tern::common::smtp {
namespace {

Reply syntax(std::string text) { return Reply(501, "5.5.4", std::move(text)); }

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

struct VerbName {
  const char* name;
  Verb verb;
};
constexpr VerbName kVerbs[] = {
    {"HELO", Verb::kHelo}, {"EHLO", Verb::kEhlo}, {"LHLO", Verb::kLhlo}, {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt}, {"DATA", Verb::kData}, {"BDAT", Verb::kBdat}, {"RSET", Verb::kRset},
    {"NOOP", Verb::kNoop}, {"QUIT", Verb::kQuit}, {"VRFY", Verb::kVrfy}, {"EXPN", Verb::kExpn},
    {"HELP", Verb::kHelp}, {"STARTTLS", Verb::kStartTls}, {"AUTH", Verb::kAuth},
};

// One "keyword[=value]" parameter (RFC 5321 4.1.2 esmtp-param).
struct Param {
  std::string keyword;  // upper-cased
  std::string value;
  bool has_value = false;
};

// Splits the text after the path into parameters. RFC 5321: separated by single
// spaces; we accept runs of spaces (as Postfix does) but nothing else.
std::variant<std::vector<Param>, Reply> split_params(std::string_view rest, bool utf8_values) {
  std::vector<Param> out;
  while (!rest.empty()) {
    if (rest[0] != ' ') return syntax("Syntax error in parameters");
    while (!rest.empty() && rest[0] == ' ') rest.remove_prefix(1);
    if (rest.empty()) break;
    size_t end = rest.find(' ');
    std::string_view tok = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    size_t eq = tok.find('=');
    std::string_view kw = tok.substr(0, eq);
    if (kw.empty() || !is_alnum(kw[0])) return syntax("Syntax error in parameters");
    for (char c : kw) {
      if (!is_alnum(c) && c != '-') return syntax("Syntax error in parameters");
    }
    Param p;
    p.keyword = std::string(kw);
    for (char& c : p.keyword) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    if (eq != std::string_view::npos) {
      std::string_view v = tok.substr(eq + 1);
      // esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 with SMTPUTF8 (RFC 6531 3.3).
      if (v.empty()) return syntax("Syntax error in parameters");
      for (unsigned char c : v) {
        if (c >= 0x80 && utf8_values) continue;
        if (c < 33 || c > 126 || c == '=') return syntax("Syntax error in parameters");
      }
      if (!valid_utf8(v)) return syntax("Syntax error in parameters");
      p.value = std::string(v);
      p.has_value = true;
    }
    for (const Param& q : out) {
      if (q.keyword == p.keyword) return syntax("Duplicate parameter " + p.keyword);
    }
    if (out.size() >= kMaxParams) return syntax("Too many parameters");
    out.push_back(std::move(p));
  }
  return out;
}

Reply unknown_param(const std::string& kw) {
  return Reply(555, "5.5.4", "Unsupported option: " + log_escape(kw, 32));
}

std::optional<uint64_t> parse_number(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  return parse_u64(s);
}

// "FROM:" / "TO:" then an optional space (see the header).
bool eat_prefix(std::string_view& arg, std::string_view prefix) {
  if (!istarts_with(arg, prefix)) return false;
  arg.remove_prefix(prefix.size());
  if (!arg.empty() && arg[0] == ' ') arg.remove_prefix(1);
  return true;
}

CommandResult parse_mail(std::string_view arg, const CommandOptions& opt, Command cmd) {
  if (!eat_prefix(arg, "FROM:")) return syntax("Syntax: MAIL FROM:<address>");
  PathOptions po;
  po.allow_null = true;
  po.smtputf8 = opt.smtputf8;
  Result<Path> p = consume_path(arg, po);
  if (!p) return Reply(501, "5.1.7", "Bad sender address syntax: " + p.error().message);
  cmd.path = std::move(p).value();
  auto params = split_params(arg, opt.smtputf8);
  if (auto* r = std::get_if<Reply>(&params)) return *r;
  for (Param& pr : std::get<std::vector<Param>>(params)) {
    const std::string& k = pr.keyword;
    if (k == "SIZE" && opt.size) {
      std::optional<uint64_t> n = pr.has_value ? parse_number(pr.value) : std::nullopt;
      if (!n) return syntax("Bad SIZE value");
      cmd.mail.size = *n;
    } else if (k == "BODY" && (opt.eightbitmime || opt.binarymime)) {
      if (!pr.has_value) return syntax("Bad BODY value");
      if (iequals(pr.value, "7BIT")) {
        cmd.mail.body = Body::k7Bit;
      } else if (iequals(pr.value, "8BITMIME") && opt.eightbitmime) {
        cmd.mail.body = Body::k8BitMime;
      } else if (iequals(pr.value, "BINARYMIME") && opt.binarymime) {
        cmd.mail.body = Body::kBinaryMime;
      } else {
        return syntax("Unsupported BODY value");
      }
    } else if (k == "SMTPUTF8" && opt.smtputf8) {
      if (pr.has_value) return syntax("SMTPUTF8 takes no value");
      cmd.mail.smtputf8 = true;
    } else if (k == "RET" && opt.dsn) {
      if (iequals(pr.value, "FULL")) {
        cmd.mail.ret = Ret::kFull;
      } else if (iequals(pr.value, "HDRS")) {
        cmd.mail.ret = Ret::kHdrs;
      } else {
        return syntax("Bad RET value");
      }
    } else if (k == "ENVID" && opt.dsn) {
      std::optional<std::string> v = pr.has_value ? xtext_decode(pr.value) : std::nullopt;
      if (!v || pr.value.size() > kMaxEnvid) return syntax("Bad ENVID value");
      cmd.mail.envid = std::move(*v);
    } else if (k == "AUTH" && opt.auth) {
      // RFC 4954 5: AUTH=<> or AUTH=xtext(mailbox).
      std::optional<std::string> v = pr.has_value ? xtext_decode(pr.value) : std::nullopt;
      if (!v) return syntax("Bad AUTH value");
      cmd.mail.auth = std::move(*v);
    } else if (k == "XTERN-DELIVERY-ID" && opt.delivery_id) {
      bool ok = pr.has_value && !pr.value.empty() && pr.value.size() <= kMaxDeliveryId;
      for (char ch : pr.value) ok = ok && ((ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'));
      if (!ok) return syntax("Bad XTERN-DELIVERY-ID value");
      cmd.mail.delivery_id = pr.value;
    } else {
      return unknown_param(k);
    }
  }
  if (cmd.path.mailbox.utf8 && !cmd.mail.smtputf8) {
    // RFC 6531 3.7.4.1
    return Reply(553, "5.6.7", "Non-ASCII sender address without SMTPUTF8");
  }
  return cmd;
}

CommandResult parse_rcpt(std::string_view arg, const CommandOptions& opt, Command cmd) {
  if (!eat_prefix(arg, "TO:")) return syntax("Syntax: RCPT TO:<address>");
  PathOptions po;
  po.allow_postmaster = true;
  po.smtputf8 = opt.smtputf8;
  Result<Path> p = consume_path(arg, po);
  if (!p) return Reply(501, "5.1.3", "Bad recipient address syntax: " + p.error().message);
  cmd.path = std::move(p).value();
  auto params = split_params(arg, opt.smtputf8);
  if (auto* r = std::get_if<Reply>(&params)) return *r;
  for (Param& pr : std::get<std::vector<Param>>(params)) {
    const std::string& k = pr.keyword;
    if (k == "NOTIFY" && opt.dsn) {
      if (!pr.has_value) return syntax("Bad NOTIFY value");
      unsigned bits = 0;
      for (const std::string& item : split(pr.value, ',')) {
        if (iequals(item, "NEVER")) {
          bits |= kNotifyNever;
        } else if (iequals(item, "SUCCESS")) {
          bits |= kNotifySuccess;
        } else if (iequals(item, "FAILURE")) {
          bits |= kNotifyFailure;
        } else if (iequals(item, "DELAY")) {
          bits |= kNotifyDelay;
        } else {
          return syntax("Bad NOTIFY value");
        }
      }
      // RFC 3461 4.1: NEVER must appear alone.
      if ((bits & kNotifyNever) && bits != kNotifyNever) return syntax("NOTIFY=NEVER must appear alone");
      cmd.rcpt.notify = bits;
    } else if (k == "ORCPT" && opt.dsn) {
      size_t semi = pr.value.find(';');
      if (!pr.has_value || semi == std::string::npos || semi == 0 || pr.value.size() > kMaxOrcpt) {
        return syntax("Bad ORCPT value");
      }
      cmd.rcpt.orcpt_type = to_lower(std::string_view(pr.value).substr(0, semi));
      std::string_view addr = std::string_view(pr.value).substr(semi + 1);
      if (cmd.rcpt.orcpt_type == "utf-8") {
        // RFC 6533 utf-8-addr-xtext: kept as sent; it is only echoed back in DSNs.
        if (addr.empty() || !valid_utf8(addr)) return syntax("Bad ORCPT value");
        cmd.rcpt.orcpt = std::string(addr);
      } else {
        std::optional<std::string> v = xtext_decode(addr);
        if (!v || v->empty()) return syntax("Bad ORCPT value");
        cmd.rcpt.orcpt = std::move(*v);
      }
    } else {
      return unknown_param(k);
    }
  }
  return cmd;
}

}  // namespace

std::optional<std::string> xtext_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '+') {
      auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;  // RFC 3461: upper-case hex only
      };
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c >= 33 && c <= 126 && c != '=') {
      out += static_cast<char>(c);
    } else if (c >= 0x80) {
      out += static_cast<char>(c);  // only reachable with SMTPUTF8 values
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::string xtext_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (c >= 33 && c <= 126 && c != '+' && c != '=') {
      out += static_cast<char>(c);
    } else {
      out += '+';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

CommandResult parse_command(std::string_view line, const CommandOptions& opt) {
  for (unsigned char c : line) {
    // A NUL or a bare CR/LF inside a command line is never legitimate (RFC 5321
    // 2.3.8); refusing it keeps such bytes out of logs and lookups.
    if (c == 0 || c == '\r' || c == '\n') return Reply(500, "5.5.2", "Error: invalid character in command");
  }
  size_t sp = line.find(' ');
  std::string_view verb_s = line.substr(0, sp);
  std::string_view arg = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  Command cmd;
  bool known = false;
  for (const VerbName& v : kVerbs) {
    if (iequals(verb_s, v.name)) {
      cmd.verb = v.verb;
      known = true;
      break;
    }
  }
  if (!known) return Reply(500, "5.5.2", "Error: command not recognized");
  const bool has_arg = sp != std::string_view::npos;
  switch (cmd.verb) {
    case Verb::kHelo:
    case Verb::kEhlo:
      if (opt.lmtp) return Reply(500, "5.5.1", "Error: use LHLO in LMTP");
      [[fallthrough]];
    case Verb::kLhlo: {
      if (cmd.verb == Verb::kLhlo && !opt.lmtp) return Reply(500, "5.5.2", "Error: command not recognized");
      std::string_view d = trim(arg);
      if (d.empty()) return syntax(std::string("Syntax: ") + std::string(kVerbs[static_cast<int>(cmd.verb)].name) + " hostname");
      cmd.argument = std::string(d);
      return cmd;
    }
    case Verb::kMail:
      return parse_mail(arg, opt, std::move(cmd));
    case Verb::kRcpt:
      return parse_rcpt(arg, opt, std::move(cmd));
    case Verb::kData:
    case Verb::kRset:
    case Verb::kQuit:
    case Verb::kStartTls:
      if (has_arg && !trim(arg).empty()) return syntax("Syntax: " + to_lower(verb_s) + " takes no arguments");
      return cmd;
    case Verb::kBdat: {
      if (!opt.chunking) return Reply(502, "5.5.1", "Error: BDAT not supported");
      std::vector<std::string> parts = split(arg, ' ');
      if (parts.empty() || parts.size() > 2) return syntax("Syntax: BDAT size [LAST]");
      std::optional<uint64_t> n = parse_number(parts[0]);
      if (!n) return syntax("Syntax: BDAT size [LAST]");
      cmd.bdat_size = *n;
      if (parts.size() == 2) {
        if (!iequals(parts[1], "LAST")) return syntax("Syntax: BDAT size [LAST]");
        cmd.bdat_last = true;
      }
      return cmd;
    }
    case Verb::kVrfy:
    case Verb::kExpn:
    case Verb::kAuth:
      if (trim(arg).empty()) return syntax("Syntax: " + to_lower(verb_s) + " needs an argument");
      cmd.argument = std::string(trim(arg));
      return cmd;
    case Verb::kNoop:
    case Verb::kHelp:
      cmd.argument = std::string(arg);
      return cmd;
  }
  return Reply(500, "5.5.2", "Error: command not recognized");
}

}  // namespace tern::common::smtp
