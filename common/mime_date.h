// The Date field of RFC 5322 3.3, with the obsolete forms of 4.3 (two- and three-digit
// years, named and military zones, comments, missing seconds) and the asctime() order
// some old mailers still write ("Mon Jan  2 15:04:05 2006").
//
// IMAP SENTBEFORE/SENTON/SENTSINCE compare the date as written, ignoring time and zone
// (RFC 3501 6.4.4), so the parsed fields are kept as well as the UTC instant. No I/O,
// no locale, no time zone database.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tern::common::mime {

struct DateTime {
  int year = 1970;   // four digits
  int month = 1;     // 1..12
  int day = 1;       // 1..31, valid for the month
  int hour = 0;
  int minute = 0;
  int second = 0;    // 0..60 (a leap second is accepted)
  int zone = 0;      // offset from UTC in minutes, -1439..1439

  // Seconds since 1970-01-01T00:00:00Z.
  int64_t to_unix() const;
};

// Parses a Date field value; nullopt when no date can be read from it.
std::optional<DateTime> parse_date(std::string_view raw);

// Days since 1970-01-01 of a civil date (proleptic Gregorian).
int64_t days_from_civil(int year, int month, int day);

// The civil date/time of a UTC instant shifted by `zone` minutes.
DateTime civil_from_unix(int64_t t, int zone = 0);

// Days in a month of a year.
int days_in_month(int year, int month);

// "Mon", "Tue", ... for a civil date.
const char* weekday_name(int year, int month, int day);
// "Jan".."Dec" for 1..12.
const char* month_name(int month);
// 1..12 for a case-insensitive English month name or its first three letters; 0 if none.
int parse_month_name(std::string_view s);

}  // namespace tern::common::mime
