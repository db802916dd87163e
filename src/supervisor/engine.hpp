// The engine behind `clutch run`: N copies of any program, sharing the sockets clutch binds (systemd's
// LISTEN_FDS), restarted with back-off, reloaded one slot at a time, and stopped as whole process trees.
//
//   supervisor::engine e(io, {.program = "node", .args = {"server.js"}, .workers = 2, .listen = {spec}});
//   e.on_log([](const std::string& line) { std::cerr << line << "\n"; });
//   if (auto ec = e.start()) { ... }      // binds every listener, then starts every worker
//   e.reload([](clutch::error_code) {});  // SIGHUP: a replacement is ready before its old worker is touched
//   e.stop([&] { return e.exit_code(); });  // SIGTERM: the stop signal to each worker's group, SIGKILL at the deadline
//
// Readiness (run_settings::ready): none — a worker is ready once it runs (the sockets are clutch's, so nothing
// that connects meanwhile is lost: it waits in the backlog); notify — once it sends READY=1 to NOTIFY_SOCKET
// (sd_notify), from its own pid or any process of its group. The same socket takes WATCHDOG=1 and STATUS=.
// listen — once a process of its tree waits for connections on one of its sockets (accepting.hpp): for programs
// that say nothing, but take a while before they accept; a Node cluster worker also by its `listening` message.
// message — once a Node cluster worker sends 'ready' (process.send('ready'), as PM2's wait_ready).
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/backoff.hpp"
#include "clutch/child_process.hpp"
#include "clutch/cluster.hpp"
#include "supervisor/listen.hpp"

namespace clutch::supervisor {

// message: a Node worker's process.send('ready') (PM2's wait_ready); node_cluster only.
enum class ready_mode { none, notify, listen, message };

struct run_settings {
  std::string program;
  std::vector<std::string> args;
  std::string cwd;               // empty: clutch's own
  environment::map env;          // added to clutch's environment (the agent gets them too)
  // The environment the processes start from instead of clutch's own: the daemon's apps get the one of the
  // `clutch start` that started them, as PM2's do (env is then added to it).
  // Shared, not copied: the apps of one `clutch start FILE` share one, and the engine's settings copy it freely.
  std::shared_ptr<const environment::map> base_env;
  std::optional<uid_t> uid;      // the user the workers and the agent run as (PM2's uid); unset: clutch's
  std::optional<gid_t> gid;
  unsigned workers = 1;
  std::vector<listen_spec> listen;
  // TCP listen specs: a socket per worker in one SO_REUSEPORT group, with clutch steering new connections away
  // from a worker about to be stopped (cluster/reuseport_group.hpp). false: one socket that every worker shares.
  bool steer = true;
  // The agent (egg's model): a command run by /bin/sh -c, started first; the workers start once it is ready (as
  // `ready` says), and it is stopped after every worker. Empty: no agent. It is restarted agent_restart_delay after
  // it dies, longer each time it dies again soon after (backoff's factor, max and stable_uptime), and given up
  // after backoff.limit such exits in a row.
  std::string agent;
  std::chrono::milliseconds agent_restart_delay{1000};
  ready_mode ready = ready_mode::none;
  // Node's cluster protocol (node_cluster.cpp): every worker gets a channel (NODE_CHANNEL_FD, after its sockets)
  // and NODE_UNIQUE_ID, so that cluster.isWorker is true inside and Node's net asks clutch for every listen():
  // an address `listen` names gets the worker's own socket of that group, any other is bound on first request and
  // shared by the app's workers the same way. A stop sends Node's disconnect first (the worker closes its servers
  // and finishes what is in flight), then the stop signal once its channel closes or kill_timeout has passed.
  bool node_cluster = false;
  // node_cluster: the message 'shutdown' goes to a worker just before its stop signal (PM2's shutdown_with_message).
  bool shutdown_message = false;
  // node_cluster: false sends the stop signal first, as PM2 does, to an app whose handler stops it gracefully
  // (Node's disconnect closes its servers with http.Server.close, which drops kept-alive connections idle at
  // that moment). A worker that took only LISTEN_FDS sockets gets the signal first anyway.
  bool disconnect_first = true;
  // The variable that holds a worker's slot, 0…N−1, kept by every replacement in that slot (PM2's instance_var).
  std::string instance_var = "NODE_APP_INSTANCE";
  signal_spec stop_signal{SIGTERM};
  std::chrono::milliseconds kill_timeout{5000};   // stop signal → SIGKILL of the worker's whole group
  // kill_mode = "mixed" (systemd's): the stop signal goes to the worker's main process only, for programs that
  // stop their own children (a gunicorn master, a Node app with child processes); SIGKILL still goes to the whole
  // group at kill_timeout, and what the main process leaves behind is ended too. false ("group"): the stop
  // signal goes to the whole group.
  bool kill_mixed = false;
  std::chrono::milliseconds ready_timeout{30000};  // notify, listen: a worker not ready by then is killed (restarted)
  // A worker must send WATCHDOG=1 at least this often (it gets WATCHDOG_USEC, as from systemd); one that misses
  // gets SIGABRT, SIGKILL after kill_timeout, and is replaced. 0: no watchdog.
  std::chrono::milliseconds watchdog{0};
  // A ready worker whose resident memory passes this many bytes is replaced gracefully, as in a reload of its
  // slot (checked every memory_check). 0: no limit.
  std::uint64_t max_memory = 0;
  std::chrono::milliseconds memory_check{1000};
  cluster::restart_policy restart = cluster::restart_policy::always;
  // As PM2's min_uptime: a worker that ran a second is restarted at once; faster exits in a row back off.
  ::clutch::detail::backoff_policy backoff{.stable_uptime = std::chrono::seconds(1)};
};

// One of the engine's processes, as events and snapshots name it.
struct process_tag {
  int id = 0;  // the worker id (CLUTCH_WORKER_ID); 0 for the agent
  bool agent = false;
  int pid = 0;
  std::size_t slot = 0;  // its instance (NODE_APP_INSTANCE): kept by each replacement in it; 0 for the agent
};

// A worker's own listening socket of a steered group, as the kernel sees it now (TCP_INFO on a listener):
// connections that wait in its accept queue, and the queue's size (the listen backlog).
struct accept_queue {
  std::string address;  // "HOST:PORT", as addresses() writes it
  unsigned waiting = 0;
  unsigned backlog = 0;
};

struct process_info {
  process_tag tag;
  std::size_t slot = 0;
  enum class state { starting, ready, stopping } state = state::starting;
  std::chrono::steady_clock::time_point started{};
  unsigned restarts = 0;  // its slot's (the agent's own) restarts so far
  std::vector<accept_queue> queues;  // a worker's steered sockets (none for the agent, shared or Unix ones)
};

struct engine_state;

class engine {
 public:
  engine(asio::io_context& io, run_settings s);
  // Kills every worker's group at once.
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Sockets clutch was given (systemd socket activation): the workers get them first, before --listen's.
  void adopt(std::vector<listener> ls);
  // Binds the listeners (a failure is returned, and nothing is started; last_error() names the address), then
  // starts the workers.
  error_code start();
  // One slot at a time: a new worker, ready, then the old one gets the stop signal and is waited for. done gets
  // reload_in_progress, timed_out (a new worker not ready in ready_timeout) or worker_failed (it exited first);
  // then the reload stops there and the old workers stay.
  void reload(std::function<void(error_code)> done);
  // The settings the workers started from now on get (a reload's replacements, restarts): program, args, cwd,
  // env, readiness, stop signal, timeouts, watchdog, memory limit, restart policy. The sockets, the agent and
  // the number of workers stay as they are (scale() changes that).
  void set_settings(const run_settings& next);
  // Every worker gets the stop signal (its whole group), SIGKILL at kill_timeout; done once every group is empty.
  void stop(std::function<void()> done);

