// The supervisor engine's own state, shared by the files of its concerns (private to src/supervisor/):
//   engine.cpp        the engine's API, the slot pool's driver, start, exit, stop
//   readiness.cpp     when a worker is ready; NOTIFY_SOCKET's messages
//   watchdog.cpp      WATCHDOG=1 in time, or SIGABRT
//   memory_limit.cpp  a worker past max_memory is replaced (a reload of its slot)
//   routing.cpp       which workers new connections reach (steering), the drain before a stop
//   output.cpp        stdout and stderr through pipes, to on_output
//   node_cluster.cpp  Node's cluster protocol: a Node worker's listen() answered with clutch's sockets
#pragma once

#include <sys/types.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/json/value.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "clutch/ipc.hpp"
#include "cluster/reuseport_group.hpp"
#include "cluster/slot_pool.hpp"
#include "supervisor/engine.hpp"
#include "supervisor/notify.hpp"

namespace clutch::supervisor {

using cluster::detail::reuseport_group;
using clock = std::chrono::steady_clock;

struct worker {
  bool agent = false;  // the agent, outside the slots
  int id = 0;
  std::size_t slot = 0;
  child proc;
  int pid = 0;
  bool ready = false;
  bool asked_to_stop = false;
  bool exited = false;
  clock::time_point started{};
  std::optional<asio::steady_timer> ready_timer, watchdog_timer, drain_timer, probe_timer, grace_timer;
  std::vector<int> socks;  // its own listening sockets, by steered group (-1: none of that group)
  std::set<ino_t> inodes;  // every listening socket it got (--ready listen looks for them)
  // node_cluster: Node's channel to it, the sequence number of our next message, and the servers it listens
  // on (Node's key → its index in engine_state::node_servers).
  std::optional<channel> chan;
  std::int64_t seq = 0;
  std::map<std::string, std::size_t> servers;
  std::set<std::size_t> closed;  // steered groups it closed its server on: no new connections for it there
  bool protocol_error = false;   // said once
  bool preloaded = false;        // clutch's Node preload runs in it (node_preload.cjs): it stops as that says
  bool signalled = false;        // the stop signal has been sent
  bool asked_port = false;       // it asked for a server by address (listen(PORT)), not only for its LISTEN_FDS
};

// A server Node workers asked for (node_cluster): which of the engine's sockets answers it.
struct node_server {
  bool steered = false;
  std::size_t index = 0;     // into groups (steered) or listeners
  boost::json::value data;   // the first worker's _getServerData (TLS ticket keys), given to every worker
  std::string request;       // what it answers: Node's key without the call index, for a port's second server
};

// What the engine keeps of a slot besides the pool's view of it (which worker, restarts, reload, retired).
struct slot {
  std::vector<int> socks;  // the slot's members of the steered groups: a restarted worker gets them again
  int last_code = 0;  // of its last worker to exit: the code, or 128+signal
  clock::time_point last_exit{};
};

struct engine_state;

// The agent is a pool of one slot, for its back-off and crash-loop limit; its stop waits for the workers' end.
struct agent_driver final : cluster::detail::slot_driver {
  std::weak_ptr<engine_state> e;
  void start(std::size_t slot, int id) override;
  bool stop(int id) override;
  void kill(int id) override;
};

// The workers' lifecycle is a cluster::detail::slot_pool; the engine is its driver (start, stop with the drain,
// kill) and keeps what the pool does not know: sockets, readiness, the watchdog, the memory limit, output, the
// agent.
struct engine_state : std::enable_shared_from_this<engine_state>, cluster::detail::slot_driver {
  engine_state(asio::io_context& io, run_settings s)
      : io(io),
        cfg(std::move(s)),
        pool(io, *this,
             cluster::detail::pool_settings{.restart = cfg.restart,
                                            .backoff = cfg.backoff,
                                            .ready_timeout = std::chrono::milliseconds(0),  // readiness is ours
                                            .kill_timeout = cfg.kill_timeout}),
        agent_pool(io, agent_driver_,
                   cluster::detail::one_helper(cfg.agent_restart_delay, cfg.backoff, cfg.kill_timeout)) {}
  asio::io_context& io;
  run_settings cfg;
  std::vector<listener> listeners;        // shared by every worker: given ones, unix paths, TCP unless steered
  std::vector<reuseport_group> groups;    // steered TCP ones: a member per worker
  struct source {
    bool steered;
    std::size_t index;  // into listeners or groups
    std::string name;
  };
  std::vector<source> sources;  // what a worker gets at fds 3, 4, …, in this order
  std::vector<node_server> node_servers;  // what Node workers asked for (node_cluster.cpp)
  std::map<std::string, std::size_t> node_keys;  // Node's key of a server → node_servers
  std::map<std::size_t, int> spare_members;      // a new group's first member, until a worker takes it
  std::unique_ptr<notify_socket> notify;
  std::vector<slot> slots;                      // by the pool's slot index (sized on demand)
  std::map<int, std::shared_ptr<worker>> live;  // by pid
  std::map<int, std::shared_ptr<worker>> by_id;  // the pool's workers, until they exit
  std::set<int> sweeping;  // exited leaders held while what they left in their groups is ended
  bool stopping = false;
  std::vector<std::function<void()>> stop_waiters;
  std::function<void(error_code)> reload_cb;  // engine::reload's done (none for the memory limit's)
  bool destroyed = false;
  std::function<void(const std::string&)> log;
  std::function<void()> all_gone, ready;
  std::function<void(const process_tag&, int, std::string_view, bool)> output;
  std::function<void(const process_tag&, const exit_status&, bool)> exited;
  std::function<void(const process_tag&, const std::string&)> start_failed;
  std::function<void(const process_tag&)> started;
  std::function<void(std::string_view, const std::string&)> event;
  // What the log says ("clutch: " + text) and the timeline shows as an event of this kind (on_event).
  void announce(std::string_view kind, const std::string& text) {
    say("clutch: " + text);
    if (event) event(kind, text);
  }
  std::string last_error;    // the last start that failed or slot given up, in words
  std::string last_failure;  // the last start that failed or worker that crashed: what a give-up names
  std::optional<asio::steady_timer> memory_timer;
  std::shared_ptr<worker> agent;
  bool workers_started = false;
  bool was_ready = false;
  bool preload_missing_said = false;  // node_preload_path() gave none: said once
  cluster::detail::slot_pool pool;  // last: the pools go first
  agent_driver agent_driver_;
  cluster::detail::slot_pool agent_pool;

