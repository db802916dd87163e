// clutch::os::unique_fd — owns one file descriptor and closes it exactly once.
//
//   unique_fd fd{::open(path, O_RDONLY | O_CLOEXEC)};
//   if (!fd) return errno;
//   int raw = fd.release();  // hand it to something that will close it
//
// close() is never retried on EINTR: on Linux the descriptor is gone whatever close() returns, and a retry could
// close a descriptor that another thread has just been given the same number.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <string_view>
#include <utility>

namespace clutch::os {

class unique_fd {
 public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Both ends close-on-exec: a descriptor reaches a child only through a spawn plan, never by inheritance.
struct fd_pair {
  unique_fd first, second;
};
// pipe2(O_CLOEXEC): first is the read end, second the write end. Returns 0 or an errno value.
int make_pipe(fd_pair& out) noexcept;
// socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC). Returns 0 or an errno value.
int make_socketpair(fd_pair& out) noexcept;
// write(2) until every byte is written (again after EINTR). Returns 0 or the errno value that stopped it;
// `written` is how many bytes went out either way.
int write_all(int fd, std::string_view bytes, std::size_t& written) noexcept;

}  // namespace clutch::os
