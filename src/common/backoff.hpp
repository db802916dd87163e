// Restart back-off for one slot, as the cluster and the supervisor apply it: the first exit after a stable run is
// restarted at once (unless `first_at_once` is false: then it waits `first` too); exits in a row wait `first`, then
// ×factor each time, up to `max`; after `limit` of them in a row the slot is given up.
//
//   backoff b;
//   if (auto delay = b.next(policy, ran_for)) restart_after(*delay); else give_up();
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>

namespace clutch::detail {

struct backoff_policy {
  std::chrono::milliseconds first{100};
  double factor = 1.5;
  std::chrono::milliseconds max{15000};
  std::chrono::milliseconds stable_uptime{10000};  // a run at least this long resets the count
  unsigned limit = 10;                              // exits in a row before the slot is given up
  bool first_at_once = true;
};

class backoff {
 public:
  // After an exit to be restarted, given how long the process ran: the delay before the next start, or nullopt
  // once `limit` exits came in a row.
  std::optional<std::chrono::milliseconds> next(const backoff_policy& p, std::chrono::steady_clock::duration ran) {
    if (ran >= p.stable_uptime) streak_ = 0;
    if (streak_ >= p.limit) return std::nullopt;
    if (streak_ == 0) {
      delay_ = p.first_at_once ? std::chrono::milliseconds{} : p.first;
    } else if (delay_.count() == 0) {
      delay_ = p.first;
    } else {
      auto grown = std::chrono::milliseconds(static_cast<long long>(static_cast<double>(delay_.count()) * p.factor));
      delay_ = std::min(std::max(grown, delay_), p.max);
    }
    ++streak_;
    return delay_;
  }

 private:
  unsigned streak_ = 0;
  std::chrono::milliseconds delay_{0};
};

}  // namespace clutch::detail
