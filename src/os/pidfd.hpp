// Waiting for and signalling a child through its pidfd (Linux 5.3: pidfd_open; 5.4: waitid(P_PIDFD)).
//
//   child_exit e;
//   int err = wait_pidfd(pidfd, /*reap=*/true, e);   // 0 and e.exited; or EAGAIN while the child runs
//   send_signal(pidfd, SIGTERM);                      // after the child was reaped: ESRCH, never another process
//
// A pidfd names one process for as long as the descriptor is open, so unlike kill(pid) it can never reach a
// stranger who was given a reused pid.
#pragma once

#include <sys/types.h>

namespace clutch::os {

struct child_exit {
  bool exited = false;
  int code = -1;    // exit code when the child exited, else -1
  int signal = 0;   // the signal that ended it, else 0
};

// Non-blocking. reap=false leaves the child a zombie (WNOWAIT), so that its pid, and so its process group id, stay
// reserved until a later call with reap=true. Returns 0, EAGAIN when the child has not exited yet, or an errno.
int wait_pidfd(int pidfd, bool reap, child_exit& out) noexcept;

// Returns 0 or an errno value (ESRCH once the child has exited).
int send_signal(int pidfd, int signal) noexcept;

}  // namespace clutch::os
