// The primary's bookkeeping: worker records, the slot pool that decides when a worker starts and ends (restarts,
// back-off, reload, stop: slot_pool.hpp), and the listening sockets it owns on the workers' behalf.
//
// The primary is the pool's driver: the pool says "start a worker for slot 2 as id 7", "disconnect 5", "kill 5";
// the primary makes the process and reports back when it is ready (listening, or CLUTCH_ready) and when it
// exits. What a slot keeps beyond the pool's view: its environment, and its reuseport sockets (listeners.cpp),
// so that a replacement accepts what queued for the worker it replaces.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "clutch/cluster.hpp"
#include "cluster/listener.hpp"
#include "cluster/slot_pool.hpp"
#include "common/handler_list.hpp"
#include "os/fd.hpp"

namespace clutch::cluster::detail {

using clock = std::chrono::steady_clock;

struct worker_record {
  std::weak_ptr<primary_state> owner;
  int id = 0;
  std::size_t slot = 0;
  forked_child proc;
  worker_state state = worker_state::none;
  bool asked_to_exit = false;  // exited_after_disconnect
  bool fork_emitted = false;
  bool disconnect_emitted = false;
  bool exit_emitted = false;
  bool routable = true;  // may be given round-robin connections
  std::size_t rr_pending = 0;  // round-robin hand-offs it has not answered

  ::clutch::detail::handler_list<const boost::json::value&, handle> on_message;
  ::clutch::detail::handler_list<> on_online;
  ::clutch::detail::handler_list<const asio::ip::tcp::endpoint&> on_listening;
  ::clutch::detail::handler_list<> on_disconnect;
  ::clutch::detail::handler_list<const exit_status&> on_exit;
  ::clutch::detail::handler_list<error_code> on_error;

  bool alive() const noexcept { return state != worker_state::dead; }
};


struct primary_state : std::enable_shared_from_this<primary_state>, slot_driver {
  primary_state(asio::io_context& io, settings s);

  asio::io_context& io;
  settings cfg;
  std::string program;
  std::vector<std::string> args;
  std::optional<std::string> argv0;
  std::int64_t next_seq = 1;
  std::vector<environment::map> slot_vars;             // by slot: what fork(vars) was given
  std::map<int, std::shared_ptr<worker_record>> live;  // not yet exited
  std::map<std::string, std::shared_ptr<listener>> listeners;
  // Boost 1.81's any_completion_handler recurses forever on move-assignment: it is only ever move-constructed.
  std::unique_ptr<done_handler> reload_waiter;
  std::vector<done_handler> stop_waiters;
  slot_pool pool;  // last: it goes first, before what its driver calls use

  // slot_driver
  void start(std::size_t slot, int id) override;
  bool stop(int id) override;
  void kill(int id) override;
  void retired(std::size_t slot) override;
  void reload_done(error_code ec) override;
  void stopped() override;

  ::clutch::detail::handler_list<worker&> on_fork, on_online, on_disconnect;
  ::clutch::detail::handler_list<worker&, const asio::ip::tcp::endpoint&> on_listening;
  ::clutch::detail::handler_list<worker&, const exit_status&> on_exit;
  ::clutch::detail::handler_list<worker&, const boost::json::value&, handle> on_message;
  ::clutch::detail::handler_list<worker&, error_code> on_error;
};

// primary.cpp
void disconnect_worker(const std::shared_ptr<worker_record>& w);
// Its exit was asked for (a disconnect, a kill, its own leaving): no more connections, and its slot is retired.
void let_go(primary_state& p, const std::shared_ptr<worker_record>& w);

// listeners.cpp
void handle_listen(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                   const boost::json::value& msg);
void handle_handoff_answer(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                           const boost::json::value& msg, bool accepted);
// The worker takes no more round-robin connections; what it was given and had not taken goes to the others.
void stop_routing(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w);
// The slot is gone for good: its reuseport sockets close, and listeners nobody uses any more with them.
void release_slot(const std::shared_ptr<primary_state>& p, std::size_t slot);
void close_listeners(primary_state& p);
// The sockets a new worker in `slot` inherits at exec: the shared and reuseport listeners that the slot's earlier
// workers used, so that a replacement's listen() needs no round trip to the primary. Each as {key, fd (its number
// in the worker), address, port}, with the primary's descriptor to put there.
struct inherited_listener {
  boost::json::object entry;
  int fd;
};
std::vector<inherited_listener> listeners_for(const std::shared_ptr<primary_state>& p, std::size_t slot,
                                              int first_fd);

}  // namespace clutch::cluster::detail
