// Cleanup of a message on its way into the queue (Postfix cleanup(8)), streaming:
// a Received header goes in front, the header section is held (up to
// header_size_limit) until its end is seen, missing Message-ID and Date headers
// are added for submissions, and everything after the headers passes straight
// through, so memory stays bounded whatever the message size.
//
// A parser over the message bytes (CRLF line endings, as the DATA reader produces
// them): no I/O, no clock (the caller gives the time and names).
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace tern::mta {

// RFC 5322 3.3 date-time in local time: "Tue, 21 Nov 2023 10:00:00 +0100".
std::string rfc5322_date(time_t t);

class HeaderFilter {
 public:
  struct Options {
    std::string prepend;              // complete header lines (CRLF-terminated): Received
    bool add_message_id = false;      // when the message has none
    bool add_date = false;            // when the message has none
    std::string from_header;          // "From: ..." value to add when missing; "" adds none
    std::string message_id;           // "<id@domain>" to use for an added Message-ID
    time_t now = 0;
    size_t header_size_limit = 102400;
    // Headers removed from every message, lower case (Postfix message_drop_headers:
    // a Bcc must not reach the other recipients; Return-Path is the delivery
    // agent's to add; a Content-Length would lie after any change).
    std::vector<std::string> drop_headers = {"bcc", "content-length", "resent-bcc", "return-path"};
  };
  explicit HeaderFilter(Options options) : opt_(std::move(options)) {}

  // Message bytes in, queue bytes appended to `out`.
  void feed(std::string_view in, std::string& out);
  // The end of the message: flushes a header section that never ended.
  void finish(std::string& out);

  // The Message-ID header's value as found or added ("<...>"), for the log.
  const std::string& message_id() const { return found_message_id_; }
  bool had_message_id() const { return had_message_id_; }
  bool had_date() const { return had_date_; }
  // Bytes added by the filter (so the caller can tell the client's size from ours).
  uint64_t added_bytes() const { return added_; }
  // Bytes of the message's own that it removed (drop_headers lines).
  uint64_t removed_bytes() const { return removed_; }

 private:
  void end_headers(std::string& out, std::string_view terminator);
  void end_headers_before_body(std::string& out);
  void scan_header_line(std::string_view line);

  Options opt_;
  bool started_ = false;
  bool in_headers_ = true;
  std::string hdr_;        // the header section so far (complete lines)
  std::string partial_;    // an incomplete line while in the headers
  std::string cur_name_;   // the header whose continuation lines may follow
  bool dropping_ = false;  // cur_name_ is in drop_headers: skip it and its continuations
  bool had_message_id_ = false;
  bool had_date_ = false;
  bool had_from_ = false;
  std::string found_message_id_;
  uint64_t added_ = 0;
  uint64_t removed_ = 0;
};

}  // namespace tern::mta
