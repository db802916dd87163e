#include "os/pidfd.hpp"

#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>

namespace clutch::os {

int wait_pidfd(int pidfd, bool reap, child_exit& out) noexcept {
  siginfo_t info{};
  int flags = WEXITED | WNOHANG | (reap ? 0 : WNOWAIT);
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, flags);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return errno;
  // WNOHANG with nothing to report leaves si_pid zero rather than failing.
  if (info.si_pid == 0) return EAGAIN;
  out.exited = true;
  if (info.si_code == CLD_EXITED) {
    out.code = info.si_status;
    out.signal = 0;
  } else {  // CLD_KILLED or CLD_DUMPED
    out.code = -1;
    out.signal = info.si_status;
  }
  return 0;
}

int send_signal(int pidfd, int signal) noexcept {
  if (::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) != 0) return errno;
  return 0;
}

}  // namespace clutch::os
