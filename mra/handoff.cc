#include "mra/handoff.h"

#include <vector>

#include "common/sockets.h"

namespace tern::mra::handoff {

// Values are escaped as in every packet between Tern's processes (\t \n \0 \\).
using common::net::packet_escape;
using common::net::packet_unescape;

std::string encode(std::string_view verb, const Fields& fields) {
  std::string out(verb);
  for (const auto& [k, v] : fields) {
    out += '\t';
    out += k;
    out += '=';
    out += packet_escape(v);
  }
  return out;
}

std::optional<Packet> decode(std::string_view data) {
  if (data.size() > kMaxPacket) return std::nullopt;
  Packet p;
  size_t pos = data.find('\t');
  p.verb = std::string(data.substr(0, pos));
  if (p.verb.empty()) return std::nullopt;
  while (pos != std::string_view::npos) {
    size_t start = pos + 1;
    pos = data.find('\t', start);
    std::string_view item = data.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;
    std::optional<std::string> v = packet_unescape(item.substr(eq + 1));
    if (!v) return std::nullopt;
    if (!p.fields.emplace(std::string(item.substr(0, eq)), std::move(*v)).second) return std::nullopt;  // duplicate key
  }
  return p;
}

std::string frame(std::string_view packet) {
  std::string out;
  const uint32_t n = static_cast<uint32_t>(packet.size());
  for (int i = 3; i >= 0; --i) out += static_cast<char>((n >> (i * 8)) & 0xff);
  out.append(packet);
  return out;
}

std::optional<size_t> frame_length(std::string_view h) {
  if (h.size() < 4) return std::nullopt;
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<uint8_t>(h[i]);
  if (n == 0 || n > kMaxPacket) return std::nullopt;
  return n;
}

}  // namespace tern::mra::handoff
