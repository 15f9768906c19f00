#include "mra/imap_render.h"

#include <cstdio>
#include <cstring>

#include "common/mime_address.h"
#include "common/mime_charset.h"
#include "common/mime_date.h"
#include "common/mime_decode.h"
#include "common/text.h"

namespace tern::mra::imap {

namespace mime = tern::common::mime;

namespace {

// Quoted strings longer than this go out as literals: some clients have fixed
// buffers for quoted strings, and a literal costs only its "{n}" header.
constexpr size_t kMaxQuoted = 1024;

bool quotable(std::string_view s, RenderMode mode) {
  if (s.size() > kMaxQuoted) return false;
  bool eight_bit = false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u == 0 || c == '\r' || c == '\n') return false;
    if (u >= 0x80) eight_bit = true;
  }
  if (eight_bit) return mode.utf8 && mime::is_valid_utf8(s);
  return true;
}

bool is_atom_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  switch (c) {
    case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
      return false;
    default:
      return true;
  }
}

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

}  // namespace

void append_literal(std::string& out, std::string_view data) {
  out += '{';
  out += std::to_string(data.size());
  out += "}\r\n";
  size_t start = out.size();
  out.append(data);
  // NUL is not allowed in a literal (RFC 3501 4.3): shown as 0x80. memchr, as a
  // body of megabytes normally has none.
  for (size_t i = start; i < out.size();) {
    void* p = std::memchr(out.data() + i, '\0', out.size() - i);
    if (!p) break;
    *static_cast<char*>(p) = static_cast<char>(0x80);
    i = static_cast<size_t>(static_cast<char*>(p) - out.data()) + 1;
  }
}

void append_literal8(std::string& out, std::string_view data) {
  if (data.find('\0') == std::string_view::npos) {
    append_literal(out, data);
    return;
  }
  out += "~{";
  out += std::to_string(data.size());
  out += "}\r\n";
  out.append(data);
}

void append_string(std::string& out, std::string_view s, RenderMode mode) {
  if (quotable(s, mode)) {
    append_quoted(out, s);
  } else {
    append_literal(out, s);
  }
}

void append_nstring(std::string& out, const std::optional<std::string>& s, RenderMode mode) {
  if (!s) {
    out += "NIL";
  } else {
    append_string(out, *s, mode);
  }
}

void append_astring(std::string& out, std::string_view s, RenderMode mode) {
  bool atom = !s.empty() && !tern::common::iequals(s, "NIL");
  for (char c : s) {
    if (!is_atom_char(c)) {
      atom = false;
      break;
    }
  }
  if (atom) {
    out.append(s);
  } else {
    append_string(out, s, mode);
  }
}

std::string format_flag_list(const std::vector<std::string>& flags) {
  std::string out = "(";
  for (size_t i = 0; i < flags.size(); ++i) {
    if (i) out += ' ';
    out += flags[i];
  }
  out += ')';
  return out;
}

std::string format_internal_date(int64_t t, int zone) {
  mime::DateTime d = mime::civil_from_unix(t, zone);
  char buf[64];
  int z = zone < 0 ? -zone : zone;
  std::snprintf(buf, sizeof(buf), "\"%02d-%s-%04d %02d:%02d:%02d %c%02d%02d\"", d.day, mime::month_name(d.month),
                d.year, d.hour, d.minute, d.second, zone < 0 ? '-' : '+', z / 60, z % 60);
  return buf;
}

// --- ENVELOPE ------------------------------------------------------------------------

namespace {

std::optional<std::string> header_nstring(const mime::HeaderSection& h, std::string_view name) {
  std::optional<std::string_view> v = h.first(name);
  if (!v) return std::nullopt;
  std::string u = mime::unfold(*v);
  if (u.empty()) return std::nullopt;  // Dovecot renders an empty field as NIL too
  return u;
}

// (addr-name addr-adl addr-mailbox addr-host) per address, NIL for no addresses.
void append_address_list(std::string& out, const std::vector<mime::Address>& addrs, RenderMode mode) {
  if (addrs.empty()) {
    out += "NIL";
    return;
  }
  out += '(';
  for (const mime::Address& a : addrs) {
    out += '(';
    switch (a.kind) {
      case mime::Address::Kind::kGroupStart:
        out += "NIL NIL ";
        append_string(out, a.mailbox, mode);
        out += " NIL";
        break;
      case mime::Address::Kind::kGroupEnd:
        out += "NIL NIL NIL NIL";
        break;
      case mime::Address::Kind::kMailbox:
        append_nstring(out, a.name.empty() ? std::nullopt : std::optional<std::string>(a.name), mode);
        out += ' ';
        append_nstring(out, a.route.empty() ? std::nullopt : std::optional<std::string>(a.route), mode);
        out += ' ';
        // A NIL host marks group syntax (RFC 3501 7.4.2), so a missing part gets a
        // placeholder, as Dovecot writes it.
        append_string(out, a.mailbox.empty() ? std::string("MISSING_MAILBOX") : a.mailbox, mode);
        out += ' ';
        append_string(out, a.host.empty() ? std::string("MISSING_DOMAIN") : a.host, mode);
        break;
    }
    out += ')';
  }
  out += ')';
}

std::vector<mime::Address> header_addresses(const mime::HeaderSection& h, std::string_view name) {
  std::optional<std::string_view> v = h.first(name);
  if (!v) return {};
  // 1000 addresses per field in a FETCH response is plenty; a crafted header with
  // more would only inflate every ENVELOPE.
  return mime::parse_address_list(*v, 1000);
}

}  // namespace

