#include "common/mime.h"

#include <algorithm>
#include <cstring>

#include "common/mime_charset.h"
#include "common/mime_decode.h"

namespace tern::common::mime {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// RFC 2046 5.1.1: a boundary is 1 to 70 characters. Longer ones occur in the wild;
// past 200 it is junk, and refusing it keeps the per-line comparison cheap.
constexpr size_t kMaxBoundary = 200;

size_t count_lf(std::string_view s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

// The one-pass parser. Parts are appended to msg.parts_; `open_` is the path from the
// root to the part whose body the current line belongs to.
class MessageParser {
 public:
  MessageParser(Message& msg, const Limits& limits) : m_(msg), lim_(limits), s_(*msg.raw_) {
    // Recursion into message/rfc822 follows max_depth: keep it sane whatever the caller says.
    if (lim_.max_depth > 200) lim_.max_depth = 200;
    if (lim_.max_parts == 0) lim_.max_parts = 1;
  }

  // The root's header only (Message::parse_header_only).
  void run_header_only() {
    m_.parts_.emplace_back();
    Part& p = m_.parts_.back();
    size_t he = header_end(0);
    p.header = parse_header_section(std::string_view(s_).substr(0, he), lim_.max_header_fields);
    p.body_begin = he;
    p.body_end = s_.size();
    p.body_lines = count_lf(std::string_view(s_).substr(he));
    analyse_headers(p, false);
  }

  void run() {
    size_t pos = begin_entity(0, std::nullopt, 0, false);
    size_t n = s_.size();
    while (pos < n) {
      size_t lf = s_.find('\n', pos);
      size_t next = lf == std::string_view::npos ? n : lf + 1;
      if (!bounds_.empty() && s_.size() - pos >= 2 && s_[pos] == '-' && s_[pos + 1] == '-') {
        size_t content_end = lf == std::string_view::npos ? n : lf;
        if (content_end > pos && s_[content_end - 1] == '\r') --content_end;
        bool is_close = false;
        std::optional<size_t> k = match_boundary(s_.substr(pos, content_end - pos), is_close);
        if (k) {
          on_boundary(*k, is_close, pos);
          if (!is_close) {
            pos = begin_entity(next, bounds_[*k].part, m_.parts_[bounds_[*k].part].depth + 1,
                               m_.parts_[bounds_[*k].part].content_type.subtype == "digest");
            continue;
          }
        }
      }
      pos = next;
    }
    close_down_to(0, n);
    close_part(open_[0], n);
    open_.clear();
  }

 private:
  struct Bound {
    uint32_t part;     // the multipart
    size_t open_pos;   // its index in open_
    std::string text;  // the boundary parameter
  };

  // Which open boundary the line is, innermost first (an inner multipart that lacks
  // its close delimiter is ended by its parent's next boundary).
  std::optional<size_t> match_boundary(std::string_view line, bool& is_close) const {
    std::string_view rest0 = line.substr(2);
    for (size_t k = bounds_.size(); k-- > 0;) {
      const std::string& b = bounds_[k].text;
      if (rest0.size() < b.size() || std::memcmp(rest0.data(), b.data(), b.size()) != 0) continue;
      std::string_view rest = rest0.substr(b.size());
      bool close = rest.size() >= 2 && rest[0] == '-' && rest[1] == '-';
      if (close) rest.remove_prefix(2);
      if (!std::all_of(rest.begin(), rest.end(), is_blank)) continue;
      is_close = close;
      return k;
    }
    return std::nullopt;
  }

  // Where a body ends when a boundary line starts at `line_start`: the line end
  // before the boundary belongs to the delimiter (RFC 2046 5.1.1).
  size_t end_before(size_t line_start) const {
    size_t e = line_start;
    if (e > 0 && s_[e - 1] == '\n') {
      --e;
      if (e > 0 && s_[e - 1] == '\r') --e;
    }
    return e;
  }

  void close_part(uint32_t idx, size_t end) {
    Part& p = m_.parts_[idx];
    // A part never ends before its last child: in malformed mail the line end before
    // a boundary can also be the blank line that ended a child's header.
    size_t e = std::max(end, p.body_begin);
    if (!p.children.empty()) e = std::max(e, m_.parts_[p.children.back()].body_end);
    p.body_end = e;
    p.body_lines = count_lf(std::string_view(s_).substr(p.body_begin, p.body_end - p.body_begin));
  }

  // Closes every open part above open_[keep] at `end`, and drops their boundaries.
  void close_down_to(size_t keep, size_t end) {
    while (open_.size() > keep + 1) {
      close_part(open_.back(), end);
      open_.pop_back();
    }
    while (!bounds_.empty() && bounds_.back().open_pos > keep) bounds_.pop_back();
  }

  void on_boundary(size_t k, bool is_close, size_t line_start) {
    size_t keep = bounds_[k].open_pos;
    close_down_to(keep, end_before(line_start));
    if (is_close) bounds_.pop_back();  // bounds_[k] is now the last: its parts are done
  }

  // Scans a header section starting at `pos`: it ends after a blank line, at the end
  // of input, or before a line that is an open boundary (a part without a body).
  size_t header_end(size_t pos) const {
    // No open boundary (the message itself, an encapsulated message outside any
    // multipart): the shared rule, which IMAP's header-only fetches rely on.
    if (bounds_.empty()) return pos + header_section_end(std::string_view(s_).substr(pos));
    size_t n = s_.size();
    while (pos < n) {
      size_t lf = s_.find('\n', pos);
      size_t content_end = lf == std::string_view::npos ? n : lf;
      if (content_end > pos && s_[content_end - 1] == '\r') --content_end;
      if (content_end == pos) return lf == std::string_view::npos ? n : lf + 1;
      if (!bounds_.empty() && content_end - pos >= 2 && s_[pos] == '-' && s_[pos + 1] == '-') {
        bool close = false;
        if (match_boundary(s_.substr(pos, content_end - pos), close)) return pos;
      }
      if (lf == std::string_view::npos) return n;
      pos = lf + 1;
    }
    return n;
  }

  static std::optional<std::string> first_unfolded(const HeaderSection& h, std::string_view name) {
    std::optional<std::string_view> v = h.first(name);
    if (!v) return std::nullopt;
    return unfold(*v);
  }

  void analyse_headers(Part& p, bool digest_child) {
    const HeaderSection& h = p.header;
    if (std::optional<std::string_view> ct = h.first("Content-Type")) {
      ContentType t = parse_content_type(*ct);
      if (!t.type.empty()) {
        p.content_type = std::move(t);
        p.content_type_given = true;
      }
    }
    if (!p.content_type_given) {
      // RFC 2045 5.2 default, or message/rfc822 inside multipart/digest (RFC 2046 5.1.5).
      if (digest_child) {
        p.content_type.type = "message";
        p.content_type.subtype = "rfc822";
      } else {
        p.content_type.type = "text";
        p.content_type.subtype = "plain";
        p.content_type.params.push_back(Param{"charset", "us-ascii", false});
      }
    }
    if (std::optional<std::string_view> e = h.first("Content-Transfer-Encoding")) {
      p.encoding = parse_content_transfer_encoding(*e);
    }
    p.id = first_unfolded(h, "Content-ID");
    p.description = first_unfolded(h, "Content-Description");
    p.md5 = first_unfolded(h, "Content-MD5");
    p.location = first_unfolded(h, "Content-Location");
    if (std::optional<std::string_view> d = h.first("Content-Disposition")) {
      p.disposition = parse_content_disposition(*d);
    }
    if (std::optional<std::string_view> l = h.first("Content-Language")) {
      p.language = parse_content_language(*l);
    }
  }

  // Starts a part at `pos`: parses its header, opens it, and for a multipart pushes
  // its boundary, for message/rfc822 starts the encapsulated message. Returns where
  // the caller's scan continues.
  size_t begin_entity(size_t pos, std::optional<uint32_t> parent, size_t depth, bool digest_child) {
    if (m_.parts_.size() >= lim_.max_parts) {
      // Out of parts: stop recognising boundaries, the rest is body of what is open.
      m_.limited_ = true;
      bounds_.clear();
      return pos;
    }
    auto idx = static_cast<uint32_t>(m_.parts_.size());
    m_.parts_.emplace_back();
    Part& p = m_.parts_.back();
    p.header_begin = pos;
    p.depth = depth;
    p.parent = parent;
    size_t he = header_end(pos);
    p.header = parse_header_section(std::string_view(s_).substr(pos, he - pos), lim_.max_header_fields);
    p.body_begin = he;
    p.body_end = he;
    analyse_headers(p, digest_child);
    if (parent) m_.parts_[*parent].children.push_back(idx);
    open_.push_back(idx);

    Part& q = m_.parts_[idx];  // no reallocation since `p`, but keep the habit
    const std::string& type = q.content_type.type;
    const std::string& sub = q.content_type.subtype;
    if (type == "multipart") {
      q.kind = Part::Kind::kMultipart;
      const Param* b = q.content_type.find("boundary");
      if (depth >= lim_.max_depth) {
        m_.limited_ = true;
      } else if (b && !b->value.empty() && b->value.size() <= kMaxBoundary) {
        bounds_.push_back(Bound{idx, open_.size() - 1, b->value});
      }
      return he;
    }
    bool identity = q.encoding.empty() || q.encoding == "7bit" || q.encoding == "8bit" || q.encoding == "binary";
    if (type == "message" && (sub == "rfc822" || sub == "global") && identity) {
      if (depth >= lim_.max_depth) {
        m_.limited_ = true;
        return he;
      }
      q.kind = Part::Kind::kMessage;
      return begin_entity(he, idx, depth + 1, false);
    }
    return he;
  }

  Message& m_;
  Limits lim_;
  const std::string& s_;
  std::vector<uint32_t> open_;
  std::vector<Bound> bounds_;
};

Message Message::parse(std::string raw, const Limits& limits) {
  Message m;
  m.raw_ = std::make_shared<const std::string>(std::move(raw));
  MessageParser(m, limits).run();
  // A message/rfc822 part whose encapsulated message could not be created (part
  // limit) is a leaf.
  for (Part& p : m.parts_) {
    if (p.kind == Part::Kind::kMessage && p.children.empty()) p.kind = Part::Kind::kLeaf;
  }
  return m;
}

Message Message::parse_header_only(std::string raw, const Limits& limits) {
  Message m;
  m.raw_ = std::make_shared<const std::string>(std::move(raw));
  MessageParser(m, limits).run_header_only();
  return m;
}

size_t header_section_end(std::string_view raw) {
  size_t n = raw.size();
  size_t pos = 0;
  while (pos < n) {
    const void* p = std::memchr(raw.data() + pos, '\n', n - pos);
    if (!p) {
      // The last line, without a line end: empty only if it is a lone CR.
      return n;
    }
    size_t lf = static_cast<size_t>(static_cast<const char*>(p) - raw.data());
    if (lf == pos || (lf == pos + 1 && raw[pos] == '\r')) return lf + 1;
    pos = lf + 1;
  }
  return n;
}

std::string_view Message::header_text(const Part& p) const {
  return std::string_view(*raw_).substr(p.header_begin, p.body_begin - p.header_begin);
}

std::string_view Message::body_text(const Part& p) const {
  return std::string_view(*raw_).substr(p.body_begin, p.body_end - p.body_begin);
}

std::string_view Message::entity_text(const Part& p) const {
  return std::string_view(*raw_).substr(p.header_begin, p.body_end - p.header_begin);
}

const Part* Message::message_of(const Part& p) const {
  if (p.kind == Part::Kind::kMessage && !p.children.empty()) return &parts_[p.children[0]];
  return nullptr;
}

const Part* Message::find_section(const std::vector<uint32_t>& path) const {
  const Part* cur = &parts_[0];
  // `cur` is a "message" context at the root: its part numbers count its body parts.
  bool message_context = true;
  for (uint32_t n : path) {
    if (n == 0) return nullptr;
    const Part* container = cur;
    if (!message_context) {
      if (cur->kind == Part::Kind::kMessage) {
        container = &parts_[cur->children[0]];  // parse() left no kMessage without a child
      } else if (cur->kind != Part::Kind::kMultipart) {
        return nullptr;
      }
    }
    if (container->kind == Part::Kind::kMultipart) {
      if (n > container->children.size()) return nullptr;
      cur = &parts_[container->children[n - 1]];
    } else {
      if (n != 1) return nullptr;  // a single-part message has only part 1: its body
      cur = container;
    }
    message_context = false;
  }
  return cur;
}

std::string Message::decoded_body(const Part& p, bool* clean) const {
  std::string out;
  bool ok = decode_body(p.encoding, body_text(p), out);
  if (clean) *clean = ok;
  return out;
}

std::string Message::text_body_utf8(const Part& p) const {
  std::string bytes = decoded_body(p);
  std::optional<std::string> cs = p.content_type.param("charset");
  return to_utf8_lenient(cs ? *cs : "us-ascii", bytes);
}

std::string Message::searchable_text(size_t max_bytes) const {
  std::string out;
  for (const Part& p : parts_) {
    if (!p.is_text()) continue;
    if (out.size() >= max_bytes) break;
    if (!out.empty()) out += '\n';
    std::string t = text_body_utf8(p);
    out.append(t, 0, std::min(t.size(), max_bytes - std::min(max_bytes, out.size())));
  }
  return out;
}

std::string to_crlf(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 32 + 2);
  size_t i = 0;
  while (i < s.size()) {
    const void* p = std::memchr(s.data() + i, '\n', s.size() - i);
    if (!p) {
      out.append(s.substr(i));
      break;
    }
    size_t lf = static_cast<size_t>(static_cast<const char*>(p) - s.data());
    out.append(s.substr(i, lf - i));
    if (lf == 0 || s[lf - 1] != '\r') out += '\r';
    out += '\n';
    i = lf + 1;
  }
  return out;
}

uint64_t count_bare_lf(std::string_view s, bool after_cr) {
  uint64_t n = 0;
  size_t i = 0;
  while (i < s.size()) {
    const void* p = std::memchr(s.data() + i, '\n', s.size() - i);
    if (!p) break;
    size_t lf = static_cast<size_t>(static_cast<const char*>(p) - s.data());
    if (lf == 0 ? !after_cr : s[lf - 1] != '\r') ++n;
    i = lf + 1;
  }
  return n;
}

std::string to_lf(std::string_view crlf) {
  std::string out;
  out.reserve(crlf.size());
  const size_t n = crlf.size();
  for (size_t i = 0; i < n; ++i) {
    // The CR of a CRLF goes unless a CR precedes it: to_crlf() restores exactly the
    // CRs this drops (the LF left behind is then bare), and none that it keeps.
    if (crlf[i] == '\r' && i + 1 < n && crlf[i + 1] == '\n' && (i == 0 || crlf[i - 1] != '\r')) continue;
    out += crlf[i];
  }
  return out;
}

}  // namespace tern::common::mime
