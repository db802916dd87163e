// Opening a listening TCP socket: the cluster's primary for the sockets it shares, a worker for an exclusive one,
// and the supervisor for its own.
//
//   tcp::endpoint bound;
//   if (auto ec = detail::open_listener(acceptor, {address, port}, 511, /*reuseport=*/false, bound)) ...
#pragma once

#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <cerrno>

#include "clutch/error.hpp"

namespace clutch::detail {

// Opens a on at's protocol with SO_REUSEADDR (and SO_REUSEPORT when asked), binds and listens. Returns the first
// error; `bound` gets the real address (port 0 becomes the port the kernel chose).
inline error_code open_listener(boost::asio::ip::tcp::acceptor& a, const boost::asio::ip::tcp::endpoint& at,
                                int backlog, bool reuseport, boost::asio::ip::tcp::endpoint& bound) {
  error_code ec;
  if (a.open(at.protocol(), ec) || a.set_option(boost::asio::ip::tcp::acceptor::reuse_address(true), ec)) return ec;
  int one = 1;
  if (reuseport && ::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
    return {errno, boost::system::system_category()};
  if (a.bind(at, ec) || a.listen(backlog, ec)) return ec;
  bound = a.local_endpoint(ec);
  return ec;
}

}  // namespace clutch::detail
