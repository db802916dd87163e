#include "os/kernel.hpp"

#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace clutch::os {

namespace {

std::string missing(const std::string& what) {
  utsname u{};
  const std::string release = ::uname(&u) == 0 ? u.release : "unknown";
  return "this kernel (Linux " + release + ") has no " + what + "; clutch needs Linux " + oldest_kernel +
         " or later (pidfds)";
}

}  // namespace

std::optional<std::string> missing_kernel_features() {
  const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
  if (fd < 0) {
    // EMFILE and the like say nothing about the kernel; a kernel without the call answers ENOSYS. EPERM, which the
    // call never gives for one's own pid, is a seccomp profile's refusal (older container runtimes answer so for
    // the calls they do not know).
    if (errno == ENOSYS) return missing("pidfd_open (Linux 5.3)");
    if (errno == EPERM)
      return std::string("pidfd_open is refused (EPERM): a seccomp profile blocks it, as older container "
                         "runtimes' do; clutch needs pidfds (Linux ") +
             oldest_kernel + " or later, and a profile that allows them)";
    return std::nullopt;
  }
  // This process is not its own child: a kernel that knows P_PIDFD answers ECHILD, an older one EINVAL.
  siginfo_t info{};
  const int rc = ::waitid(P_PIDFD, static_cast<id_t>(fd), &info, WEXITED | WNOHANG);
  const int err = errno;
  ::close(static_cast<int>(fd));
  if (rc != 0 && err == EINVAL) return missing("waitid(P_PIDFD) (Linux 5.4)");
  return std::nullopt;
}

}  // namespace clutch::os
