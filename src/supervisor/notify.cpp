#include "supervisor/notify.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <system_error>

namespace clutch::supervisor {

namespace asio = boost::asio;

notify_message parse_notify(std::string_view d) {
  notify_message m;
  while (!d.empty()) {
    const auto nl = d.find('\n');
    const std::string_view line = d.substr(0, nl);
    d = nl == std::string_view::npos ? std::string_view{} : d.substr(nl + 1);
    const auto eq = line.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;
    const std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    m.fields[std::string(key)] = std::string(value);
    if (key == "READY") m.ready = value == "1";
    else if (key == "STOPPING") m.stopping = value == "1";
    else if (key == "RELOADING") m.reloading = value == "1";
    else if (key == "WATCHDOG") m.watchdog = value == "1";
    else if (key == "STATUS") m.status = std::string(value);
  }
  return m;
}

notify_socket::notify_socket(asio::io_context& io, std::string path) : sock_(io) {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "notify socket");
  auto fail = [&](int e, const std::string& what) {
    ::close(fd);
    throw std::system_error(e, std::generic_category(), what);
  };
  int on = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) fail(errno, "notify socket");
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  abstract_ = path.empty();
  if (abstract_) {
    // Autobind: binding with nothing but the family makes the kernel choose an unused abstract name. A name we
    // made up ourselves (from our pid, say) could be bound first by any local user, failing our start.
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa_family_t)) != 0) fail(errno, "notify socket");
    socklen_t len = sizeof sa;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) fail(errno, "notify socket");
    const auto name_len = len - offsetof(sockaddr_un, sun_path);
    if (name_len < 2 || sa.sun_path[0] != '\0') fail(EADDRNOTAVAIL, "notify socket: no abstract name");
    path.assign(sa.sun_path + 1, name_len - 1);
  } else {
    if (path.size() + 1 > sizeof sa.sun_path) fail(ENAMETOOLONG, "notify socket path");
    std::memcpy(sa.sun_path, path.data(), path.size());
    ::unlink(path.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), static_cast<socklen_t>(sizeof sa)) != 0)
      fail(errno, "notify socket " + path);
  }
  address_ = abstract_ ? "@" + path : path;
  sock_.assign(asio::local::datagram_protocol(), fd);
  wait();
}

notify_socket::~notify_socket() {
  error_code ignored;
  sock_.close(ignored);
  if (!abstract_) ::unlink(address_.c_str());
}

void notify_socket::wait() {
  sock_.async_wait(asio::socket_base::wait_read, [this](error_code ec) {
    if (ec) return;  // closed
    drain();
    wait();
  });
}

void notify_socket::drain() {
  char buf[4096];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
  for (;;) {
    iovec iov{buf, sizeof buf};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(sock_.native_handle(), &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return;  // EAGAIN: all read
    pid_t from = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        from = cred.pid;
      } else if (c->cmsg_type == SCM_RIGHTS) {
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          ::close(fd);
        }
      }
    }
    // A truncated datagram (over 4 KiB) is still parsed as far as it goes; systemd refuses those, we are lenient.
    if (handler_ && from > 0) handler_(from, parse_notify(std::string_view(buf, static_cast<std::size_t>(n))));
  }
}

notify_client notify_client::from_environment() {
  notify_client c;
  if (const char* v = std::getenv("NOTIFY_SOCKET")) c.address_ = v;
  ::unsetenv("NOTIFY_SOCKET");
  return c;
}

bool notify_client::send(std::string_view text) const {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (address_.empty() || address_.size() >= sizeof sa.sun_path) return false;
  std::memcpy(sa.sun_path, address_.data(), address_.size());
  if (address_[0] == '@') sa.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const auto n = ::sendto(fd, text.data(), text.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&sa),
                          static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size()));
  ::close(fd);
  return n == static_cast<ssize_t>(text.size());
}

}  // namespace clutch::supervisor
