#include "mra/imap_reader.h"

#include "common/text.h"

namespace tern::mra::imap {

namespace {

bool is_tag_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u <= 0x20 || u >= 0x7f) return false;
  switch (c) {
    case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case '+':
      return false;
    default:
      return true;
  }
}

struct LiteralMark {
  bool found = false;
  bool valid = false;    // digits parsed and within 64 bits
  bool sync = true;      // {n} rather than {n+}
  bool binary = false;   // ~{n}
  uint64_t size = 0;
  size_t brace = 0;      // offset of '{' or '~' in the line
};

// Looks for a literal announcement at the end of a line, outside quoted strings (a
// quoted string cannot span lines, and a literal's data is never scanned, so the
// quoting state starts fresh on each line).
LiteralMark find_literal(std::string_view line) {
  LiteralMark m;
  if (line.empty() || line.back() != '}') return m;
  bool in_quote = false;
  size_t open = std::string_view::npos;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_quote) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_quote = false;
      }
      continue;
    }
    if (c == '"') {
      in_quote = true;
    } else if (c == '{') {
      open = i;
    }
  }
  if (in_quote || open == std::string_view::npos) return m;
  std::string_view inner = line.substr(open + 1, line.size() - open - 2);
  if (inner.find('}') != std::string_view::npos) return m;
  m.found = true;
  m.brace = open;
  if (open > 0 && line[open - 1] == '~') {
    m.binary = true;
    m.brace = open - 1;
  }
  if (!inner.empty() && inner.back() == '+') {
    m.sync = false;
    inner.remove_suffix(1);
  }
  if (inner.empty() || inner.size() > 19) return m;  // > 19 digits overflows: "too big"
  uint64_t n = 0;
  for (char c : inner) {
    if (c < '0' || c > '9') return m;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  m.valid = true;
  m.size = n;
  return m;
}

// True when the command (after the tag, and after "UID") is APPEND.
bool is_append_command(std::string_view line) {
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return false;
  std::string_view rest = line.substr(sp + 1);
  return tern::common::istarts_with(rest, "APPEND ");
}

}  // namespace

std::string_view command_tag(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && is_tag_char(line[i])) ++i;
  if (i == 0) return {};
  if (i < line.size() && line[i] != ' ') return {};
  return line.substr(0, i);
}

ImapReader::ImapReader(const ReaderLimits& limits) : lim_(limits), lines_(limits.max_line) {}

ImapReader::~ImapReader() { reset_command(); }

void ImapReader::set_limits(const ReaderLimits& limits) {
  if (lim_.budget != limits.budget && reserved_ > 0) {
    // A reservation goes back to the budget it came from.
    if (lim_.budget) lim_.budget->release(reserved_);
    reserved_ = 0;
  }
  lim_ = limits;
  lines_.set_max_line(limits.max_line);
}

void ImapReader::reset_command() {
  if (reserved_ > 0 && lim_.budget) lim_.budget->release(reserved_);
  reserved_ = 0;
  discard_ = false;
  spooling_ = false;
  spool_pending_ = false;
  spool_data_ = {};
  discard_refusal_.clear();
  cmd_.text.clear();
  cmd_.literals.clear();
  in_literal_ = false;
  literal_left_ = 0;
  is_append_ = false;
  delivered_ = false;
}

void ImapReader::clear() {
  lines_.clear();
  reset_command();
}

ImapReader::Status ImapReader::next() {
  if (delivered_) reset_command();
  if (spool_pending_) {
    // The session must answer kSpoolStart first; it is our caller's bug.
    error_ = "Internal error";
    reset_command();
    return Status::kFatal;
  }
  for (;;) {
    if (in_literal_) {
      std::string_view v = lines_.take_raw(literal_left_ > SIZE_MAX ? SIZE_MAX : static_cast<size_t>(literal_left_));
      if (spooling_ && !discard_) {
        if (v.empty()) return Status::kNeedMore;
        literal_left_ -= v.size();
        if (literal_left_ == 0) {
          in_literal_ = false;
          spooling_ = false;
        }
        spool_data_ = v;
        return Status::kSpoolData;
      }
      if (!discard_) cmd_.text.append(v);
      literal_left_ -= v.size();
      if (literal_left_ > 0) return Status::kNeedMore;
      in_literal_ = false;
      continue;
    }
    tern::common::LineReader::Line line;
    tern::common::LineReader::Status st = lines_.next(line);
    if (st == tern::common::LineReader::Status::kNeedMore) return Status::kNeedMore;
    if (st == tern::common::LineReader::Status::kTooLong) {
      // Fatal rather than BAD: a long line may end in a non-synchronising literal
      // whose data would then be read as commands.
      error_ = "Line too long";
      reset_command();
      return Status::kFatal;
    }
    Status s = on_line(line.text);
    if (s != Status::kNeedMore) return s;
  }
}

