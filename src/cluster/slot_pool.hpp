// The lifecycle of N workers, without the processes: slots, restarts with back-off and a crash-loop limit, a
// fail-safe rolling reload, scale, and a graceful stop with a kill deadline. The cluster's primary drives one;
// the layers above may too (this header is what the cluster layer offers them for that).
//
//   struct my_driver : cluster::detail::slot_driver {
//     void start(std::size_t slot, int id) override { ... }  // a process for the slot, known by id from now on
//     void stop(int id) override { ... }                     // ask it to end (disconnect, stop signal)
//     void kill(int id) override { ... }                     // end it now
//   } d;
//   cluster::detail::slot_pool pool(io, d, {.restart = restart_policy::always});
//   pool.add_slot();                       // starts a worker in a new slot
//   pool.ready(id);                        // the driver saw it become ready
//   pool.exited(id, status);               // the driver saw it exit (or fail to start): restart, retire or give up
//   pool.reload();  pool.stop();           // the driver hears reload_done(ec) and stopped()
//
// A driver reports what happened to a worker later (ready(), exited()), never from inside one of its own
// start/stop/kill calls: the pool is not re-entered while it changes its slots.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "clutch/cluster.hpp"
#include "common/backoff.hpp"

namespace clutch::cluster::detail {

// A slot as `clutch ls` would name it.
enum class slot_state {
  starting,  // its worker is starting (or a restart waits for its back-off)
  ready,     // its worker said it is ready
  stopping,  // its worker was asked to end, and it is not to be replaced (a stop, a scale-down, its own leaving)
  exited,    // no worker, and none will come: the restart policy said so, or it was asked to end
  errored,   // given up: it crashed too often in a row
};

// What the pool asks of whoever owns the processes.
class slot_driver {
 public:
  virtual ~slot_driver() = default;
  // A new process for `slot`, known as worker `id` from now on (ids count up from 1 and are never reused). The pool
  // already lists it (current() or, for a reload's replacement, incoming()). A start that fails is reported as an
  // exit (exited()), later.
  virtual void start(std::size_t slot, int id) = 0;
  // Asks worker `id` to end gracefully; the pool kills it kill_timeout later if it is still there. true: asked now;
  // false: the driver asks later (after a drain, after the workers an agent serves) and then calls
  // kill_at_deadline(id), from when the deadline counts.
  virtual bool stop(int id) = 0;
  // Ends worker `id` now.
  virtual void kill(int id) = 0;
  // The slot has no worker and will not get one (exited or errored): what belongs to it may go.
  virtual void retired(std::size_t /*slot*/) {}
  // A reload ended: {} when every slot was replaced; timed_out, worker_failed; operation_aborted by a stop.
  virtual void reload_done(error_code /*ec*/) {}
  // After stop(): every worker has exited.
  virtual void stopped() {}
};

struct pool_settings {
  restart_policy restart = restart_policy::always;
  ::clutch::detail::backoff_policy backoff{};
  // A reload's replacement not ready by then fails the reload (and is killed). 0: the driver times readiness.
  std::chrono::milliseconds ready_timeout{30000};
  // From the stop signal to kill(), if it has not exited by then.
  std::chrono::milliseconds kill_timeout{5000};
};

// For a pool of one helper process (an agent): always restarted, after `first` even at its first exit, then
// backing off as `like` says (its factor, max, stable_uptime and limit); readiness is the driver's.
inline pool_settings one_helper(std::chrono::milliseconds first, const ::clutch::detail::backoff_policy& like,
                                std::chrono::milliseconds kill_timeout) {
  return {.restart = restart_policy::always,
          .backoff = {.first = first,
                      .factor = like.factor,
                      .max = std::max(like.max, first),
                      .stable_uptime = like.stable_uptime,
                      .limit = like.limit,
                      .first_at_once = false},
          .ready_timeout = std::chrono::milliseconds(0),
          .kill_timeout = kill_timeout};
}

// What became of a slot when its worker exited.
enum class exit_outcome {
  none,        // the worker was not the slot's (a reload's old or failed new one, a removed slot's)
  restarting,  // a new worker starts now or after the back-off
  retired,     // no restart: by the restart policy, or it was asked to end
  given_up,    // no restart: the crash-loop limit
};

class slot_pool {
 public:
  slot_pool(asio::io_context& io, slot_driver& driver, pool_settings s);
  // Its timers go with it; it tells the driver nothing more (abandon() first to end a reload).
  ~slot_pool();
  slot_pool(const slot_pool&) = delete;
  slot_pool& operator=(const slot_pool&) = delete;

  pool_settings& settings() noexcept;

  // A new slot, and its first worker starts now (even during a stop: it is not one of those asked to end).
  std::size_t add_slot();
  // n ≥ 1 slots wanted: up, removed slots come back first, then new ones, each starting a worker; down, the
  // last slots are removed and their workers asked to stop. A reload under way skips removed slots.
  void scale(std::size_t n);

  // Events of a worker, from the driver.
  void ready(int id);
  exit_outcome exited(int id, const exit_status& status);

  // Asks one worker to end (kill at the deadline); its slot is retired when it exits. Once per worker.
  void stop_worker(int id);
  // kill(id) kill_timeout from now unless it exits first (armed once per worker): after a stop the driver asked
  // for itself (its stop() returned false), or after a watchdog's SIGABRT (whose exit counts as a crash: the slot
  // restarts).
  void kill_at_deadline(int id);
  // A reload's replacement that is not ready in time, for a driver that times readiness itself (ready_timeout 0):
  // the reload fails with timed_out and the replacement is killed. Any other worker: nothing.
  void not_ready(int id);
  // The worker ends by itself or by the driver's hand (a kill the user asked for, a disconnect it started): its
  // slot is retired when it exits, not restarted.
  void let_go(int id);

  // One slot at a time, in order: a new worker, ready, then the old one is asked to stop and waited for. On a
  // failure the reload stops there and the old workers stay. Returns false (and changes nothing) when a reload
  // is under way or the pool is stopping. Only `slots` if given (a memory limit replaces one worker).
  bool reload();
  bool reload(const std::vector<std::size_t>& slots);
  // Every worker is asked to stop; restarts and a reload end (reload_done(operation_aborted)); stopped() once the
  // last worker has exited (at once if none runs). After that the pool takes new slots and reloads again.
  void stop();
  // As stop() without asking anything of a worker: the owner goes away. A reload ends with operation_aborted.
  void abandon();

  // What it knows.
  std::size_t size() const noexcept;           // slots, removed ones too (their indices stay)
  std::size_t wanted() const noexcept;         // slots not removed
  slot_state state(std::size_t slot) const;
  bool removed(std::size_t slot) const;
  bool retired(std::size_t slot) const;        // it has no worker and will get none (exited, errored, removed)
  int current(std::size_t slot) const;         // its worker's id, 0 if none
  int incoming(std::size_t slot) const;        // a reload's replacement, not yet ready; 0 if none
  unsigned restarts(std::size_t slot) const;   // how many times a worker was started again in it
  std::chrono::milliseconds restart_delay(std::size_t slot) const;  // the back-off chosen at its last exit
  bool reloading() const noexcept;
  std::optional<std::size_t> next_in_reload() const;  // the slot a reload replaces after the current one
  bool stopping() const noexcept;
  bool all_ready() const noexcept;             // every slot wanted has a ready worker, or is retired

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace clutch::cluster::detail
