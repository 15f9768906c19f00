#include "common/smtp_reply.h"

#include <cctype>

namespace tern::common::smtp {
namespace {

std::string clean(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

bool valid_enhanced(std::string_view s, int code) {
  // class "." subject "." detail; class 2/4/5, subject and detail 1-3 digits.
  size_t d1 = s.find('.');
  if (d1 != 1) return false;
  size_t d2 = s.find('.', d1 + 1);
  if (d2 == std::string_view::npos) return false;
  std::string_view subject = s.substr(d1 + 1, d2 - d1 - 1), detail = s.substr(d2 + 1);
  if (!all_digits(subject) || !all_digits(detail) || subject.size() > 3 || detail.size() > 3) return false;
  if (s[0] != '2' && s[0] != '4' && s[0] != '5') return false;
  return code == 0 || s[0] - '0' == code / 100;
}

std::string Reply::format() const {
  std::string out;
  const std::string code_s = std::to_string(code);
  const size_t n = lines.empty() ? 1 : lines.size();
  for (size_t i = 0; i < n; ++i) {
    out += code_s;
    out += i + 1 < n ? '-' : ' ';
    if (!enhanced.empty()) {
      out += enhanced;
      out += ' ';
    }
    if (!lines.empty()) out += clean(lines[i]);
    out += "\r\n";
  }
  return out;
}

std::string Reply::summary() const {
  std::string out = std::to_string(code);
  if (!enhanced.empty()) out += " " + enhanced;
  for (const std::string& l : lines) out += " " + clean(l);
  return out;
}

ReplyParser::Status ReplyParser::feed(std::string_view line) {
  auto fail = [&](std::string why) {
    error_ = std::move(why);
    cur_ = Reply();
    in_reply_ = false;
    return Status::kError;
  };
  // "ddd" then SP, "-" or end of line (RFC 5321 4.2: a bare code is allowed).
  if (line.size() < 3 || !all_digits(line.substr(0, 3))) return fail("reply does not start with a 3-digit code");
  int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (code < 200 || code > 599) return fail("reply code " + std::string(line.substr(0, 3)) + " out of range");
  bool last = true;
  std::string_view text;
  if (line.size() > 3) {
    if (line[3] == '-') {
      last = false;
    } else if (line[3] != ' ') {
      return fail("no space or '-' after the reply code");
    }
    text = line.substr(4);
  }
  if (in_reply_ && code != cur_.code) return fail("reply code changed inside a multi-line reply");
  std::string enh;
  if (enhanced_) {
    size_t sp = text.find(' ');
    std::string_view cand = text.substr(0, sp);
    if (valid_enhanced(cand, code)) {
      enh = std::string(cand);
      text = sp == std::string_view::npos ? std::string_view() : text.substr(sp + 1);
    }
  }
  if (!in_reply_) {
    cur_ = Reply();
    cur_.code = code;
    cur_.enhanced = enh;
    in_reply_ = true;
  } else if (cur_.enhanced.empty()) {
    cur_.enhanced = enh;
  }
  if (cur_.lines.size() >= kMaxLines) return fail("multi-line reply longer than " + std::to_string(kMaxLines) + " lines");
  cur_.lines.emplace_back(text);
  if (!last) return Status::kNeedMore;
  in_reply_ = false;
  return Status::kComplete;
}

Reply ReplyParser::take() {
  Reply r = std::move(cur_);
  cur_ = Reply();
  return r;
}

}  // namespace tern::common::smtp
