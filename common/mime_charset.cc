#include "common/mime_charset.h"

#include <iconv.h>

#include <cerrno>
#include <cstring>

namespace tern::common::mime {

namespace {

constexpr uint32_t kReplacement = 0xFFFD;

// Length of the well-formed UTF-8 sequence at s[i], or 0 when it is ill-formed
// (RFC 3629 table: exact second-byte ranges exclude overlongs and surrogates).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t left = s.size() - i;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    return (left >= 2 && (b(i + 1) & 0xC0) == 0x80) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3) return 0;
    unsigned char c1 = b(i + 1);
    if (c == 0xE0 && (c1 < 0xA0 || c1 > 0xBF)) return 0;
    if (c == 0xED && (c1 < 0x80 || c1 > 0x9F)) return 0;
    if ((c1 & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4) return 0;
    unsigned char c1 = b(i + 1);
    if (c == 0xF0 && (c1 < 0x90 || c1 > 0xBF)) return 0;
    if (c == 0xF4 && (c1 < 0x80 || c1 > 0x8F)) return 0;
    if ((c1 & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80 || (b(i + 3) & 0xC0) != 0x80) return 0;
    return 4;
  }
  return 0;
}

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Windows-1252 bytes 0x80..0x9F; 0 marks the five undefined ones.
constexpr uint16_t kCp1252High[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

std::string cp1252_to_utf8(std::string_view data) {
  std::string out;
  out.reserve(data.size() + data.size() / 4);
  for (char ch : data) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out += ch;
    } else if (c < 0xA0) {
      uint16_t cp = kCp1252High[c - 0x80];
      append_utf8(out, cp ? cp : c);  // undefined: the C1 control, as WHATWG does
    } else {
      append_utf8(out, c);
    }
  }
  return out;
}

// Labels mail uses that iconv spells differently or that we handle without iconv.
struct Alias {
  const char* label;
  const char* name;
};
constexpr Alias kAliases[] = {
    {"utf8", "utf-8"},           {"us-ascii", "us-ascii"},  {"ascii", "us-ascii"},
    {"ansi_x3.4-1968", "us-ascii"}, {"latin1", "iso-8859-1"}, {"latin-1", "iso-8859-1"},
    {"iso8859-1", "iso-8859-1"}, {"iso_8859-1", "iso-8859-1"}, {"l1", "iso-8859-1"},
    {"cp1252", "windows-1252"},  {"x-cp1252", "windows-1252"}, {"unicode-1-1-utf-7", "utf-7"},
    {"x-unknown", "us-ascii"},   {"unknown-8bit", "us-ascii"}, {"x-user-defined", "us-ascii"},
    {"default", "us-ascii"},     {"ks_c_5601-1987", "cp949"}, {"gb2312", "gbk"},
    {"x-gbk", "gbk"},            {"x-sjis", "shift_jis"},   {"shift-jis", "shift_jis"},
};

}  // namespace

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacement;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint32_t next_code_point(std::string_view s, size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  size_t n = utf8_sequence_length(s, i);
  if (n == 0) {
    ++i;
    return kReplacement;
  }
  uint32_t cp;
  if (n == 2) {
    cp = c & 0x1F;
  } else if (n == 3) {
    cp = c & 0x0F;
  } else {
    cp = c & 0x07;
  }
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += s[i++];
      continue;
    }
    size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      append_utf8(out, kReplacement);
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::optional<std::string> normalize_charset_name(std::string_view label) {
  // Trim the blanks and quotes that sloppy mailers leave around the label.
  while (!label.empty() && (label.front() == ' ' || label.front() == '\t' || label.front() == '"')) label.remove_prefix(1);
  while (!label.empty() && (label.back() == ' ' || label.back() == '\t' || label.back() == '"')) label.remove_suffix(1);
  // 64 bytes: the longest IANA charset name is 45; anything longer is junk, and the
  // character set rules out iconv's "//" option suffixes and path names.
  if (label.empty() || label.size() > 64) return std::nullopt;
  std::string name;
  for (char c : label) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':' || c == '+' || c == '(' || c == ')';
    if (!ok) return std::nullopt;
    name += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  for (const Alias& a : kAliases) {
    if (name == a.label) return std::string(a.name);
  }
  return name;
}

