#include "mta/sendmail_args.h"

#include "common/text.h"

namespace tern::mta {

using common::ErrorKind;

namespace {

common::Error usage(const std::string& why) { return common::make_error(ErrorKind::kConfig, why); }

std::string basename(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// Unfolded header lines of a header section: {name, value}.
std::vector<std::pair<std::string, std::string>> headers_of(std::string_view h) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t pos = 0;
  while (pos < h.size()) {
    size_t nl = h.find('\n', pos);
    std::string_view line = h.substr(pos, (nl == std::string_view::npos ? h.size() : nl) - pos);
    pos = nl == std::string_view::npos ? h.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    if (line[0] == ' ' || line[0] == '\t') {
      if (out.empty()) break;  // a continuation of nothing: not a header section
      out.back().second += " ";
      out.back().second += std::string(common::trim(line));
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) break;
    out.emplace_back(common::to_lower(common::trim(line.substr(0, colon))), std::string(common::trim(line.substr(colon + 1))));
  }
  return out;
}

}  // namespace

common::Result<SendmailArgs> parse_sendmail_args(const std::vector<std::string>& argv) {
  SendmailArgs a;
  std::string prog = argv.empty() ? "sendmail" : basename(argv[0]);
  // Installed for alternatives(8) as sendmail.tern, mailq.tern, newaliases.tern
  // (Fedora's sendmail.postfix style): the name before the suffix decides.
  if (size_t dot = prog.find('.'); dot != std::string::npos) prog.resize(dot);
  if (prog == "mailq") a.mode = SendmailArgs::Mode::kPrintQueue;
  if (prog == "newaliases") a.mode = SendmailArgs::Mode::kNewAliases;
  size_t i = 1;
  auto value = [&](const std::string& opt, std::string& out) -> bool {
    // "-fuser" or "-f user".
    if (argv[i].size() > opt.size()) {
      out = argv[i].substr(opt.size());
      return true;
    }
    if (i + 1 >= argv.size()) return false;
    out = argv[++i];
    return true;
  };
  for (; i < argv.size(); ++i) {
    const std::string& o = argv[i];
    if (o == "--") {
      ++i;
      break;
    }
    if (o.empty() || o[0] != '-' || o == "-") break;
    std::string v;
    if (o == "-t") {
      a.extract_recipients = true;
    } else if (o == "-i" || o == "-oi") {
      a.ignore_dots = true;
    } else if (o == "-v") {
      a.verbose = true;
    } else if (o.rfind("-f", 0) == 0 || o.rfind("-r", 0) == 0) {
      if (!value(o.substr(0, 2), v)) return usage("option " + o.substr(0, 2) + " requires an argument");
      if (v == "<>") v.clear();
      if (v.size() > 2 && v.front() == '<' && v.back() == '>') v = v.substr(1, v.size() - 2);
      a.sender = v;
    } else if (o.rfind("-F", 0) == 0) {
      if (!value("-F", v)) return usage("option -F requires an argument");
      a.full_name = v;
    } else if (o.rfind("-C", 0) == 0) {
      if (!value("-C", v)) return usage("option -C requires an argument");
      a.config = v;
    } else if (o.rfind("-O", 0) == 0) {
      if (!value("-O", v)) return usage("option -O requires an argument");
      a.overrides.push_back(v);
    } else if (o == "-bs") {
      a.mode = SendmailArgs::Mode::kSmtp;
    } else if (o == "-bp") {
      a.mode = SendmailArgs::Mode::kPrintQueue;
    } else if (o == "-bi" || o == "-I") {
      a.mode = SendmailArgs::Mode::kNewAliases;
    } else if (o == "-bm" || o == "-bd" || o == "-bD") {
      if (o != "-bm") return usage("option " + o + " (daemon mode) is not supported: tern-master runs the MTA");
    } else if (o.rfind("-q", 0) == 0) {
      a.mode = SendmailArgs::Mode::kFlush;
    } else if (o.rfind("-od", 0) == 0 || o.rfind("-oe", 0) == 0 || o == "-om" || o.rfind("-oA", 0) == 0 ||
               o.rfind("-B", 0) == 0 || o.rfind("-N", 0) == 0 || o.rfind("-R", 0) == 0 || o == "-U" ||
               o.rfind("-V", 0) == 0 || o.rfind("-X", 0) == 0 || o.rfind("-L", 0) == 0 || o == "-n" ||
               o.rfind("-h", 0) == 0 || o.rfind("-oQ", 0) == 0 || o.rfind("-oX", 0) == 0 || o == "-oo") {
      // Accepted for compatibility; Postfix ignores these too. -B, -N, -R, -V, -X,
      // -h and -L take an argument when written apart.
      if ((o == "-B" || o == "-N" || o == "-R" || o == "-V" || o == "-X" || o == "-h" || o == "-L") && i + 1 < argv.size()) ++i;
    } else {
      return usage("unknown option " + common::log_escape(o, 32));
    }
  }
  for (; i < argv.size(); ++i) {
    // "a@x, b@x" as one argument is two recipients (sendmail compatibility).
    for (const std::string& r : common::split_any(argv[i], ", ")) a.recipients.push_back(r);
  }
  return a;
}

std::vector<std::string> parse_address_list(std::string_view v) {
  std::vector<std::string> out;
  std::string cur;          // text of the current mailbox outside <>
  std::string angle;        // inside <...>
  bool in_angle = false, in_quote = false, have_angle = false;
  int comment = 0;
  auto flush = [&] {
    std::string a = have_angle ? angle : std::string(common::trim(cur));
    a = std::string(common::trim(a));
    // A bare word without '@' is a local user name, which sendmail accepts; what
    // still has spaces, brackets or an open quote is a phrase, not an address.
    if (!a.empty() && !in_quote && a.find_first_of(" \t<>\"(),") == std::string::npos) out.push_back(a);
    cur.clear();
    angle.clear();
    have_angle = false;
  };
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (comment > 0) {
      if (c == '\\' && i + 1 < v.size()) ++i;
      else if (c == '(') ++comment;
      else if (c == ')') --comment;
      continue;
    }
    if (in_quote) {
      if (c == '\\' && i + 1 < v.size()) {
        (in_angle ? angle : cur) += v[++i];
      } else if (c == '"') {
        in_quote = false;
      } else {
        (in_angle ? angle : cur) += c;
      }
      continue;
    }
    switch (c) {
      case '"': in_quote = true; if (!in_angle) cur += ' '; break;
      case '(': ++comment; break;
      case '<': in_angle = true; have_angle = true; angle.clear(); break;
      case '>': in_angle = false; break;
      case ':':
        if (!in_angle) cur.clear();  // "group:" starts a group; the name is not an address
        else angle += c;
        break;
      case ';':
        if (!in_angle) flush();
        break;
      case ',':
        if (in_angle) angle += c;
        else flush();
        break;
      default:
        (in_angle ? angle : cur) += c;
    }
  }
  flush();
  return out;
}

