// RefuseServer: accepts on a daemon's listeners and answers every client with one
// protocol-correct "temporarily unavailable" line, then closes. It is what a daemon
// serves while its protocol engine is not built into this binary, so that clients
// get a clear temporary error (and retry) instead of a hang or a reset.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/daemon.h"
#include "common/sockets.h"

namespace tern::common {

class RefuseServer {
 public:
  // `reply` per listener name; listeners not in the map get `fallback`.
  RefuseServer(DaemonContext& ctx, std::vector<std::pair<std::string, std::string>> replies, std::string fallback);
  void stop();

 private:
  std::vector<std::unique_ptr<net::Listener>> listeners_;
};

}  // namespace tern::common
