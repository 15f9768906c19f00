// Fuzzes the MIME parser and everything IMAP derives from a message: the tree's
// offsets must stay inside the message and nested, and ENVELOPE, BODYSTRUCTURE,
// every section, BINARY and the search text must be producible for every part, and
// the rendered ENVELOPE / BODY / BODYSTRUCTURE must conform to the IMAP grammar.
#include <cstddef>
#include <cstdint>
#include <string>

#include "../unit/mra/imap_grammar_fixture.h"
#include "common/mime.h"
#include "common/mime_address.h"
#include "common/mime_date.h"
#include "mra/imap_render.h"

namespace mime = tern::common::mime;
using namespace tern::mra::imap;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mime::Limits lim;
  lim.max_depth = 20;
  lim.max_parts = 200;
  mime::Message m = mime::Message::parse(std::string(reinterpret_cast<const char*>(data), size), lim);
  const std::string& raw = m.raw();
  for (const mime::Part& p : m.parts()) {
    if (!(p.header_begin <= p.body_begin && p.body_begin <= p.body_end && p.body_end <= raw.size())) __builtin_trap();
    if (p.parent) {
      const mime::Part& parent = m.part(*p.parent);
      if (p.header_begin < parent.body_begin || p.body_end > parent.body_end) __builtin_trap();
    }
    if (p.kind == mime::Part::Kind::kMessage && p.children.size() != 1) __builtin_trap();
    for (const mime::HeaderField& f : p.header.fields) {
      (void)mime::decode_header_text(f.value);
      (void)mime::parse_address_list(f.value, 50);
      (void)mime::parse_date(f.value);
    }
    (void)m.decoded_body(p);
  }
  std::string out = "* 1 FETCH (ENVELOPE ";
  append_envelope(out, m.root().header);
  out += " BODYSTRUCTURE ";
  append_body_structure(out, m, m.root(), true);
  out += " BODY ";
  append_body_structure(out, m, m.root(), false);
  out += ")\r\n";
  if (!tern::mra::testing::ResponseChecker::check(out).empty()) __builtin_trap();
  std::string utf8 = "* ENABLED IMAP4rev2\r\n* 1 FETCH (BODYSTRUCTURE ";
  append_body_structure(utf8, m, m.root(), true, RenderMode{true});
  utf8 += ")\r\n";
  if (!tern::mra::testing::ResponseChecker::check(utf8).empty()) __builtin_trap();
  (void)m.searchable_text(1 << 20);
  // Every section path the tree has, and some it does not.
  for (uint32_t a = 0; a <= 3; ++a) {
    for (uint32_t b = 0; b <= 3; ++b) {
      Section s;
      if (a) s.part.push_back(a);
      if (b) s.part.push_back(b);
      for (Section::Spec spec : {Section::Spec::kNone, Section::Spec::kHeader, Section::Spec::kText,
                                 Section::Spec::kMime, Section::Spec::kHeaderFields}) {
        s.spec = spec;
        s.fields = {"Subject", "From"};
        SectionContent c = section_content(m, s);
        if (c.exists && !c.owned && c.view.data() + c.view.size() > raw.data() + raw.size()) __builtin_trap();
      }
      s.spec = Section::Spec::kNone;
      (void)binary_content(m, s);
    }
  }
  return 0;
}
