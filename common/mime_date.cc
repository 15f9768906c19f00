#include "common/mime_date.h"

#include <string>
#include <vector>

namespace tern::common::mime {

namespace {

constexpr const char* kMonths[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr const char* kDays[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};  // from 1970-01-01

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

int to_int(std::string_view s) {
  int v = 0;
  for (char c : s) v = v * 10 + (c - '0');
  return v;
}

bool is_alpha_word(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

// Splits into words at blanks and commas, dropping comments (RFC 5322 CFWS).
std::vector<std::string> date_words(std::string_view raw) {
  std::vector<std::string> words;
  std::string cur;
  int depth = 0;
  auto flush = [&] {
    if (!cur.empty()) words.push_back(std::move(cur));
    cur.clear();
  };
  for (char c : raw) {
    if (depth > 0) {
      if (c == '(') ++depth;
      if (c == ')') --depth;
      continue;
    }
    if (c == '(') {
      flush();
      depth = 1;
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',') {
      flush();
      continue;
    }
    if (cur.size() < 32) cur += c;  // no date word is longer; junk is cut short
    if (words.size() > 16) break;  // likewise no date has this many words
  }
  flush();
  return words;
}

// Zone names of RFC 5322 4.3. Military letters are 0 there: their sign was
// historically reversed, so the RFC says to treat them as -0000.
std::optional<int> named_zone(std::string_view s) {
  std::string z;
  for (char c : s) z += lower(c);
  if (z == "ut" || z == "gmt" || z == "utc" || z == "z") return 0;
  if (z == "est") return -5 * 60;
  if (z == "edt") return -4 * 60;
  if (z == "cst") return -6 * 60;
  if (z == "cdt") return -5 * 60;
  if (z == "mst") return -7 * 60;
  if (z == "mdt") return -6 * 60;
  if (z == "pst") return -8 * 60;
  if (z == "pdt") return -7 * 60;
  if (z.size() == 1 && z[0] >= 'a' && z[0] <= 'z' && z[0] != 'j') return 0;
  return std::nullopt;
}

std::optional<int> numeric_zone(std::string_view s) {
  if (s.size() != 5 || (s[0] != '+' && s[0] != '-') || !all_digits(s.substr(1))) return std::nullopt;
  int hh = to_int(s.substr(1, 2));
  int mm = to_int(s.substr(3, 2));
  if (hh > 23 || mm > 59) return std::nullopt;
  int z = hh * 60 + mm;
  return s[0] == '-' ? -z : z;
}

bool parse_time(std::string_view s, DateTime& d) {
  // hh:mm or hh:mm:ss, one or two digits each (obsolete forms write "9:05").
  size_t c1 = s.find(':');
  if (c1 == std::string_view::npos) return false;
  size_t c2 = s.find(':', c1 + 1);
  std::string_view h = s.substr(0, c1);
  std::string_view m = c2 == std::string_view::npos ? s.substr(c1 + 1) : s.substr(c1 + 1, c2 - c1 - 1);
  std::string_view sec = c2 == std::string_view::npos ? std::string_view("0") : s.substr(c2 + 1);
  auto ok = [](std::string_view x) { return all_digits(x) && x.size() <= 2; };
  if (!ok(h) || !ok(m) || !ok(sec)) return false;
  d.hour = to_int(h);
  d.minute = to_int(m);
  d.second = to_int(sec);
  return d.hour <= 23 && d.minute <= 59 && d.second <= 60;
}

bool parse_year(std::string_view s, int& year) {
  if (!all_digits(s) || s.size() < 2 || s.size() > 4) return false;
  int y = to_int(s);
  if (s.size() == 2) {
    y += y < 50 ? 2000 : 1900;  // RFC 5322 4.3
  } else if (s.size() == 3) {
    y += 1900;
  }
  if (y < 1900) return false;
  year = y;
  return true;
}

}  // namespace

int64_t days_from_civil(int y, int m, int d) {
  // Howard Hinnant's algorithm.
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

DateTime civil_from_unix(int64_t t, int zone) {
  t += static_cast<int64_t>(zone) * 60;
  int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
  int64_t secs = t - days * 86400;
  int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  DateTime dt;
  dt.day = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  dt.month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  dt.year = static_cast<int>(yoe + era * 400 + (dt.month <= 2));
  dt.hour = static_cast<int>(secs / 3600);
  dt.minute = static_cast<int>(secs / 60 % 60);
  dt.second = static_cast<int>(secs % 60);
  dt.zone = zone;
  return dt;
}

int days_in_month(int year, int month) {
  static const int kDaysIn[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12) return 0;
  if (month == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0)) return 29;
  return kDaysIn[month - 1];
}

int64_t DateTime::to_unix() const {
  return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second -
         static_cast<int64_t>(zone) * 60;
}

const char* weekday_name(int year, int month, int day) {
  int64_t d = days_from_civil(year, month, day);
  int64_t idx = d % 7;
  if (idx < 0) idx += 7;
  return kDays[idx];
}

const char* month_name(int month) { return (month >= 1 && month <= 12) ? kMonths[month - 1] : "Jan"; }

int parse_month_name(std::string_view s) {
  if (s.size() < 3) return 0;
  for (int m = 0; m < 12; ++m) {
    if (lower(s[0]) == lower(kMonths[m][0]) && lower(s[1]) == lower(kMonths[m][1]) &&
        lower(s[2]) == lower(kMonths[m][2])) {
      return m + 1;
    }
  }
  return 0;
}

std::optional<DateTime> parse_date(std::string_view raw) {
  std::vector<std::string> w = date_words(raw);
  size_t i = 0;
  // An optional day name ("Mon", "Monday", "Mon."), possibly glued to nothing else.
  if (i < w.size() && !w[i].empty() && !all_digits(w[i]) && parse_month_name(w[i]) == 0) {
    std::string_view s = w[i];
    if (!s.empty() && s.back() == '.') s.remove_suffix(1);
    if (is_alpha_word(s)) ++i;
  }
  DateTime d;
  bool have_time = false;
  if (i + 2 < w.size() && parse_month_name(w[i]) != 0 && all_digits(w[i + 1]) && w[i + 1].size() <= 2) {
    // asctime(): "Jan 2 15:04:05 2006" (zone, if any, before or after the year)
    d.month = parse_month_name(w[i]);
    d.day = to_int(w[i + 1]);
    if (!parse_time(w[i + 2], d)) return std::nullopt;
    have_time = true;
    i += 3;
    if (i < w.size() && !all_digits(w[i])) {
      if (auto z = numeric_zone(w[i]) ? numeric_zone(w[i]) : named_zone(w[i])) d.zone = *z;
      ++i;
    }
    if (i >= w.size() || !parse_year(w[i], d.year)) return std::nullopt;
    ++i;
  } else {
    // RFC 5322: day month year; "2-Jan-2006" (with dashes) appears too.
    if (i < w.size() && w[i].find('-') != std::string::npos && !all_digits(w[i])) {
      std::string s = w[i];
      size_t a = s.find('-');
      size_t b = s.find('-', a + 1);
      if (b == std::string::npos) return std::nullopt;
      std::string day = s.substr(0, a), mon = s.substr(a + 1, b - a - 1), year = s.substr(b + 1);
      w[i] = year;
      w.insert(w.begin() + static_cast<std::ptrdiff_t>(i), mon);
      w.insert(w.begin() + static_cast<std::ptrdiff_t>(i), day);
    }
    if (i + 2 >= w.size() || !all_digits(w[i]) || w[i].size() > 2) return std::nullopt;
    d.day = to_int(w[i]);
    d.month = parse_month_name(w[i + 1]);
    if (d.month == 0) return std::nullopt;
    if (!parse_year(w[i + 2], d.year)) return std::nullopt;
    i += 3;
    if (i < w.size() && w[i].find(':') != std::string::npos) {
      if (!parse_time(w[i], d)) return std::nullopt;  // a time, but not a valid one
      have_time = true;
      ++i;
    }
    if (i < w.size()) {
      if (auto z = numeric_zone(w[i])) {
        d.zone = *z;
      } else if (auto nz = named_zone(w[i])) {
        d.zone = *nz;
      }
    }
  }
  (void)have_time;  // a date without a time is midnight, as RFC 3501 dates are
  if (d.day < 1 || d.day > days_in_month(d.year, d.month) || d.year > 9999) return std::nullopt;
  return d;
}

}  // namespace tern::common::mime
