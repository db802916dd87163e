// The app master's state, shared by its two halves (private to src/app/):
//   router.cpp  where a message goes: queues for roles that are not ready, tracking, requeue after a death,
//               the direct agent<->worker channels
//   master.cpp  the lifecycle: start order, the agent's pool, the app workers' cluster, stderr, the ordered stop
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "app/link.hpp"
#include "app/messenger_state.hpp"
#include "clutch/app.hpp"
#include "cluster/slot_pool.hpp"
#include "common/handler_list.hpp"
#include "common/lines.hpp"
#include "os/self.hpp"

namespace clutch::app::detail {

using queue = std::deque<boost::json::object>;

// What a role writes to stderr comes through the master (unless settings::silent gives the pipes to the user):
// it is passed on to the master's own stderr as it comes, and while a start is under way (or failing) its last
// lines are kept, so that a role that dies then is reported with them instead of leaving the user to find them
// among everyone's output.
struct err_tail {
  ::clutch::detail::line_splitter split;
  ::clutch::detail::last_lines kept{10, 512};
  std::string text() const {
    std::string out;
    for (const auto& l : kept.lines()) out += "\n  | " + l;
    return out;
  }
};

// One agent or app worker process, from the master's side.
struct proc {
  role r = role::app;
  int pid = 0;
  int id = 0;  // the cluster's worker id
  std::size_t slot = 0;
  std::shared_ptr<link> l;
  bool ready = false;
  bool exited = false;
  bool asked_to_stop = false;
  queue held;                // messages for this pid, until it is ready
  forked_child agent_child;  // the agent's process
  child process;             // its process, whatever its role: what sweep_group ends its group through
  std::shared_ptr<err_tail> tail;  // when its stderr comes through us
};

// How long a role's stderr is still read after it exits, while something it left behind holds the pipe.
constexpr std::chrono::milliseconds stderr_grace{1000};

enum class phase { idle, agent, apps, running, stopping, stopped, failed };

struct master_state;

// The agent is a pool of one slot (cluster/slot_pool.hpp): its restarts back off from agent_restart_delay and
// are given up after the cluster's max_restarts in a row. The pool asks; the master starts and stops the process.
struct agent_driver final : cluster::detail::slot_driver {
  std::weak_ptr<master_state> m;
  void start(std::size_t slot, int id) override;
  bool stop(int id) override;
  void kill(int id) override;
};

struct master_state : std::enable_shared_from_this<master_state> {
  master_state(asio::io_context& io, settings s)
      : io(io),
        cfg(std::move(s)),
        start_timer(io),
        rng(static_cast<unsigned>(::getpid())),
        agent_pool(io, agent_driver_,
                   cluster::detail::one_helper(cfg.agent_restart_delay,
                                               {.factor = cfg.cluster.restart_backoff,
                                                .max = cfg.cluster.max_restart_delay,
                                                .stable_uptime = cfg.cluster.stable_uptime,
                                                .limit = cfg.cluster.max_restarts},
                                               cfg.kill_timeout)) {}

  asio::io_context& io;
  settings cfg;
  unsigned workers = 1;
  os::command agent_cmd;
  std::unique_ptr<cluster::primary> apps;
  std::shared_ptr<messenger_state> own;
  std::optional<clutch::app::messenger> facade;  // master::messenger()
  std::optional<channel> parent;

  std::shared_ptr<proc> agent;
  bool agent_given_up = false;  // crashed max_restarts times in a row: messages for it fail at once
  std::map<int, std::shared_ptr<proc>> procs;  // by pid, until they exit
  queue agent_queue, random_queue;
  std::map<std::size_t, queue> slot_queues;
  cluster::restart_policy restart = cluster::restart_policy::always;  // the apps' own, once started
  std::size_t slots = 0;              // app worker slots: settings::workers, more if app_workers().fork() adds some
  std::set<std::size_t> given_up;     // slots the cluster gave up (crash loop): nobody will read their messages
  struct tracker {
    int remaining = 0;
    error_code ec;
  };
  std::map<std::pair<int, std::int64_t>, tracker> trackers;  // (sender pid, id) of tracked messages in flight
  master_stats stats;

  phase ph = phase::idle;
  std::unique_ptr<start_handler> starting;
  std::string why;
  asio::steady_timer start_timer;
  std::vector<done_handler> stop_waiters;
  int sweeping = 0;  // process groups of exited roles still being emptied
  int reading = 0;   // roles' stderr pipes not yet at their end: a failed start waits for their last lines
  bool stderr_mid_line = false;  // what was last passed on to our stderr did not end a line
  std::shared_ptr<err_tail> failed_tail;  // the last lines of the role whose death failed the start
  std::minstd_rand rng;
  std::vector<asio::ip::tcp::endpoint> listening;

  ::clutch::detail::handler_list<role, int> on_start;
  ::clutch::detail::handler_list<role, int, const exit_status&> on_exit;

  agent_driver agent_driver_;
  cluster::detail::slot_pool agent_pool;  // after its driver: it goes first
};


// ---- router.cpp ----

// Messages waiting now for a role that is not ready.
std::size_t queued(const master_state& m);
// Where an envelope goes: a role, a slot, a pid, everyone, the parent; queued while its receiver is not ready.
void route(const std::shared_ptr<master_state>& m, boost::json::object env);
// A copy that cannot be delivered: counted, its tracker told, and a request answered with the error.
void fail_copy(const std::shared_ptr<master_state>& m, const boost::json::object& env, error_code ec);
// One copy was taken (acknowledged) or failed: the sender of a tracked message hears once every copy is settled.
void copy_settled(const std::shared_ptr<master_state>& m, int origin, std::int64_t id, bool track, error_code ec);
// A role died with messages it never acknowledged: those for its role go to the role's next process.
void requeue(const std::shared_ptr<master_state>& m, role r, std::size_t slot, std::deque<frame> lost);
bool deliverable(const proc& p);
void flush(queue& q, proc& p);
// Every queued message fails (undeliverable): the master is stopping.
void fail_queues(const std::shared_ptr<master_state>& m);
// The direct channel between the agent and this worker, and the agent's pid for it.
void pair_up(const std::shared_ptr<master_state>& m, proc& worker);
void tell_agent(const std::shared_ptr<master_state>& m, proc& worker);

}  // namespace clutch::app::detail
