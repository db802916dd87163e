// The primary's listening endpoints, one object each, in the scheduling policy the primary was given
// (cluster::settings::policy): one file per policy behind this interface.
//   shared_listener.cpp       one socket, duplicated to every worker; the kernel picks who accepts
//   reuseport_listener.cpp    one SO_REUSEPORT socket per slot, so that a replacement accepts what queued for the
//                             worker it replaces
//   round_robin_listener.cpp  the primary accepts and hands each connection to the worker with the fewest
//                             hand-offs it has not answered (Node's round-robin, least pending first)
// listeners.cpp keys them (as Node's primary keys a queryServer), answers CLUTCH_listen, and hands them the
// events of the workers.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/object.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "clutch/cluster.hpp"
#include "os/fd.hpp"

namespace clutch::cluster::detail {

struct primary_state;
struct worker_record;

class listener {
 public:
  listener(std::string key, asio::ip::tcp::endpoint bound, int backlog)
      : key(std::move(key)), bound(bound), backlog(backlog) {}
  virtual ~listener() = default;
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;

  const std::string key;
  const asio::ip::tcp::endpoint bound;  // the real address and port
  const int backlog;
  std::set<std::size_t> users;  // slots that listen here; the sockets close with the last

  // A worker listens here: what its CLUTCH_listen_reply carries besides {seq, address, port} (fields of reply, and
  // the socket to send with it), or an error to reply instead.
  virtual error_code join(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                          boost::json::object& reply, handle& h) = 0;
  // After the reply went out.
  virtual void joined(const std::shared_ptr<primary_state>&) {}
  // The socket a new worker of `slot` inherits at exec, or -1 (round-robin has none to give).
  virtual int inherited_fd(std::size_t slot) const = 0;
  // The worker takes no more connections from here (round-robin).
  virtual void stop_routing(const std::shared_ptr<primary_state>&, const std::shared_ptr<worker_record>&) {}
  // A worker answered a hand-off (round-robin).
  virtual void handoff_answer(const std::shared_ptr<primary_state>&, const std::shared_ptr<worker_record>&,
                              std::int64_t /*seq*/, bool /*accepted*/) {}
  // The slot is gone for good.
  virtual void release_slot(std::size_t /*slot*/) {}
  // No more accepting: the primary stops, or nobody listens here any more.
  virtual void close() {}
};

// Each binds its first socket; nullptr with ec set when it could not.
std::shared_ptr<listener> make_shared_listener(asio::io_context& io, std::string key, const asio::ip::tcp::endpoint& at,
                                               int backlog, error_code& ec);
std::shared_ptr<listener> make_reuseport_listener(asio::io_context& io, std::string key,
                                                  const asio::ip::tcp::endpoint& at, int backlog, error_code& ec);
std::shared_ptr<listener> make_round_robin_listener(asio::io_context& io, std::string key,
                                                    const asio::ip::tcp::endpoint& at, int backlog, error_code& ec);

// Shared by the policies (listeners.cpp): a listening socket the primary keeps (and duplicates for workers), not
// watched by its own io_context; a duplicate of a descriptor, to send.
error_code bind_socket(asio::io_context& io, const asio::ip::tcp::endpoint& at, int backlog, bool reuseport,
                       os::unique_fd& out, asio::ip::tcp::endpoint& bound);
handle dup_handle(int fd);

}  // namespace clutch::cluster::detail