void append_envelope(std::string& out, const mime::HeaderSection& h, RenderMode mode) {
  out += '(';
  append_nstring(out, header_nstring(h, "Date"), mode);
  out += ' ';
  append_nstring(out, header_nstring(h, "Subject"), mode);
  std::vector<mime::Address> from = header_addresses(h, "From");
  std::vector<mime::Address> sender = header_addresses(h, "Sender");
  std::vector<mime::Address> reply_to = header_addresses(h, "Reply-To");
  // RFC 3501 7.4.2: absent or empty Sender and Reply-To default to From.
  if (sender.empty()) sender = from;
  if (reply_to.empty()) reply_to = from;
  for (const std::vector<mime::Address>* list : {&from, &sender, &reply_to}) {
    out += ' ';
    append_address_list(out, *list, mode);
  }
  for (const char* name : {"To", "Cc", "Bcc"}) {
    out += ' ';
    append_address_list(out, header_addresses(h, name), mode);
  }
  out += ' ';
  append_nstring(out, header_nstring(h, "In-Reply-To"), mode);
  out += ' ';
  append_nstring(out, header_nstring(h, "Message-ID"), mode);
  out += ')';
}

// --- BODYSTRUCTURE -------------------------------------------------------------------

namespace {

void append_params(std::string& out, const std::vector<mime::Param>& params, bool add_charset, RenderMode mode) {
  bool has_charset = false;
  for (const mime::Param& p : params) has_charset = has_charset || p.name == "charset";
  if (params.empty() && !(add_charset && !has_charset)) {
    out += "NIL";
    return;
  }
  out += '(';
  bool first = true;
  for (const mime::Param& p : params) {
    if (!first) out += ' ';
    first = false;
    // An RFC 2231 value with a charset goes out encoded, named "name*", so the client
    // decodes it (as Dovecot and Cyrus do); others as they are.
    append_string(out, p.extended ? p.name + "*" : p.name, mode);
    out += ' ';
    append_string(out, p.value, mode);
  }
  if (add_charset && !has_charset) {
    if (!first) out += ' ';
    out += "\"charset\" \"us-ascii\"";
  }
  out += ')';
}

void append_extension_tail(std::string& out, const mime::Part& p, RenderMode mode) {
  // body-fld-dsp SP body-fld-lang SP body-fld-loc
  out += ' ';
  if (p.disposition.type.empty()) {
    out += "NIL";
  } else {
    out += '(';
    append_string(out, p.disposition.type, mode);
    out += ' ';
    append_params(out, p.disposition.params, false, mode);
    out += ')';
  }
  out += ' ';
  if (p.language.empty()) {
    out += "NIL";
  } else {
    out += '(';
    for (size_t i = 0; i < p.language.size(); ++i) {
      if (i) out += ' ';
      append_string(out, p.language[i], mode);
    }
    out += ')';
  }
  out += ' ';
  append_nstring(out, p.location, mode);
}

void append_part(std::string& out, const mime::Message& m, const mime::Part& p, bool ext, RenderMode mode) {
  out += '(';
  if (p.kind == mime::Part::Kind::kMultipart) {
    if (p.children.empty()) {
      // A multipart without parts is not allowed by the grammar (1*body): show one
      // empty text part, as Dovecot does.
      out += "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0";
      if (ext) out += " NIL NIL NIL NIL";
      out += ')';
    }
    for (uint32_t c : p.children) append_part(out, m, m.part(c), ext, mode);
    out += ' ';
    append_string(out, p.content_type.subtype.empty() ? std::string("x-unknown") : p.content_type.subtype, mode);
    if (ext) {
      out += ' ';
      append_params(out, p.content_type.params, false, mode);
      append_extension_tail(out, p, mode);
    }
    out += ')';
    return;
  }
  bool text = p.kind == mime::Part::Kind::kLeaf && p.content_type.type == "text";
  // A message/rfc822 the parser did not descend into (nesting limit, or an encoding
  // RFC 2046 5.2.1 forbids) still needs the envelope, body and lines the grammar
  // requires for that media type: its own header if readable, and an empty body.
  bool opaque_message = p.kind == mime::Part::Kind::kLeaf && p.content_type.type == "message" &&
                        (p.content_type.subtype == "rfc822" || p.content_type.subtype == "global");
  append_string(out, p.content_type.type, mode);
  out += ' ';
  append_string(out, p.content_type.subtype, mode);
  out += ' ';
  append_params(out, p.content_type.params, text, mode);
  out += ' ';
  append_nstring(out, p.id, mode);
  out += ' ';
  append_nstring(out, p.description, mode);
  out += ' ';
  append_string(out, p.encoding.empty() ? std::string("7bit") : p.encoding, mode);
  out += ' ';
  out += std::to_string(p.body_size());
  if (text) {
    out += ' ';
    out += std::to_string(p.body_lines);
  } else if (opaque_message) {
    bool identity = p.encoding.empty() || p.encoding == "7bit" || p.encoding == "8bit" || p.encoding == "binary";
    out += ' ';
    append_envelope(out, identity ? mime::parse_header_section(m.body_text(p), 1000) : mime::HeaderSection{}, mode);
    out += " (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0";
    if (ext) out += " NIL NIL NIL NIL";
    out += ") ";
    out += std::to_string(p.body_lines);
  } else if (p.kind == mime::Part::Kind::kMessage) {
    const mime::Part& inner = m.part(p.children[0]);
    out += ' ';
    append_envelope(out, inner.header, mode);
    out += ' ';
    append_part(out, m, inner, ext, mode);
    out += ' ';
    out += std::to_string(p.body_lines);
  }
  if (ext) {
    out += ' ';
    append_nstring(out, p.md5, mode);
    append_extension_tail(out, p, mode);
  }
  out += ')';
}

}  // namespace

