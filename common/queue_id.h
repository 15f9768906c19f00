// Queue ids in Postfix's long form (global/mail_queue.h, enable_long_queue_ids):
// time-ordered, alphanumeric, no vowels, so ids sort by arrival and never spell
// words. Layout: seconds since the epoch in base 52 (6 digits), microseconds in
// base 52 (4 digits), then a per-process counter in base 52 (3 digits), e.g.
// "4Xq9Kp2TyrzK1bc". Unique within a process; the queue store also refuses
// duplicates.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tern::common {

std::string make_queue_id(uint64_t seconds, uint32_t microseconds, uint32_t counter);
// From the clock and a process-wide counter.
std::string new_queue_id();
// Only characters of the queue-id alphabet, 6 to 32 of them.
bool valid_queue_id(const std::string& id);
// The seconds since the epoch a queue id made by make_queue_id() carries in its
// first 6 characters; nullopt when `id` is not one.
std::optional<uint64_t> queue_id_seconds(std::string_view id);

}  // namespace tern::common