  // slot_driver
  void start(std::size_t slot, int id) override;
  bool stop(int id) override;
  void kill(int id) override;
  void reload_done(error_code ec) override;
  void stopped() override;
  std::shared_ptr<worker> worker_of(int id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : it->second;
  }
  slot& slot_of(std::size_t i) {
    if (slots.size() <= i) slots.resize(i + 1);
    return slots[i];
  }

  void say(const std::string& line) {
    if (log) log(line);
  }
  // Every bind error names the address: "127.0.0.1:8080: Address already in use".
  error_code failed_to_bind(const listen_spec& spec, error_code ec) {
    last_error = address_text(spec) + ": " + ec.message();
    return ec;
  }
};


namespace detail {

std::string who(const worker& w);
process_tag tag_of(const worker& w);

// engine.cpp
void start_workers(const std::shared_ptr<engine_state>& e);
void stop_worker(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// Its pool kills it kill_timeout from now unless it exits first.
void kill_at_deadline(engine_state& e, const worker& w);
// The stop signal, once (to its group, or its main process under kill_mode mixed), and the deadline from then.
void send_stop_signal(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// readiness.cpp
void watch_readiness(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
void mark_ready(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
void on_notify(const std::shared_ptr<engine_state>& e, pid_t from, const notify_message& m);
// watchdog.cpp
void feed_watchdog(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// memory_limit.cpp
void check_memory(const std::shared_ptr<engine_state>& e);
// routing.cpp
void resteer(const std::shared_ptr<engine_state>& e);
void drain_then_stop(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
void drop_sockets(engine_state& e, const std::vector<int>& socks);
void release_sockets(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// output.cpp
void pipe_output(const engine_state& e, options& o);
void pass_output(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// node_cluster.cpp
// Whether w speaks Node's cluster protocol (it was started with a channel, which is still open).
bool speaks_node(const worker& w);
void serve_node(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// Node's disconnect, then the stop signal once its channel closes (or kill_timeout has passed).
// Asks clutch's preload in the worker to stop it (node_preload.cjs); the stop signal at kill_timeout regardless.
void stop_through_preload(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
void disconnect_then_signal(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w);
// A member of group g for w: its own, else its slot's (not for a reload's replacement), else a new one.
int member_for(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, std::size_t g,
               error_code& ec);

}  // namespace detail
}  // namespace clutch::supervisor
