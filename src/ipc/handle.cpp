#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <utility>

#include "clutch/ipc.hpp"

namespace clutch {

namespace {

handle::kind detect(int fd) {
  int domain = 0, listening = 0, type = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return handle::kind::none;
  len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return handle::kind::none;
  len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) return handle::kind::none;
  if (domain == AF_INET || domain == AF_INET6) return listening ? handle::kind::tcp_server : handle::kind::tcp_socket;
  if (domain == AF_UNIX) return listening ? handle::kind::unix_server : handle::kind::unix_socket;
  return handle::kind::none;
}

// The protocol an Asio TCP object needs for an existing descriptor.
asio::ip::tcp tcp_protocol(int fd) {
  int domain = AF_INET;
  socklen_t len = sizeof domain;
  ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len);
  return domain == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
}

}  // namespace

handle::handle(int fd) : fd_(fd), kind_(fd >= 0 ? detect(fd) : kind::none) {}
handle::handle(asio::ip::tcp::socket&& s) : handle(s.release()) {}
handle::handle(asio::ip::tcp::acceptor&& a) : handle(a.release()) {}
handle::handle(asio::local::stream_protocol::socket&& s) : handle(s.release()) {}
handle::handle(asio::local::stream_protocol::acceptor&& a) : handle(a.release()) {}
handle::handle(handle&& o) noexcept : fd_(std::exchange(o.fd_, -1)), kind_(std::exchange(o.kind_, kind::none)) {}
handle& handle::operator=(handle&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    kind_ = std::exchange(o.kind_, kind::none);
  }
  return *this;
}
handle::~handle() {
  if (fd_ >= 0) ::close(fd_);
}

int handle::release() noexcept {
  kind_ = kind::none;
  return std::exchange(fd_, -1);
}

const char* handle::node_type() const noexcept {
  return kind_ == kind::tcp_server || kind_ == kind::unix_server ? "net.Server" : "net.Socket";
}

asio::ip::tcp::socket handle::tcp_socket(const asio::any_io_executor& ex) && {
  if (kind_ != kind::tcp_socket) throw std::logic_error("clutch::handle: not a connected TCP socket");
  auto proto = tcp_protocol(fd_);
  return asio::ip::tcp::socket(ex, proto, release());
}
asio::ip::tcp::acceptor handle::tcp_acceptor(const asio::any_io_executor& ex) && {
  if (kind_ != kind::tcp_server) throw std::logic_error("clutch::handle: not a listening TCP socket");
  auto proto = tcp_protocol(fd_);
  return asio::ip::tcp::acceptor(ex, proto, release());
}
asio::local::stream_protocol::socket handle::unix_socket(const asio::any_io_executor& ex) && {
  if (kind_ != kind::unix_socket) throw std::logic_error("clutch::handle: not a connected Unix socket");
  return asio::local::stream_protocol::socket(ex, asio::local::stream_protocol(), release());
}
asio::local::stream_protocol::acceptor handle::unix_acceptor(const asio::any_io_executor& ex) && {
  if (kind_ != kind::unix_server) throw std::logic_error("clutch::handle: not a listening Unix socket");
  return asio::local::stream_protocol::acceptor(ex, asio::local::stream_protocol(), release());
}

}  // namespace clutch
