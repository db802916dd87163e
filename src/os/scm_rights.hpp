// Sending and receiving bytes with a descriptor attached (SCM_RIGHTS) on a Unix stream socket.
//
//   iovec iov[] = {{data, len}};
//   ssize_t n = send_with_fd(sock, iov, 1, fd_or_minus_1);   // bytes written, or -errno; never SIGPIPE
//   received r = receive(sock, buf, sizeof buf, fds);         // fds gets every descriptor that came along
//
// Both calls are non-blocking and retry EINTR; the caller waits for readiness (Asio) on EAGAIN.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <vector>

#include "os/fd.hpp"

namespace clutch::os {

// One descriptor at most per call, as Node sends them: the receiver knows which message it belongs to.
ssize_t send_with_fd(int sock, const iovec* iov, int iov_count, int fd) noexcept;

struct received {
  ssize_t bytes = 0;        // > 0 data, 0 end of stream, < 0 -errno (-EAGAIN: nothing now)
  bool truncated = false;   // MSG_CTRUNC: descriptors were sent but did not fit, and the kernel dropped them
};
// Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC) and appended to fds.
received receive(int sock, char* buf, std::size_t len, std::vector<unique_fd>& fds);

}  // namespace clutch::os
