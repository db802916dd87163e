// Emptying a process group whose leader has exited: SIGTERM now, SIGKILL at the deadline, then done. Polled, as a
// process group has no descriptor to wait on; given up a second after the SIGKILL, since what is left then can
// only be zombies that nobody reaps (under a PID 1 that does not).
//
//   sweep_group(io, pgid, 5s, [] { /* the group is empty, or given up on */ });
#pragma once

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace clutch::detail {

class group_sweep : public std::enable_shared_from_this<group_sweep> {
 public:
  group_sweep(boost::asio::io_context& io, int pgid, std::chrono::milliseconds kill_after, std::function<void()> done)
      : pgid_(pgid), timer_(io), kill_at_(std::chrono::steady_clock::now() + kill_after), done_(std::move(done)) {}

  void poll() {
    const auto now = std::chrono::steady_clock::now();
    const bool left = ::killpg(pgid_, 0) == 0;
    if (left && !killed_ && now >= kill_at_) {
      ::killpg(pgid_, SIGKILL);
      killed_ = true;
    }
    if (!left || now >= kill_at_ + std::chrono::seconds(1)) {
      if (auto d = std::exchange(done_, nullptr)) d();
      return;
    }
    timer_.expires_after(std::chrono::milliseconds(10));
    timer_.async_wait([self = shared_from_this()](boost::system::error_code) { self->poll(); });
  }

 private:
  int pgid_;
  boost::asio::steady_timer timer_;
  std::chrono::steady_clock::time_point kill_at_;
  bool killed_ = false;
  std::function<void()> done_;
};

// Returns false (and does not call done) when the group is already empty.
inline bool sweep_group(boost::asio::io_context& io, int pgid, std::chrono::milliseconds kill_after,
                        std::function<void()> done) {
  if (::killpg(pgid, SIGTERM) != 0) return false;
  std::make_shared<group_sweep>(io, pgid, kill_after, std::move(done))->poll();
  return true;
}

}  // namespace clutch::detail
