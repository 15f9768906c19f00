#include "common/auth_protocol.h"

#include "common/text.h"

namespace tern::common::auth_protocol {

std::string tab_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '\001': out += "\001" "1"; break;
      case '\t': out += "\001t"; break;
      case '\n': out += "\001n"; break;
      case '\r': out += "\001r"; break;
      default: out += c;
    }
  }
  return out;
}

std::optional<std::string> tab_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\001') {
      out += s[i];
      continue;
    }
    if (i + 1 >= s.size()) return std::nullopt;
    switch (s[++i]) {
      case '1': out += '\001'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      default: return std::nullopt;
    }
  }
  return out;
}

ParsedLine parse_line(std::string_view text) {
  ParsedLine p;
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (text.empty()) {
    p.error = LineError::kEmpty;
    return p;
  }
  if (text.find('\0') != std::string_view::npos) {
    p.error = LineError::kNul;
    return p;
  }
  size_t start = 0;
  bool first = true;
  for (;;) {
    size_t tab = text.find('\t', start);
    std::string_view field = text.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start);
    std::optional<std::string> v = tab_unescape(field);
    if (!v) {
      p.error = LineError::kBadEscape;
      return p;
    }
    if (first) {
      p.line.command = std::move(*v);
      first = false;
    } else {
      if (p.line.args.size() >= kMaxArgs) {
        p.error = LineError::kTooManyArgs;
        return p;
      }
      p.line.args.push_back(std::move(*v));
    }
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  if (p.line.command.empty()) {
    p.error = LineError::kEmpty;
    return p;
  }
  p.ok = true;
  return p;
}

const char* line_error_text(LineError e) {
  switch (e) {
    case LineError::kEmpty: return "empty line";
    case LineError::kNul: return "NUL byte in line";
    case LineError::kBadEscape: return "invalid \\001 escape";
    case LineError::kTooManyArgs: return "too many fields";
  }
  return "?";
}

std::string make_line(std::initializer_list<std::string_view> words) {
  std::string out;
  bool first = true;
  for (std::string_view w : words) {
    if (!first) out += '\t';
    first = false;
    out += tab_escape(w);
  }
  out += '\n';
  return out;
}

std::string make_line(const std::vector<std::string>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i) out += '\t';
    out += tab_escape(words[i]);
  }
  out += '\n';
  return out;
}

Field split_field(std::string_view arg) {
  Field f;
  size_t eq = arg.find('=');
  if (eq == std::string_view::npos) {
    f.key = arg;
    return f;
  }
  f.key = arg.substr(0, eq);
  f.value = arg.substr(eq + 1);
  f.has_value = true;
  return f;
}

std::optional<RequestId> parse_request_id(std::string_view s) {
  if (s.empty() || s.size() > 10) return std::nullopt;
  std::optional<uint64_t> n = parse_u64(s);
  if (!n || *n == 0 || *n > 0xffffffffu) return std::nullopt;
  return static_cast<RequestId>(*n);
}

bool valid_mech_name(std::string_view m) {
  if (m.empty() || m.size() > 20) return false;
  for (char c : m) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool valid_user_name(std::string_view u) {
  if (u.empty() || u.size() > kMaxUserName) return false;
  for (unsigned char c : u) {
    if (c <= 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '"') return false;
  }
  return true;
}

namespace {

// Decodes a SASL message in base64; "=" alone is an empty message (RFC 4954 4).
std::optional<std::string> decode_sasl(std::string_view b64) {
  if (b64 == "=") return std::string();
  return base64_decode(b64);
}

}  // namespace

AuthParse parse_auth(const Line& line) {
  AuthParse p;
  if (line.args.size() < 2) {
    p.error = AuthParseError::kMissingArgs;
    return p;
  }
  std::optional<RequestId> id = parse_request_id(line.args[0]);
  if (!id) {
    p.error = AuthParseError::kBadId;
    return p;
  }
  p.cmd.id = *id;
  if (!valid_mech_name(line.args[1])) {
    p.error = AuthParseError::kBadMech;
    return p;
  }
  p.cmd.mech = line.args[1];
  for (char& c : p.cmd.mech) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  for (size_t i = 2; i < line.args.size(); ++i) {
    Field f = split_field(line.args[i]);
    if (!f.has_value) {
      if (f.key == "secured") p.cmd.secured = true;
      else if (f.key == "valid-client-cert") p.cmd.valid_client_cert = true;
      else if (f.key == "no-penalty") p.cmd.no_penalty = true;
      else if (f.key == "final-resp-ok") p.cmd.final_resp_ok = true;
      // Other flags (nologin, debug...) are accepted and ignored, as
      // Dovecot ignores what it does not know.
      continue;
    }
    // Only short values matter here; each is bounded by the line length.
    if (f.key == "service") p.cmd.service = std::string(f.value);
    else if (f.key == "lip") p.cmd.lip = std::string(f.value);
    else if (f.key == "rip") p.cmd.rip = std::string(f.value);
    else if (f.key == "lport") p.cmd.lport = std::string(f.value);
    else if (f.key == "rport") p.cmd.rport = std::string(f.value);
    else if (f.key == "secured") p.cmd.secured = f.value != "no";
    else if (f.key == "resp") {
      std::optional<std::string> r = f.value.empty() ? std::optional<std::string>(std::string()) : decode_sasl(f.value);
      if (!r) {
        p.error = AuthParseError::kBadBase64;
        return p;
      }
      if (r->size() > kMaxSaslMessage) {
        p.error = AuthParseError::kTooLong;
        return p;
      }
      p.cmd.has_initial_response = true;
      p.cmd.initial_response = std::move(*r);
    }
  }
  if (p.cmd.service.empty()) {
    p.error = AuthParseError::kNoService;
    return p;
  }
  return p;
}

const char* auth_parse_error_text(AuthParseError e) {
  switch (e) {
    case AuthParseError::kNone: return "ok";
    case AuthParseError::kMissingArgs: return "AUTH needs an id and a mechanism";
    case AuthParseError::kBadId: return "invalid request id";
    case AuthParseError::kBadMech: return "invalid mechanism name";
    case AuthParseError::kNoService: return "service parameter missing";
    case AuthParseError::kBadBase64: return "invalid base64 data in initial response";
    case AuthParseError::kTooLong: return "initial response too long";
  }
  return "?";
}

ContParse parse_cont(const Line& line) {
  ContParse c;
  if (line.args.empty()) {
    c.error = "CONT needs an id";
    return c;
  }
  std::optional<RequestId> id = parse_request_id(line.args[0]);
  if (!id) {
    c.error = "invalid request id";
    return c;
  }
  c.id = *id;
  std::string_view data = line.args.size() > 1 ? std::string_view(line.args[1]) : std::string_view();
  std::optional<std::string> r = data.empty() ? std::optional<std::string>(std::string()) : decode_sasl(data);
  if (!r) {
    c.error = "invalid base64 data in continued response";
    return c;
  }
  if (r->size() > kMaxSaslMessage) {
    c.error = "continued response too long";
    return c;
  }
  c.response = std::move(*r);
  c.ok = true;
  return c;
}

}  // namespace tern::common::auth_protocol
