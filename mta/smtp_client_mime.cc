#include "mta/smtp_client_mime.h"

#include <algorithm>

#include "common/mime.h"
#include "common/text.h"

namespace tern::mta {

using common::Result;
namespace mime = common::mime;

bool has_8bit(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

std::string_view message_headers(std::string_view m) {
  size_t p = m.find("\r\n\r\n");
  size_t q = m.find("\n\n");
  if (p == std::string_view::npos && q == std::string_view::npos) return m;
  if (p != std::string_view::npos && (q == std::string_view::npos || p + 2 <= q)) return m.substr(0, p + 4);
  return m.substr(0, q + 2);
}

bool needs_smtputf8(std::string_view sender, const std::vector<std::string>& rcpts, std::string_view headers) {
  if (has_8bit(sender) || has_8bit(headers)) return true;
  return std::any_of(rcpts.begin(), rcpts.end(), [](const std::string& r) { return has_8bit(r); });
}

std::string qp_encode(std::string_view body) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  out.reserve(body.size() + body.size() / 8);
  size_t pos = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    const bool has_end = nl != std::string_view::npos;
    std::string_view line = body.substr(pos, has_end ? nl - pos : std::string_view::npos);
    if (has_end && !line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = has_end ? nl + 1 : body.size();
    size_t col = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      const unsigned char c = static_cast<unsigned char>(line[i]);
      const bool last = i + 1 == line.size();
      std::string tok;
      // RFC 2045 6.7 rules 2 and 3: printable ASCII but '=' as it is; a blank only
      // when it does not end the line (trailing blanks may be stripped in transit).
      if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
        tok.assign(1, static_cast<char>(c));
      } else {
        tok = {'=', kHex[c >> 4], kHex[c & 15]};
      }
      // Rule 5: encoded lines are at most 76 characters, the soft break's '=' included.
      if (col + tok.size() > 75) {
        out += "=\r\n";
        col = 0;
      }
      out += tok;
      col += tok.size();
    }
    if (has_end) out += "\r\n";
  }
  return out;
}

namespace {

std::string base64_lines(std::string_view body) {
  std::string b = common::base64_encode(body);
  std::string out;
  for (size_t i = 0; i < b.size(); i += 76) out += b.substr(i, 76) + "\r\n";
  return out;
}

struct Edit {
  size_t begin, end;
  std::string text;
};

class Downgrader {
 public:
  explicit Downgrader(const mime::Message& m) : m_(m), raw_(m.raw()) {}

  Result<std::string> run() {
    const mime::Part& root = m_.root();
    // A leaf at the top with 8-bit text and no MIME header at all: it becomes MIME
    // so the new transfer encoding means something.
    if (visit(root) && !root.header.first("MIME-Version")) {
      insert_header(root, "MIME-Version: 1.0");
      if (!root.header.first("Content-Type")) insert_header(root, "Content-Type: text/plain; charset=unknown-8bit");
    }
    std::sort(edits_.begin(), edits_.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
    std::string out;
    out.reserve(raw_.size() + raw_.size() / 4);
    size_t at = 0;
    for (const Edit& e : edits_) {
      out.append(raw_, at, e.begin - at);
      out += e.text;
      at = e.end;
    }
    out.append(raw_, at, std::string::npos);
    if (has_8bit(out)) {
      return common::make_error(common::ErrorKind::kPerm,
                                "message has 8-bit bytes that cannot be converted (in a header or between MIME parts)");
    }
    return out;
  }

 private:
  size_t offset(std::string_view v) const { return static_cast<size_t>(v.data() - raw_.data()); }

  // Where the header section's blank line starts: new fields go just before it.
  size_t header_end(const mime::Part& p) const {
    std::string_view h = m_.header_text(p);
    size_t blank = 0;
    if (p.header.has_blank) {
      auto ends = [&](std::string_view t) { return h.size() >= t.size() && h.substr(h.size() - t.size()) == t; };
      if (h == "\r\n" || ends("\n\r\n")) {
        blank = 2;
      } else if (h == "\n" || ends("\n\n")) {
        blank = 1;
      }
    }
    return offset(h) + h.size() - blank;
  }

  void insert_header(const mime::Part& p, const std::string& field) {
    size_t at = header_end(p);
    // A header section without a line end before the insertion point needs one.
    bool need_crlf_before = at > 0 && raw_[at - 1] != '\n';
    edits_.push_back({at, at, (need_crlf_before ? "\r\n" : "") + field + "\r\n"});
  }

  void set_encoding(const mime::Part& p, const char* cte) {
    for (const mime::HeaderField& f : p.header.fields) {
      if (common::iequals(f.name, "Content-Transfer-Encoding")) {
        edits_.push_back({offset(f.name), offset(f.value) + f.value.size(), std::string("Content-Transfer-Encoding: ") + cte});
        return;
      }
    }
    insert_header(p, std::string("Content-Transfer-Encoding: ") + cte);
  }

  // Returns whether anything in the part was converted.
  bool visit(const mime::Part& p) {
    switch (p.kind) {
      case mime::Part::Kind::kLeaf: {
        std::string_view body = m_.body_text(p);
        if (!has_8bit(body)) return false;
        if (p.encoding == "quoted-printable" || p.encoding == "base64") return false;  // left for the final check
        const bool binary = p.encoding == "binary";
        edits_.push_back({p.body_begin, p.body_end, binary ? base64_lines(body) : qp_encode(body)});
        set_encoding(p, binary ? "base64" : "quoted-printable");
        return true;
      }
      case mime::Part::Kind::kMultipart:
      case mime::Part::Kind::kMessage: {
        bool changed = false;
        for (uint32_t c : p.children) changed = visit(m_.part(c)) || changed;
        // RFC 2045 6.4: a composite's encoding only says what its parts hold; once
        // they are 7-bit, so is it.
        if (changed && (p.encoding == "8bit" || p.encoding == "binary")) set_encoding(p, "7bit");
        return changed;
      }
    }
    return false;
  }

  const mime::Message& m_;
  const std::string& raw_;
  std::vector<Edit> edits_;
};

}  // namespace

Result<std::string> downgrade_8bit(std::string_view message) {
  if (!has_8bit(message)) return std::string(message);
  if (has_8bit(message_headers(message))) {
    return common::make_error(common::ErrorKind::kPerm, "message has 8-bit bytes in its header");
  }
  mime::Message m = mime::Message::parse(std::string(message));
  return Downgrader(m).run();
}

}  // namespace tern::mta
