#include "common/mime_decode.h"

namespace tern::common::mime {

namespace {

int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

}  // namespace

bool decode_base64(std::string_view in, std::string& out) {
  bool clean = true;
  uint32_t acc = 0;
  int n = 0;        // sextets in acc
  bool padded = false;  // inside the padding of a group
  out.reserve(out.size() + in.size() * 3 / 4);
  for (char ch : in) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\r' || c == '\n' || c == ' ' || c == '\t') continue;
    if (c == '=') {
      // Padding completes the group: emit what the sextets hold.
      if (n == 2) {
        out += static_cast<char>(acc >> 4);
      } else if (n == 3) {
        out += static_cast<char>(acc >> 10);
        out += static_cast<char>((acc >> 2) & 0xFF);
      } else if (n == 1 || (n == 0 && !padded)) {
        clean = false;
      }
      acc = 0;
      n = 0;
      padded = true;
      continue;
    }
    int v = b64_value(c);
    if (v < 0) {
      clean = false;
      continue;
    }
    padded = false;  // data after padding: a concatenated second block
    acc = (acc << 6) | static_cast<uint32_t>(v);
    if (++n == 4) {
      out += static_cast<char>(acc >> 16);
      out += static_cast<char>((acc >> 8) & 0xFF);
      out += static_cast<char>(acc & 0xFF);
      acc = 0;
      n = 0;
    }
  }
  // An unpadded tail: decode its whole bytes (many mailers omit padding).
  if (n == 2) {
    out += static_cast<char>(acc >> 4);
    clean = false;
  } else if (n == 3) {
    out += static_cast<char>(acc >> 10);
    out += static_cast<char>((acc >> 2) & 0xFF);
    clean = false;
  } else if (n == 1) {
    clean = false;
  }
  return clean;
}

bool decode_quoted_printable(std::string_view in, std::string& out, bool q_encoding) {
  bool clean = true;
  out.reserve(out.size() + in.size());
  size_t i = 0;
  size_t n = in.size();
  while (i < n) {
    // One line at a time, so trailing blanks can be dropped (RFC 2045 6.7 rule 3).
    size_t lf = q_encoding ? std::string_view::npos : in.find('\n', i);
    size_t line_end = lf == std::string_view::npos ? n : lf;
    size_t content_end = line_end;
    if (!q_encoding && content_end > i && in[content_end - 1] == '\r') --content_end;
    size_t text_end = content_end;
    if (!q_encoding) {
      while (text_end > i && is_blank(in[text_end - 1])) --text_end;
    }
    bool soft_break = false;
    for (size_t k = i; k < text_end; ++k) {
      char c = in[k];
      if (c == '=') {
        if (k + 1 == text_end) {  // "=" at the end of the line: soft line break
          soft_break = true;
          break;
        }
        int h = k + 1 < text_end ? hex_value(in[k + 1]) : -1;
        int l = k + 2 < text_end ? hex_value(in[k + 2]) : -1;
        if (h >= 0 && l >= 0) {
          out += static_cast<char>(h * 16 + l);
          k += 2;
        } else {
          out += c;  // keep the broken sequence as written
          clean = false;
        }
        continue;
      }
      if (q_encoding && c == '_') {
        out += ' ';
        continue;
      }
      out += c;
    }
    if (lf == std::string_view::npos) break;
    if (!soft_break) out += in.substr(content_end, line_end + 1 - content_end);  // the line end
    i = lf + 1;
  }
  return clean;
}

bool known_encoding(std::string_view e) {
  return e.empty() || e == "7bit" || e == "8bit" || e == "binary" || e == "base64" || e == "quoted-printable";
}

bool decode_body(std::string_view encoding, std::string_view in, std::string& out) {
  if (encoding == "base64") return decode_base64(in, out);
  if (encoding == "quoted-printable") return decode_quoted_printable(in, out);
  out.append(in);
  return known_encoding(encoding);
}

}  // namespace tern::common::mime