bool has_header(std::string_view headers, std::string_view name) {
  std::string n = common::to_lower(name);
  for (const auto& [k, v] : headers_of(headers)) {
    if (k == n) return true;
  }
  return false;
}

std::vector<std::string> header_recipients(std::string_view headers) {
  auto hs = headers_of(headers);
  bool resent = false;
  for (const auto& [k, v] : hs) resent = resent || k == "resent-to" || k == "resent-cc" || k == "resent-bcc";
  std::vector<std::string> out;
  for (const auto& [k, v] : hs) {
    bool want = resent ? (k == "resent-to" || k == "resent-cc" || k == "resent-bcc") : (k == "to" || k == "cc" || k == "bcc");
    if (!want) continue;
    for (std::string& a : parse_address_list(v)) out.push_back(std::move(a));
  }
  return out;
}

std::string remove_bcc(std::string_view m) {
  std::string out;
  size_t pos = 0;
  bool dropping = false, in_headers = true;
  while (pos < m.size()) {
    size_t nl = m.find('\n', pos);
    size_t end = nl == std::string_view::npos ? m.size() : nl + 1;
    std::string_view line = m.substr(pos, end - pos);
    pos = end;
    if (!in_headers) {
      out += line;
      continue;
    }
    std::string_view t = line;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.remove_suffix(1);
    if (t.empty()) {
      in_headers = false;
      out += line;
      continue;
    }
    if (t[0] == ' ' || t[0] == '\t') {
      if (!dropping) out += line;
      continue;
    }
    // The name up to the colon, with the obsolete "Bcc :" spacing (RFC 5322 4.5).
    size_t colon = t.find(':');
    std::string name = colon == std::string_view::npos ? "" : common::to_lower(common::trim(t.substr(0, colon)));
    dropping = name == "bcc" || name == "resent-bcc";
    if (!dropping) out += line;
  }
  return out;
}

}  // namespace tern::mta