void append_body_structure(std::string& out, const mime::Message& m, const mime::Part& p, bool extended,
                           RenderMode mode) {
  append_part(out, m, p, extended, mode);
}

// --- BODY[section] -------------------------------------------------------------------

std::string filter_header(std::string_view text, const std::vector<std::string>& fields, bool exclude) {
  std::string out;
  size_t i = 0;
  bool keep = false;
  while (i < text.size()) {
    size_t lf = text.find('\n', i);
    size_t next = lf == std::string_view::npos ? text.size() : lf + 1;
    std::string_view line = text.substr(i, next - i);
    std::string_view content = line;
    while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) content.remove_suffix(1);
    if (content.empty()) break;  // the blank line: added below
    if (line[0] == ' ' || line[0] == '\t') {
      if (keep) out.append(line);
    } else {
      size_t colon = content.find(':');
      std::string_view name = colon == std::string_view::npos ? std::string_view() : content.substr(0, colon);
      while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
      bool listed = false;
      if (!name.empty()) {
        for (const std::string& f : fields) {
          if (tern::common::iequals(f, name)) {
            listed = true;
            break;
          }
        }
      }
      keep = !name.empty() && (exclude ? !listed : listed);
      if (keep) out.append(line);
    }
    i = next;
  }
  if (!out.empty() && out.back() != '\n') out += "\r\n";
  out += "\r\n";
  return out;
}

SectionContent section_content(const mime::Message& m, const Section& sec) {
  using Spec = Section::Spec;
  SectionContent r;
  const mime::Part* p = m.find_section(sec.part);
  if (!p) return r;
  auto view = [&](std::string_view v) {
    r.exists = true;
    r.view = v;
    return r;
  };
  if (sec.spec == Spec::kNone) {
    if (sec.part.empty()) return view(m.raw());
    return view(m.body_text(*p));
  }
  if (sec.spec == Spec::kMime) {
    if (sec.part.empty()) return r;
    return view(m.header_text(*p));
  }
  // HEADER, HEADER.FIELDS[.NOT], TEXT: of the message, or of an encapsulated message.
  const mime::Part* target = sec.part.empty() ? &m.root() : m.message_of(*p);
  if (!target) return r;
  switch (sec.spec) {
    case Spec::kHeader:
      return view(m.header_text(*target));
    case Spec::kText:
      return view(m.body_text(*target));
    case Spec::kHeaderFields:
    case Spec::kHeaderFieldsNot:
      r.exists = true;
      r.owned = true;
      r.storage = filter_header(m.header_text(*target), sec.fields, sec.spec == Spec::kHeaderFieldsNot);
      return r;
    default:
      return r;
  }
}

BinaryContent binary_content(const mime::Message& m, const Section& sec) {
  BinaryContent r;
  const mime::Part* p = m.find_section(sec.part);
  if (!p) {
    r.status = BinaryContent::Status::kNoSection;
    return r;
  }
  if (sec.part.empty()) {
    r.data = m.raw();  // BINARY[] is the whole message, undecoded
    return r;
  }
  if (p->kind != mime::Part::Kind::kLeaf) {
    r.data = std::string(m.body_text(*p));  // multiparts and messages have no encoding of their own
    return r;
  }
  bool clean = false;
  r.data = m.decoded_body(*p, &clean);
  if (!clean) {
    r.status = BinaryContent::Status::kUnknownCte;
    r.data.clear();
  }
  return r;
}

std::string_view apply_partial(std::string_view data, const std::optional<std::pair<uint64_t, uint64_t>>& partial) {
  if (!partial) return data;
  if (partial->first >= data.size()) return {};
  return data.substr(static_cast<size_t>(partial->first),
                     static_cast<size_t>(std::min<uint64_t>(partial->second, data.size() - partial->first)));
}

}  // namespace tern::mra::imap
