// Network lists as Postfix writes mynetworks: "127.0.0.0/8 [::1]/128 192.0.2.7",
// separated by commas or spaces. Matching is exact on prefixes; IPv4-mapped IPv6
// client addresses match IPv4 entries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace tern::common {

class NetworkList {
 public:
  // Errors name the entry that does not parse.
  static Result<NetworkList> parse(const std::vector<std::string>& entries);
  bool contains(const std::string& address) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct Net {
    uint8_t addr[16];
    int bits;  // prefix length in the 128-bit (IPv4-mapped) space
  };
  std::vector<Net> nets_;
};

// Parses a numeric IPv4 or IPv6 address (brackets allowed) into the 16-byte
// IPv4-mapped form. False when it is not an address.
bool parse_ip(const std::string& text, uint8_t out[16]);

}  // namespace tern::common
