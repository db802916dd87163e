// `clutch run` as a container's PID 1, or as a subreaper elsewhere: the orphans of the workers' process trees
// become clutch's children, and their zombies are clutch's to reap — but never a worker's, whose exit clutch's
// pidfd watch reaps itself (a stolen status would be lost).
//
//   supervisor::become_subreaper();                              // a no-op need as PID 1, harmless there
//   on SIGCHLD: supervisor::reap_strangers([&](pid_t p) { return is_worker(p); });
//   supervisor::orphan_reaper r(io, [&] { return engine.pids(); });  // both: subreaper, and SIGCHLD → reap
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <functional>
#include <vector>

namespace clutch::supervisor {

// PR_SET_CHILD_SUBREAPER: orphans below us come to us instead of to init. Returns false if the kernel refused.
bool become_subreaper();

// Reaps every exited child for which ours(pid) is false. Returns how many. It lists the children from
// /proc/self/task/*/children, so that only strangers are waited for, by pid; where /proc belongs to another pid
// namespace, it peeks at the first zombie (WNOWAIT) and takes it while it is a stranger.
int reap_strangers(const std::function<bool(pid_t)>& ours);

// Makes this process a subreaper and, on every SIGCHLD, reaps the children that ours() does not list (the pids
// whose exits clutch watches itself).
class orphan_reaper {
 public:
  orphan_reaper(boost::asio::io_context& io, std::function<std::vector<int>()> ours);
  void cancel();

 private:
  void wait();
  boost::asio::signal_set sigchld_;
  std::function<std::vector<int>()> ours_;
};

}  // namespace clutch::supervisor
