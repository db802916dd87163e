#include "os/fd.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>

namespace clutch::os {

int make_pipe(fd_pair& out) noexcept {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno;
  out.first.reset(fds[0]);
  out.second.reset(fds[1]);
  return 0;
}

int make_socketpair(fd_pair& out) noexcept {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return errno;
  out.first.reset(fds[0]);
  out.second.reset(fds[1]);
  return 0;
}

int write_all(int fd, std::string_view bytes, std::size_t& written) noexcept {
  written = 0;
  while (written < bytes.size()) {
    const auto n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    written += static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace clutch::os