namespace {

// Converts with iconv; nullopt when iconv does not know the charset.
std::optional<std::string> iconv_to_utf8(const std::string& charset, std::string_view data) {
  iconv_t cd = iconv_open("UTF-8", charset.c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return std::nullopt;
  std::string out;
  out.reserve(data.size() * 2 + 16);
  char buf[4096];
  char* in = const_cast<char*>(data.data());
  size_t in_left = data.size();
  bool flushed = false;
  while (!flushed) {
    char* outp = buf;
    size_t out_left = sizeof(buf);
    size_t r;
    if (in_left > 0) {
      r = iconv(cd, &in, &in_left, &outp, &out_left);
    } else {
      r = iconv(cd, nullptr, nullptr, &outp, &out_left);  // emit any shift-state reset
      flushed = true;
    }
    int err = errno;
    out.append(buf, static_cast<size_t>(outp - buf));
    if (r != static_cast<size_t>(-1)) continue;
    if (err == E2BIG) {
      flushed = false;
      continue;
    }
    if (flushed) break;  // the reset itself failed: nothing more to emit
    if (err == EILSEQ) {
      append_utf8(out, kReplacement);
      ++in;
      --in_left;
      iconv(cd, nullptr, nullptr, nullptr, nullptr);  // resynchronise stateful charsets
      flushed = false;
      continue;
    }
    // EINVAL: an incomplete sequence at the end of the input.
    append_utf8(out, kReplacement);
    in_left = 0;
    flushed = false;
  }
  iconv_close(cd);
  // iconv's UTF-8 output is well-formed; sanitise anyway so the promise holds even
  // for converters that pass bytes through.
  if (!is_valid_utf8(out)) return sanitize_utf8(out);
  return out;
}

}  // namespace

std::optional<std::string> to_utf8(std::string_view charset, std::string_view data) {
  std::optional<std::string> name = normalize_charset_name(charset);
  if (!name) return std::nullopt;
  if (*name == "utf-8" || *name == "us-ascii") {
    if (is_ascii(data) || is_valid_utf8(data)) return std::string(data);
    if (*name == "us-ascii") return cp1252_to_utf8(data);
    return sanitize_utf8(data);
  }
  if (*name == "iso-8859-1" || *name == "windows-1252") {
    return cp1252_to_utf8(data);
  }
  return iconv_to_utf8(*name, data);
}

bool charset_supported(std::string_view charset) {
  std::optional<std::string> name = normalize_charset_name(charset);
  if (!name) return false;
  if (*name == "utf-8" || *name == "us-ascii" || *name == "iso-8859-1" || *name == "windows-1252") return true;
  iconv_t cd = iconv_open("UTF-8", name->c_str());
  if (cd == reinterpret_cast<iconv_t>(-1)) return false;
  iconv_close(cd);
  return true;
}

std::string to_utf8_lenient(std::string_view charset, std::string_view data) {
  std::optional<std::string> r = to_utf8(charset, data);
  if (r) return std::move(*r);
  return sanitize_utf8(data);
}

namespace {

uint32_t fold_code_point(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) return cp + 32;  // Latin-1 capitals
  if (cp >= 0x100 && cp <= 0x17F) {
    // Latin Extended-A pairs capital/small, even/odd, except in 0x139..0x148 and
    // 0x179..0x17E where the capital is odd; 0x130, 0x131, 0x138, 0x149, 0x17F stand alone.
    if (cp == 0x130) return 'i';
    if (cp == 0x131 || cp == 0x138 || cp == 0x149 || cp == 0x17F) return cp;
    if (cp == 0x178) return 0xFF;
    if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E)) return (cp & 1) ? cp + 1 : cp;
    return (cp & 1) ? cp : cp + 1;
  }
  if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) return cp + 32;  // Greek capitals
  if (cp == 0x3C2) return 0x3C3;                                   // final sigma
  if (cp >= 0x410 && cp <= 0x42F) return cp + 32;                  // Cyrillic А..Я
  if (cp >= 0x400 && cp <= 0x40F) return cp + 80;                  // Ѐ..Џ
  return cp;
}

}  // namespace

std::string fold_case(std::string_view utf8) {
  std::string out;
  out.reserve(utf8.size());
  for (size_t i = 0; i < utf8.size();) {
    auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : static_cast<char>(c);
      ++i;
      continue;
    }
    append_utf8(out, fold_code_point(next_code_point(utf8, i)));
  }
  return out;
}

}  // namespace tern::common::mime
