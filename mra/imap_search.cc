#include "mra/imap_search.h"

#include "common/mime_address.h"
#include "common/mime_charset.h"
#include "common/mime_date.h"
#include "common/mime_header.h"
#include "common/text.h"

namespace tern::mra::imap {

namespace mime = tern::common::mime;

namespace {

bool contains_folded(const std::string& haystack_folded, const std::string& needle_folded) {
  return haystack_folded.find(needle_folded) != std::string::npos;
}

// Decoded text of every field with this name, joined by newlines.
std::string header_values(const mime::HeaderSection& h, std::string_view name, bool addresses) {
  std::string out;
  for (std::string_view raw : h.all(name)) {
    if (!out.empty()) out += '\n';
    if (addresses) {
      // Both the decoded display form and the raw value, so "=?utf-8?..." searches
      // and "Jürgen" searches both find it.
      for (const mime::Address& a : mime::parse_address_list(raw, 1000)) {
        out += mime::address_display(a);
        out += ' ';
      }
    }
    out += mime::decode_header_text(raw);
  }
  return out;
}

bool header_has(const mime::Message& m, std::string_view name, const std::string& needle, bool addresses) {
  const mime::HeaderSection& h = m.root().header;
  if (!h.first(name)) return false;
  // RFC 3501 6.4.4: HEADER with an empty string matches every message that has the field.
  if (needle.empty()) return true;
  return contains_folded(mime::fold_case(header_values(h, name, addresses)), mime::fold_case(needle));
}

Date date_of(int64_t t, int zone) {
  mime::DateTime d = mime::civil_from_unix(t, zone);
  return Date{d.year, d.month, d.day};
}

std::optional<Date> sent_date(SearchMessage& msg) {
  const mime::Message* m = msg.message();
  if (!m) return std::nullopt;
  std::optional<std::string_view> raw = m->root().header.first("Date");
  if (!raw) return std::nullopt;
  std::optional<mime::DateTime> d = mime::parse_date(*raw);
  if (!d) return std::nullopt;
  // RFC 3501 6.4.4: the date as written, disregarding time and timezone.
  return Date{d->year, d->month, d->day};
}

}  // namespace

bool has_flag(const std::vector<std::string>& flags, std::string_view flag) {
  for (const std::string& f : flags) {
    if (tern::common::iequals(f, flag)) return true;
  }
  return false;
}

bool search_needs_message(const SearchKey& key) {
  using Op = SearchKey::Op;
  switch (key.op) {
    case Op::kBcc: case Op::kCc: case Op::kFrom: case Op::kTo: case Op::kSubject:
    case Op::kBody: case Op::kText: case Op::kHeader:
    case Op::kSentBefore: case Op::kSentOn: case Op::kSentSince:
      return true;
    case Op::kNot: case Op::kOr: case Op::kAnd:
      for (const SearchKey& c : key.children) {
        if (search_needs_message(c)) return true;
      }
      return false;
    default:
      return false;
  }
}

bool search_matches(const SearchKey& key, SearchMessage& msg, const SearchContext& ctx) {
  using Op = SearchKey::Op;
  const std::vector<std::string>& flags = msg.flags();
  switch (key.op) {
    case Op::kAll: return true;
    case Op::kAnswered: return has_flag(flags, "\\Answered");
    case Op::kDeleted: return has_flag(flags, "\\Deleted");
    case Op::kDraft: return has_flag(flags, "\\Draft");
    case Op::kFlagged: return has_flag(flags, "\\Flagged");
    case Op::kSeen: return has_flag(flags, "\\Seen");
    case Op::kRecent: return msg.recent();
    case Op::kNew: return msg.recent() && !has_flag(flags, "\\Seen");
    case Op::kOld: return !msg.recent();
    case Op::kUnanswered: return !has_flag(flags, "\\Answered");
    case Op::kUndeleted: return !has_flag(flags, "\\Deleted");
    case Op::kUndraft: return !has_flag(flags, "\\Draft");
    case Op::kUnflagged: return !has_flag(flags, "\\Flagged");
    case Op::kUnseen: return !has_flag(flags, "\\Seen");
    case Op::kKeyword: return has_flag(flags, key.str);
    case Op::kUnkeyword: return !has_flag(flags, key.str);
    case Op::kLarger: return msg.size() > key.number;
    case Op::kSmaller: return msg.size() < key.number;
    case Op::kModSeq: return msg.modseq() >= key.number;
    case Op::kOlder: return ctx.now - msg.internal_date() >= static_cast<int64_t>(key.number);
    case Op::kYounger: return ctx.now - msg.internal_date() <= static_cast<int64_t>(key.number);
    case Op::kBefore: return date_of(msg.internal_date(), msg.internal_date_zone()) < key.date;
    case Op::kOn: return date_of(msg.internal_date(), msg.internal_date_zone()) == key.date;
    case Op::kSince: return !(date_of(msg.internal_date(), msg.internal_date_zone()) < key.date);
    case Op::kSentBefore: {
      std::optional<Date> d = sent_date(msg);
      return d && *d < key.date;
    }
    case Op::kSentOn: {
      std::optional<Date> d = sent_date(msg);
      return d && *d == key.date;
    }
    case Op::kSentSince: {
      std::optional<Date> d = sent_date(msg);
      return d && !(*d < key.date);
    }
    case Op::kUid:
      if (key.set.is_saved()) return ctx.saved && ctx.saved->contains(msg.uid());
      return key.set.contains(msg.uid(), ctx.max_uid);
    case Op::kSeqSet:
      if (key.set.is_saved()) return ctx.saved && ctx.saved->contains(msg.uid());
      return key.set.contains(msg.seq(), ctx.max_seq);
    case Op::kFrom:
    case Op::kTo:
    case Op::kCc:
    case Op::kBcc: {
      const mime::Message* m = msg.message();
      const char* name = key.op == Op::kFrom ? "From" : key.op == Op::kTo ? "To" : key.op == Op::kCc ? "Cc" : "Bcc";
      return m && header_has(*m, name, key.str, true);
    }
    case Op::kSubject: {
      const mime::Message* m = msg.message();
      return m && header_has(*m, "Subject", key.str, false);
    }
    case Op::kHeader: {
      const mime::Message* m = msg.message();
      return m && header_has(*m, key.header, key.str, false);
    }
    case Op::kBody:
    case Op::kText: {
      const mime::Message* m = msg.message();
      if (!m) return false;
      std::string needle = mime::fold_case(key.str);
      if (key.op == Op::kText) {
        std::string headers;
        for (const mime::HeaderField& f : m->root().header.fields) {
          headers.append(f.name);
          headers += ": ";
          headers += mime::decode_header_text(f.value);
          headers += '\n';
        }
        if (contains_folded(mime::fold_case(headers), needle)) return true;
      }
      return contains_folded(mime::fold_case(m->searchable_text()), needle);
    }
    case Op::kNot:
      return !search_matches(key.children[0], msg, ctx);
    case Op::kOr:
      return search_matches(key.children[0], msg, ctx) || search_matches(key.children[1], msg, ctx);
    case Op::kAnd:
      for (const SearchKey& c : key.children) {
        if (!search_matches(c, msg, ctx)) return false;
      }
      return true;
  }
  return false;
}

}  // namespace tern::mra::imap
