// The queue listing in the format of Postfix's mailq / postqueue -p, so scripts that
// read it keep working:
//
//   -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
//   4jbmtW5jRK000*   1234 Tue Nov 21 10:00:00  sender@example.org
//                      (connect to tern-mda[...]: No such file or directory)
//                                            alice@example.test
//
//   -- 1 Kbytes in 1 Request.
//
// '*' marks a message being delivered now, '!' one on hold. Pure formatting.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "mta/queue_store.h"

namespace tern::mta {

std::string format_mailq(const std::vector<Envelope>& queue, const std::set<std::string>& active);

// `ternctl queue show`: one block per message with every recipient's state.
std::string format_queue_details(const std::vector<Envelope>& queue);

}  // namespace tern::mta
