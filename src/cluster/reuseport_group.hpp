// Per-worker listening sockets on one port, and clutch choosing which of them new connections reach: a
// SO_REUSEPORT group whose classic BPF program (SO_ATTACH_REUSEPORT_CBPF) picks, at random, one of the members
// clutch names. A reload steers new connections to the replacement only, waits until the old worker's accept
// queue is empty, and only then gives the old worker its stop signal: a worker that dies at once loses no
// connection that was waiting for it.
//
//   cluster::detail::reuseport_group g(endpoint);
//   int a = g.add(ec), b = g.add(ec);   // one member per worker (the first binds; port 0 is chosen then)
//   g.steer({a});                       // new connections: a only; b keeps what it has queued
//   if (g.queued(b) == 0) ...            // its accept queue (TCP_INFO on a listener)
//   g.remove(b);                        // shut down and closed: leaves the group at once, whoever holds it
//
// The kernel keeps a group's members in an array, and the program returns an index into it: a member is appended
// when it starts listening, and a removed one is replaced by the last. This class mirrors that array.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <vector>

#include "clutch/error.hpp"
#include "os/fd.hpp"

// Offered by the cluster layer to the supervisor, whose engine steers each --listen this way.
namespace clutch::cluster::detail {

class reuseport_group {
 public:
  // The first member binds `at` (port 0: the kernel picks one); the others join on the port it got.
  explicit reuseport_group(boost::asio::ip::tcp::endpoint at) : at_(at) {}
  // Every member leaves the group (shut down), even where a process still holds a copy.
  ~reuseport_group();
  reuseport_group(reuseport_group&&) = default;
  reuseport_group& operator=(reuseport_group&&) = default;

  // A new member, bound and listening (owned here); -1 with ec set when it could not be opened.
  int add(error_code& ec);
  void remove(int fd);
  // New connections go to these members only, at random; with none named, to every member.
  error_code steer(std::vector<int> fds);
  // Connections in fd's accept queue, not yet accepted.
  std::size_t queued(int fd) const;

  const boost::asio::ip::tcp::endpoint& bound() const noexcept { return bound_; }

 private:
  error_code attach();
  boost::asio::ip::tcp::endpoint at_;
  boost::asio::ip::tcp::endpoint bound_;
  std::vector<os::unique_fd> members_;  // in the kernel's order
  std::vector<int> steered_;
};

}  // namespace clutch::cluster::detail
