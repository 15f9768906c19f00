// The development default: `tern-master --dev DIR` runs the whole suite from DIR
// (./var in the checkout) with no root and no config to write: loopback ports 2525,
// 2587, 2465, 1143, 1993, 1110, 1995, a self-signed certificate, the domain
// example.test. It writes DIR/tern.conf once and leaves later edits alone.
#pragma once

#include <string>

#include "common/config.h"
#include "common/result.h"

namespace tern::master {

// Creates DIR, its tern.conf and certificate when missing. Returns the config path.
common::Result<std::string> prepare_dev(const std::string& dir);

// The text printed at start: ports, and how to try them.
std::string dev_banner(const std::string& dir, const std::string& config_path, const common::Config& cfg);

}  // namespace tern::master
