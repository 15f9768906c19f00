#include "mra/pop3_parser.h"

#include <vector>

#include "common/text.h"

namespace tern::mra::pop3 {

namespace {

std::optional<uint32_t> parse_number(std::string_view s, bool allow_zero) {
  std::optional<uint64_t> v = tern::common::parse_u64(s);
  if (!v || *v > UINT32_MAX || (*v == 0 && !allow_zero)) return std::nullopt;
  return static_cast<uint32_t>(*v);
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    size_t b = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > b) out.push_back(s.substr(b, i - b));
  }
  return out;
}

}  // namespace

ParseResult parse_command(std::string_view line) {
  if (line.size() > kMaxCommandLine) return ParseError{"Line too long."};
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if (u == 0 || c == '\r' || c == '\n') return ParseError{"Invalid characters in command."};
  }
  size_t sp = line.find(' ');
  std::string keyword = tern::common::to_lower(line.substr(0, sp));
  std::string_view rest = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  std::vector<std::string_view> args = words(rest);
  Command c;
  auto no_args = [&](Verb v) -> ParseResult {
    if (!args.empty()) return ParseError{"Too many arguments."};
    c.verb = v;
    return c;
  };
  auto msg_arg = [&](Verb v, bool optional) -> ParseResult {
    c.verb = v;
    if (args.empty()) {
      if (optional) return c;
      return ParseError{"Missing message number."};
    }
    if (args.size() > 1) return ParseError{"Too many arguments."};
    c.msg = parse_number(args[0], false);
    if (!c.msg) return ParseError{"Invalid message number."};
    return c;
  };
  if (keyword == "user") {
    if (args.size() != 1) return ParseError{"USER needs one argument."};
    c.verb = Verb::kUser;
    c.arg = std::string(args[0]);
    return c;
  }
  if (keyword == "pass") {
    if (rest.empty()) return ParseError{"PASS needs an argument."};
    c.verb = Verb::kPass;
    c.arg = std::string(rest);
    return c;
  }
  if (keyword == "auth") {
    c.verb = Verb::kAuth;
    if (args.size() > 2) return ParseError{"Too many arguments."};
    if (!args.empty()) {
      std::string mech(args[0]);
      for (char& ch : mech) ch = (ch >= 'a' && ch <= 'z') ? static_cast<char>(ch - 32) : ch;
      c.arg = std::move(mech);
    }
    if (args.size() == 2) c.initial_response = std::string(args[1]);
    return c;
  }
  if (keyword == "stls") return no_args(Verb::kStls);
  if (keyword == "capa") return no_args(Verb::kCapa);
  if (keyword == "quit") return no_args(Verb::kQuit);
  if (keyword == "stat") return no_args(Verb::kStat);
  if (keyword == "noop") return no_args(Verb::kNoop);
  if (keyword == "rset") return no_args(Verb::kRset);
  if (keyword == "list") return msg_arg(Verb::kList, true);
  if (keyword == "uidl") return msg_arg(Verb::kUidl, true);
  if (keyword == "retr") return msg_arg(Verb::kRetr, false);
  if (keyword == "dele") return msg_arg(Verb::kDele, false);
  if (keyword == "top") {
    if (args.size() != 2) return ParseError{"TOP needs a message number and a line count."};
    c.verb = Verb::kTop;
    c.msg = parse_number(args[0], false);
    std::optional<uint32_t> n = parse_number(args[1], true);
    if (!c.msg || !n) return ParseError{"Invalid arguments."};
    c.lines = *n;
    return c;
  }
  return ParseError{"Unknown command."};
}

}  // namespace tern::mra::pop3