ImapReader::Status ImapReader::on_line(std::string_view line) {
  bool first = cmd_.text.empty() && cmd_.literals.empty();
  if (first && line.empty()) return Status::kNeedMore;  // stray blank lines are ignored
  if (first) is_append_ = is_append_command(line);
  uint64_t budget = lim_.max_command + (is_append_ ? lim_.max_append : 0);
  if (cmd_.text.size() + line.size() > budget) {
    error_ = "Command too long";
    reset_command();
    return Status::kFatal;
  }
  LiteralMark m = find_literal(line);
  size_t line_offset = cmd_.text.size();
  cmd_.text.append(line);
  if (!m.found) {
    if (discard_) {
      refusal_ = discard_refusal_.empty() ? limit_refusal() : discard_refusal_;
      reset_command();
      return Status::kLiteralRefused;
    }
    delivered_ = true;
    return Status::kCommand;
  }
  uint64_t limit = is_append_ ? std::max<uint64_t>(lim_.max_append, lim_.max_literal) : lim_.max_literal;
  bool fits = m.valid && m.size <= limit && cmd_.text.size() + m.size <= budget;
  if (!fits) {
    std::string tag(command_tag(cmd_.text));
    bool append = is_append_;
    reset_command();
    if (!m.sync) {
      // Its bytes are coming; skipping up to a gigabyte is not worth the risk.
      error_ = "[TOOBIG] Literal too big";
      return Status::kFatal;
    }
    refusal_ = (tag.empty() ? std::string("*") : tag) +
               (append ? " NO [TOOBIG] Message too big" : " BAD [TOOBIG] Literal too big");
    return Status::kLiteralRefused;
  }
  if (!m.sync && !lim_.literal_plus) {
    error_ = "Non-synchronizing literals are not supported";
    reset_command();
    return Status::kFatal;
  }
  if (is_append_ && !discard_ && m.size > lim_.spool_above) {
    // Not held, so not counted against the budget either.
    cmd_.literals.push_back(LiteralSpan{line_offset + m.brace, cmd_.text.size(), static_cast<size_t>(m.size),
                                        m.binary, true});
    in_literal_ = true;
    spooling_ = true;
    spool_pending_ = true;
    spool_sync_ = m.sync;
    literal_left_ = m.size;
    return Status::kSpoolStart;
  }
  if (is_append_ && lim_.budget && !discard_) {
    // Before "+": the client sends nothing a refusal would have to skip.
    if (lim_.budget->reserve(m.size)) {
      reserved_ += m.size;
    } else if (m.sync) {
      refusal_ = limit_refusal();
      reset_command();
      return Status::kLiteralRefused;
    } else {
      discard_ = true;  // read it and drop it, then refuse the whole command
    }
  }
  if (discard_ && m.sync) {
    refusal_ = limit_refusal();
    reset_command();
    return Status::kLiteralRefused;
  }
  cmd_.literals.push_back(
      LiteralSpan{line_offset + m.brace, cmd_.text.size(), static_cast<size_t>(m.size), m.binary});
  in_literal_ = true;
  literal_left_ = m.size;
  if (m.sync) return Status::kContinue;
  return Status::kNeedMore;
}

void ImapReader::refuse_spool(std::string refusal) {
  spool_pending_ = false;
  if (spool_sync_) {
    // The client sends nothing until "+", and gets the tagged NO instead.
    reset_command();
    return;
  }
  discard_ = true;
  discard_refusal_ = std::move(refusal);
}

std::string ImapReader::limit_refusal() const {
  std::string_view tag = command_tag(cmd_.text);
  return (tag.empty() ? std::string("*") : std::string(tag)) +
         " NO [LIMIT] Too many messages being uploaded at once, try again later.";
}

ImapReader::Status ImapReader::next_line(std::string& out) {
  tern::common::LineReader::Line line;
  tern::common::LineReader::Status st = lines_.next(line);
  if (st == tern::common::LineReader::Status::kNeedMore) return Status::kNeedMore;
  if (st == tern::common::LineReader::Status::kTooLong) {
    error_ = "Line too long";
    return Status::kFatal;
  }
  out.assign(line.text);
  return Status::kCommand;
}

}  // namespace tern::mra::imap
