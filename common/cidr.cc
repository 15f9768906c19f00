#include "common/cidr.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/text.h"

namespace tern::common {

bool parse_ip(const std::string& text_in, uint8_t out[16]) {
  std::string text = text_in;
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') text = text.substr(1, text.size() - 2);
  if (istarts_with(text, "ipv6:")) text = text.substr(5);
  in_addr a4;
  if (::inet_pton(AF_INET, text.c_str(), &a4) == 1) {
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &a4, 4);
    return true;
  }
  in6_addr a6;
  if (::inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
    std::memcpy(out, &a6, 16);
    return true;
  }
  return false;
}

Result<NetworkList> NetworkList::parse(const std::vector<std::string>& entries) {
  NetworkList list;
  for (const std::string& e : entries) {
    std::string addr = e;
    int bits = -1;
    // "[::1]/128" and "[::1/128]" are both written in the wild.
    size_t slash = addr.rfind('/');
    if (slash != std::string::npos) {
      std::string b = addr.substr(slash + 1);
      if (!b.empty() && b.back() == ']') {
        b.pop_back();
        addr = addr.substr(0, slash) + "]";
      } else {
        addr = addr.substr(0, slash);
      }
      std::optional<uint64_t> n = parse_u64(b);
      if (!n) return make_error(ErrorKind::kConfig, "bad network '" + log_escape(e, 64) + "': prefix length");
      bits = static_cast<int>(*n);
    }
    Net net;
    if (!parse_ip(addr, net.addr)) {
      return make_error(ErrorKind::kConfig, "bad network '" + log_escape(e, 64) + "': not an IP address or CIDR");
    }
    bool v4 = addr.find(':') == std::string::npos;
    int max = v4 ? 32 : 128;
    if (bits < 0) bits = max;
    if (bits > max) return make_error(ErrorKind::kConfig, "bad network '" + log_escape(e, 64) + "': prefix too long");
    net.bits = v4 ? bits + 96 : bits;
    // Postfix refuses "192.0.2.1/24" (host bits set): it is almost always a typo.
    for (int i = net.bits; i < 128; ++i) {
      if (net.addr[i / 8] & (0x80 >> (i % 8))) {
        return make_error(ErrorKind::kConfig, "bad network '" + log_escape(e, 64) +
                                                  "': address has bits set beyond the prefix length");
      }
    }
    list.nets_.push_back(net);
  }
  return list;
}

bool NetworkList::contains(const std::string& address) const {
  uint8_t a[16];
  if (!parse_ip(address, a)) return false;
  for (const Net& n : nets_) {
    int full = n.bits / 8, rest = n.bits % 8;
    if (std::memcmp(a, n.addr, static_cast<size_t>(full)) != 0) continue;
    if (rest && ((a[full] ^ n.addr[full]) & static_cast<uint8_t>(0xff << (8 - rest)))) continue;
    return true;
  }
  return false;
}

}  // namespace tern::common
