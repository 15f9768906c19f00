#include "common/refuse_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"

namespace tern::common {

RefuseServer::RefuseServer(DaemonContext& ctx, std::vector<std::pair<std::string, std::string>> replies,
                           std::string fallback) {
  for (const auto& f : ctx.listen_fds) {
    std::string reply = fallback;
    for (const auto& r : replies) {
      if (r.first == f.name) reply = r.second;
    }
    auto l = std::make_unique<net::Listener>(*ctx.loop, UniqueFd(::dup(f.fd)), f.name);
    l->start([reply](UniqueFd c) {
      // One short line into an empty socket buffer cannot block.
      (void)::send(c.get(), reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    });
    listeners_.push_back(std::move(l));
  }
}

void RefuseServer::stop() { listeners_.clear(); }

}  // namespace tern::common
