// ternctl queue show [QUEUE_ID...]: the mail queue with every recipient's state,
// read from tern-mta's queue store (read-only; root or mail_owner).
// ternctl queue list: the same summary as mailq.
#include <sysexits.h>

#include <cstdio>
#include <set>

#include "master/ternctl.h"
#include "mta/queue_store.h"
#include "mta/showq.h"

namespace tern::ternctl {

int cmd_queue(const Invocation& inv) {
  if (inv.args.empty() || (inv.args[0] != "show" && inv.args[0] != "list")) {
    std::fprintf(stderr, "usage: ternctl queue show [queue_id...] | ternctl queue list\n");
    return EX_USAGE;
  }
  common::Config cfg = inv.load_config();
  auto q = mta::QueueStore::open_read_only(cfg.str("queue_directory"));
  if (!q) {
    std::fprintf(stderr, "ternctl queue: %s\n", q.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  std::set<std::string> want(inv.args.begin() + 1, inv.args.end());
  std::vector<mta::Envelope> all;
  common::Status st = (*q)->for_each([&](const mta::Envelope& e) {
    if (want.empty() || want.count(e.queue_id)) all.push_back(e);
  });
  if (!st) {
    std::fprintf(stderr, "ternctl queue: %s\n", st.error().message.c_str());
    return EX_UNAVAILABLE;
  }
  std::string out = inv.args[0] == "list" ? mta::format_mailq(all, {}) : mta::format_queue_details(all);
  std::fputs(out.c_str(), stdout);
  return EX_OK;
}

}  // namespace tern::ternctl
