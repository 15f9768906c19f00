#include "mta/cleanup.h"

#include "common/text.h"

namespace tern::mta {

std::string rfc5322_date(time_t t) {
  struct tm tm;
  ::localtime_r(&t, &tm);
  char buf[64];
  // %a and %b are locale-dependent; daemons run in the C locale, but be explicit.
  static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  long off = tm.tm_gmtoff / 60;
  char sign = off < 0 ? '-' : '+';
  if (off < 0) off = -off;
  std::snprintf(buf, sizeof buf, "%s, %d %s %04d %02d:%02d:%02d %c%02ld%02ld", kDays[tm.tm_wday], tm.tm_mday,
                kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60, off % 60);
  return buf;
}

namespace {

// "Name:" at the start of a line: printable ASCII except ':' and space (RFC 5322 2.2).
bool header_name(std::string_view line, std::string_view& name) {
  size_t i = 0;
  while (i < line.size() && line[i] > 32 && line[i] < 127 && line[i] != ':') ++i;
  // Postfix also accepts "Name :" (obsolete syntax, RFC 5322 4.5).
  size_t j = i;
  while (j < line.size() && (line[j] == ' ' || line[j] == '\t')) ++j;
  if (i == 0 || j >= line.size() || line[j] != ':') return false;
  name = line.substr(0, i);
  return true;
}

}  // namespace

void HeaderFilter::scan_header_line(std::string_view line) {
  std::string_view name;
  if (!header_name(line, name)) return;
  cur_name_ = common::to_lower(name);
  dropping_ = false;
  for (const std::string& d : opt_.drop_headers) dropping_ = dropping_ || d == cur_name_;
  std::string_view value = common::trim(line.substr(line.find(':') + 1));
  if (cur_name_ == "message-id") {
    had_message_id_ = true;
    if (found_message_id_.empty()) found_message_id_ = std::string(value);
  } else if (cur_name_ == "date") {
    had_date_ = true;
  } else if (cur_name_ == "from") {
    had_from_ = true;
  }
}

void HeaderFilter::end_headers(std::string& out, std::string_view terminator) {
  in_headers_ = false;
  out += hdr_;
  std::string add;
  if (!opt_.from_header.empty() && !had_from_) add += "From: " + opt_.from_header + "\r\n";
  if (opt_.add_date && !had_date_) add += "Date: " + rfc5322_date(opt_.now) + "\r\n";
  if (opt_.add_message_id && !had_message_id_) {
    add += "Message-Id: " + opt_.message_id + "\r\n";
    found_message_id_ = opt_.message_id;
  }
  added_ += add.size();
  out += add;
  out += terminator;
  hdr_.clear();
  hdr_.shrink_to_fit();
}

// The header section ends at a line that is not a header (no blank line before the
// body, an mbox "From " line, a header section over header_size_limit): as
// Postfix's cleanup does, one blank line is added so that the body stays body for
// every reader (`echo hi | sendmail user` must not put "hi" among the headers).
void HeaderFilter::end_headers_before_body(std::string& out) {
  end_headers(out, "\r\n");
  added_ += 2;
}

void HeaderFilter::feed(std::string_view in, std::string& out) {
  if (!started_) {
    started_ = true;
    out += opt_.prepend;
    added_ += opt_.prepend.size();
  }
  if (!in_headers_) {
    out.append(in.data(), in.size());
    return;
  }
  partial_.append(in.data(), in.size());
  size_t pos = 0;
  while (in_headers_) {
    size_t nl = partial_.find('\n', pos);
    if (nl == std::string::npos) break;
    std::string_view line(partial_.data() + pos, nl + 1 - pos);
    std::string_view text = line.substr(0, line.size() - 1);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.empty()) {
      end_headers(out, line);
      pos = nl + 1;
      break;
    }
    if (hdr_.size() + line.size() > opt_.header_size_limit) {
      // Postfix: what does not fit in header_size_limit is body. Checked before the
      // line is looked at, so the outcome does not depend on how input was split.
      end_headers_before_body(out);
      break;
    }
    std::string_view name;
    if (text[0] == ' ' || text[0] == '\t') {
      if (cur_name_.empty()) {  // a continuation with nothing to continue: body starts here
        end_headers_before_body(out);
        break;
      }
      if (cur_name_ == "message-id" && found_message_id_.empty()) found_message_id_ = std::string(common::trim(text));
    } else if (header_name(text, name)) {
      scan_header_line(text);
    } else {
      // Not a header (no blank line before the body, or an mbox "From " line): the
      // header section ends here and this line is body.
      end_headers_before_body(out);
      break;
    }
    if (!dropping_) hdr_.append(line.data(), line.size());
    else removed_ += line.size();
    pos = nl + 1;
  }
  if (!in_headers_) {
    out.append(partial_, pos, std::string::npos);
    partial_.clear();
    partial_.shrink_to_fit();
    return;
  }
  partial_.erase(0, pos);
  // The same test as above on the incomplete line, so that a line over the limit
  // is not held whole. A lone CR may still become the blank line that ends the
  // headers, which the loop takes before the limit: wait for the byte after it,
  // or the outcome (one blank line added or not) would depend on the split.
  if (hdr_.size() + partial_.size() > opt_.header_size_limit && partial_ != "\r") {
    end_headers_before_body(out);
    out += partial_;
    partial_.clear();
    partial_.shrink_to_fit();
  }
}

void HeaderFilter::finish(std::string& out) {
  if (!started_) feed("", out);
  if (!in_headers_) return;
  // The message ended inside its headers (a message with no body), possibly
  // without a final line end.
  if (!partial_.empty()) {
    std::string_view name;
    if (partial_[0] != ' ' && partial_[0] != '\t' && header_name(partial_, name)) {
      scan_header_line(partial_);
      if (!dropping_) {
        hdr_ += partial_;
        hdr_ += "\r\n";  // a header line must end; the filter adds the CRLF
        added_ += 2;
      } else {
        removed_ += partial_.size();
      }
    } else if ((partial_[0] == ' ' || partial_[0] == '\t') && !cur_name_.empty()) {
      if (!dropping_) {
        hdr_ += partial_;
        hdr_ += "\r\n";
        added_ += 2;
      } else {
        removed_ += partial_.size();
      }
    } else {
      // Not a header: body text after the header section.
      std::string rest = std::move(partial_);
      partial_.clear();
      end_headers_before_body(out);
      out += rest;
      return;
    }
    partial_.clear();
  }
  end_headers(out, "");
}

}  // namespace tern::mta
