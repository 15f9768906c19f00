#include "common/smtp_data.h"

namespace tern::common::smtp {

void DataReader::emit(std::string& out, char c) {
  out += c;
  ++size_;
  unsigned char u = static_cast<unsigned char>(c);
  if (u == 0) nul_ = true;
  if (u >= 0x80) eight_bit_ = true;
  if (c != '\r' && c != '\n') ++line_len_;
}

void DataReader::line_end() {
  if (line_len_ > longest_line_) longest_line_ = line_len_;
  line_len_ = 0;
}

DataReader::Feed DataReader::feed(std::string_view in, std::string& out) {
  Feed f;
  size_t i = 0;
  for (; i < in.size() && state_ != State::kDone; ++i) {
    const char c = in[i];
    switch (state_) {
      case State::kLineStart:
        if (c == '.') {
          state_ = State::kDot;
        } else if (c == '\r') {
          state_ = State::kCr;
        } else if (c == '\n') {
          // A bare LF is not a line end: the next byte is not at a line start.
          bare_lf_ = true;
          emit(out, c);
          state_ = State::kInLine;
        } else {
          emit(out, c);
          state_ = State::kInLine;
        }
        break;
      case State::kDot:
        if (c == '\r') {
          state_ = State::kDotCr;
        } else {
          // The stuffing dot is dropped; c is the line's first real byte.
          if (c == '\n') bare_lf_ = true;
          emit(out, c);
          state_ = State::kInLine;
        }
        break;
      case State::kDotCr:
        if (c == '\n') {
          line_end();
          state_ = State::kDone;
        } else {
          // ".\r" then not LF: the dot was stuffing, the CR is bare.
          bare_cr_ = true;
          emit(out, '\r');
          if (c == '\r') {
            state_ = State::kCr;
          } else {
            if (c == '\n') bare_lf_ = true;
            emit(out, c);
            state_ = State::kInLine;
          }
        }
        break;
      case State::kInLine:
        if (c == '\r') {
          state_ = State::kCr;
        } else {
          if (c == '\n') bare_lf_ = true;
          emit(out, c);
        }
        break;
      case State::kCr:
        if (c == '\n') {
          emit(out, '\r');
          emit(out, '\n');
          line_end();
          state_ = State::kLineStart;
        } else if (c == '\r') {
          bare_cr_ = true;  // the first CR was bare; the second may still start a CRLF
          emit(out, '\r');
        } else {
          bare_cr_ = true;
          emit(out, '\r');
          emit(out, c);
          state_ = State::kInLine;
        }
        break;
      case State::kDone:
        break;
    }
  }
  f.consumed = i;
  f.done = state_ == State::kDone;
  return f;
}

std::string_view BdatReader::take(std::string_view& in) {
  size_t n = in.size() < remaining_ ? in.size() : static_cast<size_t>(remaining_);
  std::string_view out = in.substr(0, n);
  in.remove_prefix(n);
  remaining_ -= n;
  return out;
}

void LineEndings::feed(std::string_view in) {
  for (char c : in) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (c == '\n') continue;
      bare_cr_ = true;
    }
    if (c == '\r') {
      pending_cr_ = true;
    } else if (c == '\n') {
      bare_lf_ = true;
    }
  }
}

void LineEndings::finish() {
  if (pending_cr_) bare_cr_ = true;
  pending_cr_ = false;
}

void LineEndNormalizer::feed(std::string_view in, std::string& out) {
  for (char c : in) {
    if (pending_cr_) {
      pending_cr_ = false;
      out += "\r\n";
      if (c == '\n') continue;  // the CR's own LF: one CRLF
    }
    if (c == '\r') {
      pending_cr_ = true;
    } else if (c == '\n') {
      out += "\r\n";
    } else {
      out += c;
    }
  }
}

void LineEndNormalizer::finish(std::string& out) {
  if (pending_cr_) out += "\r\n";
  pending_cr_ = false;
}

std::string normalize_line_ends(std::string_view in) {
  std::string out;
  out.reserve(in.size() + in.size() / 32);
  LineEndNormalizer n;
  n.feed(in, out);
  n.finish(out);
  return out;
}

std::string dot_stuff(std::string_view body) {
  std::string out;
  out.reserve(body.size() + body.size() / 64 + 8);
  bool line_start = true;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = c == '\n' && i > 0 && body[i - 1] == '\r';
  }
  if (!body.empty() && !(body.size() >= 2 && body.substr(body.size() - 2) == "\r\n")) out += "\r\n";
  out += ".\r\n";
  return out;
}

}  // namespace tern::common::smtp