  // Passes a signal on to every worker's group and the agent's (SIGUSR1, SIGUSR2: what the program makes of them).
  void signal_all(int sig);

  // What the workers listen on, in the order they get the sockets: "HOST:PORT" (the real port) or "unix:PATH".
  std::vector<std::string> addresses() const;
  // The processes that are ours: the workers and agent running now, and exited ones held unreaped while what
  // they left in their process groups is ended (an orphan reaper must leave all of them alone).
  std::vector<int> pids() const;
  // How it ended: 0 if every worker's last exit was code 0, else the last other one: its code, or 128+signal.
  int exit_code() const noexcept;
  void on_log(std::function<void(const std::string&)> h);
  // Every worker of the first start is ready (once).
  void on_ready(std::function<void()> h);
  // No worker runs and none will be started again (every slot ended by the restart policy or a crash loop).
  void on_all_gone(std::function<void()> h);
  // Set before start(): every process's stdout and stderr (stream 1 or 2) come here through pipes, in chunks as
  // read; the last call for a stream has end = true (every writer, grandchildren too, has closed it). Without it,
  // they share clutch's own.
  void on_output(std::function<void(const process_tag&, int stream, std::string_view data, bool end)> h);
  // What happened, for a timeline: kind "memory" (a worker over max_memory is replaced), "given_up" (a slot or
  // the agent crashed too often in a row), "reload" (one began), "reloaded" (it ended: text says how). text is
  // the log's sentence.
  void on_event(std::function<void(std::string_view kind, const std::string& text)> h);
  // A process started (the agent or a worker), with its pid.
  void on_start(std::function<void(const process_tag&)> h);
  // A process exited (asked_to: it had been asked to stop, by a stop, a reload, a scale-down or a watchdog).
  void on_exit(std::function<void(const process_tag&, const exit_status&, bool asked_to)> h);

  // A worker or the agent could not be started (the program is missing, its cwd, a socket, EMFILE, …): why, in
  // words ("worker 3 could not start: spawn failed at chdir: No such file or directory"). Its slot counts it as
  // an exit: restarted with back-off, given up after the crash-loop limit. tag.pid is 0.
  void on_start_failed(std::function<void(const process_tag&, const std::string&)> h);
  // The last start that failed, or the last slot given up, in words; empty if none.
  std::string last_error() const;
  // Slots given up after the crash-loop limit (errored), among those wanted now.
  unsigned errored_slots() const noexcept;

  // The processes running now (the agent first, then the workers by slot).
  std::vector<process_info> processes() const;
  // Workers wanted now (scale() changes it).
  unsigned workers() const noexcept;
  // Up: new slots start at once; down: the last slots' workers get the stop signal. n ≥ 1.
  void scale(unsigned n);

 private:
  std::shared_ptr<engine_state> state_;
};

}  // namespace clutch::supervisor
