// An RFC 5322 message parsed into its MIME tree (RFC 2045-2049): every part's header
// fields, content type and parameters, transfer encoding, disposition, and its exact
// byte range in the message, which is what IMAP's BODYSTRUCTURE, BODY[section] and
// BINARY are made of, and what SEARCH, the MTA and DKIM read.
//
// One pass over the message, line by line, with a stack of the open multiparts'
// boundaries (so a missing close delimiter, or a part that ends at an outer boundary,
// comes out as a reader would expect). Boundary lines must match exactly
// ("--" boundary ["--"] then only blanks), as RFC 2046 5.1.1 says, so a boundary that
// is a prefix of another cannot cut a part short. Malformed mail never fails: bare LF
// line ends, NULs, 8-bit headers, missing blank lines and missing boundaries all parse
// into some tree. Bounds (Limits) stop absurd nesting and part counts: past them the
// rest is body text of the deepest part allowed.
//
// Offsets index raw(); sizes are of the bytes as stored, so IMAP callers parse the
// CRLF form they serve. No I/O; the message is held in memory by the caller's choice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mime_header.h"

namespace tern::common::mime {

struct Limits {
  // Nesting of multipart and message/rfc822 parts. Real mail nests a handful of
  // levels (a forwarded message in a multipart/mixed, with an alternative inside);
  // 100 is Dovecot's limit and also bounds our recursion into message/rfc822.
  size_t max_depth = 100;
  // Parts in one message. Dovecot stops at 10000 too; a message with more is an attack.
  size_t max_parts = 10000;
  // Header fields kept per header section (the rest are still skipped over).
  size_t max_header_fields = 10000;
};

struct Part {
  // How the part's body is structured.
  enum class Kind {
    kLeaf,       // a body of its own (text, image, application, ...)
    kMultipart,  // multipart/*: `children` are its body parts
    kMessage,    // message/rfc822 (or message/global): `children[0]` is the encapsulated message
  };
  Kind kind = Kind::kLeaf;
  size_t header_begin = 0;  // first byte of the header section
  size_t body_begin = 0;    // first byte after the header section and its blank line
  size_t body_end = 0;      // end of the body; the line end before a boundary is not in it
  size_t body_lines = 0;    // LF count of the body, IMAP's "body-fld-lines"
  size_t depth = 0;         // 0 for the message itself
  std::optional<uint32_t> parent;
  std::vector<uint32_t> children;  // indices into Message::parts()

  HeaderSection header;  // views into Message::raw()

  ContentType content_type;         // always set: the default when absent or unusable
  bool content_type_given = false;  // a usable Content-Type field was present
  std::string encoding;             // Content-Transfer-Encoding token, lower-cased; "" if none
  std::optional<std::string> id;           // Content-ID, unfolded
  std::optional<std::string> description;  // Content-Description, unfolded
  std::optional<std::string> md5;          // Content-MD5, unfolded
  std::optional<std::string> location;     // Content-Location (RFC 2557), unfolded
  ContentType disposition;                 // Content-Disposition; type empty if none
  std::vector<std::string> language;       // Content-Language tags

  bool is_text() const { return kind == Kind::kLeaf && content_type.type == "text"; }
  size_t header_size() const { return body_begin - header_begin; }
  size_t body_size() const { return body_end - body_begin; }
};

class Message {
 public:
  // Parses `raw` (the message is kept, shared, so Parts' views stay valid when the
  // Message is copied or moved).
  static Message parse(std::string raw, const Limits& limits = {});

  // Parses only the message's own header section: root() is complete as far as its
  // header goes (header, content type and the other Content-* fields, header_begin,
  // body_begin) and its body is the rest of `raw` (body_end = raw.size(), body_lines
  // counted), but no body part is looked at: root() is a leaf without children
  // whatever its type. For callers that need the header, the text after it or the
  // whole message, not the MIME structure (IMAP BODY[HEADER], BODY[TEXT], BODY[],
  // ENVELOPE): header_text(root()) and body_text(root()) equal those of parse().
  // `raw` may also be just the header section (see header_section_end()).
  static Message parse_header_only(std::string raw, const Limits& limits = {});

  const std::string& raw() const { return *raw_; }
  const std::vector<Part>& parts() const { return parts_; }
  const Part& root() const { return parts_[0]; }
  const Part& part(uint32_t index) const { return parts_[index]; }
  // True when a Limits bound was reached while parsing.
  bool limited() const { return limited_; }

  std::string_view header_text(const Part& p) const;  // including the blank line
  std::string_view body_text(const Part& p) const;
  std::string_view entity_text(const Part& p) const;  // header and body

  // The part a section number path names (RFC 3501 6.4.5), e.g. {2, 1} for "2.1".
  // The body of a non-multipart message or encapsulated message is its part 1.
  // nullptr when there is no such part. An empty path gives the root.
  const Part* find_section(const std::vector<uint32_t>& path) const;

  // For a message/rfc822 part, the encapsulated message; nullptr otherwise. HEADER
  // and TEXT sections with a part number apply to what this returns (without one,
  // to the root).
  const Part* message_of(const Part& p) const;

  // The body of a leaf part decoded from its transfer encoding (RFC 3516 BINARY).
  // `clean` is false when the encoding is unknown or the data was not valid for it.
  std::string decoded_body(const Part& p, bool* clean = nullptr) const;

  // The body of a text part decoded and converted to UTF-8 (for SEARCH).
  std::string text_body_utf8(const Part& p) const;

  // The decoded UTF-8 text of every text/* leaf, separated by newlines: what IMAP's
  // SEARCH BODY matches against. At most `max_bytes` are produced (a bound on what
  // one search may cost in memory).
  std::string searchable_text(size_t max_bytes = 64u << 20) const;

 private:
  std::shared_ptr<const std::string> raw_;
  std::vector<Part> parts_;
  bool limited_ = false;
  friend class MessageParser;
};

// Converts every bare LF (one not preceded by CR) to CRLF and leaves every other
// byte, an existing CRLF included, as it is: the form IMAP and POP3 serve, whatever
// the store keeps (LF files, CRLF files from other MDAs or migration tools, mixed).
std::string to_crlf(std::string_view s);

// The number of bare LFs in `s` (LFs not preceded by CR); `after_cr` says whether the
// byte before `s` was a CR, so a file can be counted in chunks. to_crlf() adds one
// octet per bare LF, so the size IMAP (RFC822.SIZE) and POP3 (LIST) report for a
// stored file is its length plus this count: crlf_size().
uint64_t count_bare_lf(std::string_view s, bool after_cr = false);
inline uint64_t crlf_size(std::string_view s) { return s.size() + count_bare_lf(s); }

// The stored (LF) form of a CRLF message (IMAP APPEND), such that to_crlf() gives
// `crlf` back exactly whenever `crlf` has no bare LF: a CRLF becomes LF, except when
// the CR is itself preceded by CR ("x\r\r\n"), which is kept as it is, because the
// LF of "x\r\n" would not get its CR back and the stray CR would be lost. A bare LF
// stays (and is served as CRLF: RFC 5322 has no bare LF).
std::string to_lf(std::string_view crlf);

// Where a message's own header section ends in `raw`: after the first empty line
// (LF or CRLF; a line holding only CR counts as empty, as the line end is CRLF), or
// at raw.size() when there is none. The same rule parse() applies to the root part,
// so header_text(root()) is raw.substr(0, header_section_end(raw)). Line ends map
// one to one between the stored and the CRLF form, so the end found in a stored
// (LF) file, converted by to_crlf(), is the end of the CRLF form's header.
size_t header_section_end(std::string_view raw);

}  // namespace tern::common::mime
