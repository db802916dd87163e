// clutch/cluster.hpp — Node's cluster for C++20: a primary forks workers that share listening ports.
//
//   int main() {
//     asio::io_context io;
//     if (clutch::cluster::is_primary()) {
//       clutch::cluster::primary p(io);                   // workers re-run this executable with the same arguments
//       p.on_listening([](clutch::cluster::worker& w, const asio::ip::tcp::endpoint& at) { ... });
//       for (int i = 0; i < 4; ++i) p.fork();
//       // SIGHUP: p.reload(cb) replaces the workers one at a time; SIGTERM: p.disconnect(cb) stops them gracefully.
//     } else {
//       clutch::cluster::listen(io, {asio::ip::tcp::v4(), 8080}, [](clutch::error_code ec, clutch::cluster::acceptor a) {
//         // a.async_accept(...) yields asio::ip::tcp::socket, as an asio acceptor does: hand it to Beast.
//       });
//       clutch::cluster::on_disconnect(io, [] { /* the primary asked us to stop: finish open connections */ });
//     }
//     io.run();
//   }
//
// Scheduling (how connections reach workers; settings::policy):
//   reuseport    the default. The primary holds one SO_REUSEPORT socket per worker slot and each worker accepts on
//                its slot's socket: the kernel spreads connections, no process wakes for nothing, and a crashed
//                worker's queued connections wait for its replacement. Retiring a slot for good (disconnect
//                without replacement, shutdown) resets the connections still queued on that slot's socket.
//   shared       every worker accepts on the primary's one listening socket. Nothing is queued per worker, so
//                nothing is lost when a worker goes, but an idle worker may win most accepts (no balancing).
//   round_robin  the primary accepts and hands each connection to the worker with the fewest hand-offs not yet
//                taken; a worker that refuses (it is stopping) or dies passes its untaken connections to another.
//                Fairest, and the only policy where the primary sees every connection; costs a hop per connection.
// An `exclusive` listen gives the worker a socket of its own, bound in the worker (Node's `exclusive: true`).
//
// Lifecycle of a worker: fork → online (it opened its channel) → listening (once per listen, with the real
// address) → disconnect (channel closed) → exit (code or signal). Each event fires once per worker, on the worker
// object first and then on the primary. A worker that exits without being asked is restarted by the restart
// policy; crashes in a row back off exponentially and, past max_restarts, end the slot with errc::crash_loop.
//
// Workers never outlive the primary: they get death_signal when it dies (PR_SET_PDEATHSIG), and a worker whose
// channel closes without its asking ends at once, with its own children: it SIGKILLs its process group. Each
// worker leads its own process group, and kill() and the disconnect deadline reach its children too.
//
// Threads: as everywhere in clutch, one io_context on one thread; nothing here is thread-safe.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch/error.hpp"
#include "clutch/ipc.hpp"

namespace clutch::cluster {

enum class scheduling { round_robin, shared, reuseport };
// always: any exit that was not asked for (disconnect(), kill(), reload) is followed by a new worker in the slot.
// on_failure: only a non-zero code or a signal. never: Node's behaviour.
enum class restart_policy { always, on_failure, never };

// The primary's settings (Node's setupPrimary, plus what PM2 and Gunicorn add).
struct settings {
  std::string program{};                         // empty: this executable, re-run
  std::optional<std::vector<std::string>> args{};  // nullopt: this process's own arguments (argv[1…])
  environment env{};                             // fork(vars) adds vars on top
  std::string cwd{};
  bool silent = false;  // workers' stdout/stderr come to the primary as pipes instead of being inherited
  // Workers' stderr alone comes as a pipe (worker.process().on_data(child::err, …)), for a primary that passes it
  // on and keeps its last lines. The pipe is read at most a second past the worker's exit (options::close_grace).
  bool pipe_stderr = false;
  scheduling policy = scheduling::reuseport;
  restart_policy restart = restart_policy::always;
  // Back-off between restarts after crashes in a row: restart_delay, ×restart_backoff each time, capped at
  // max_restart_delay. A worker that ran at least stable_uptime resets it, and is replaced at once.
  std::chrono::milliseconds restart_delay{100};
  double restart_backoff = 1.5;
  std::chrono::milliseconds max_restart_delay{15000};
  std::chrono::milliseconds stable_uptime{10000};
  unsigned max_restarts = 10;  // crashes in a row (each before stable_uptime) before the slot is given up
  // worker.disconnect(): how long a worker may take to finish before it (and its process group) gets SIGKILL.
  std::chrono::milliseconds kill_timeout{5000};
  // reload(): how long a new worker may take to become ready, and what ready means: its first listen, or, with
  // wait_ready, its call of cluster::ready().
  std::chrono::milliseconds ready_timeout{30000};
  bool wait_ready = false;
  signal_spec death_signal{SIGKILL};  // what a worker gets when the primary dies
};

enum class worker_state { none, online, listening, disconnected, dead };

namespace detail {
struct worker_record;
struct primary_state;
using done_handler = asio::any_completion_handler<void(error_code)>;
void reload(const std::shared_ptr<primary_state>& p, done_handler h);
void disconnect_all(const std::shared_ptr<primary_state>& p, done_handler h);
}  // namespace detail

// The primary's view of one worker process. Copies share the same worker.
class worker {
 public:
  worker() = default;
  int id() const noexcept;  // 1, 2, … in fork order; a restarted worker gets a new id
  // The worker's slot (0, 1, …): a restart or a reload puts the new worker in the old one's slot.
  std::size_t slot() const noexcept;
  forked_child& process() noexcept;
  worker_state state() const noexcept;
  // True once the exit, if any, was asked for (disconnect() or kill()): the restart policy leaves it alone.
  bool exited_after_disconnect() const noexcept;

  bool send(const boost::json::value& message);
  bool send(const boost::json::value& message, handle h);

  // Graceful stop: no more connections are routed to it, it is asked to close its listeners and finish, and it is
  // killed (with its process group) if it has not exited after settings::kill_timeout.
  void disconnect();
  // Marks the exit as asked for, closes the channel and signals the worker's process group.
  error_code kill(signal_spec sig = SIGTERM);

  void on_message(channel::message_handler h);
  void on_online(std::function<void()> h);
  void on_listening(std::function<void(const asio::ip::tcp::endpoint&)> h);
  void on_disconnect(std::function<void()> h);
  void on_exit(std::function<void(const exit_status&)> h);
  // The worker could not be started (spawn error), or its slot hit the crash-loop limit (errc::crash_loop).
  void on_error(std::function<void(error_code)> h);

  explicit worker(std::shared_ptr<detail::worker_record> r) : rec_(std::move(r)) {}
  const std::shared_ptr<detail::worker_record>& record() const noexcept { return rec_; }

 private:
  std::shared_ptr<detail::worker_record> rec_;
};

class primary {
 public:
  explicit primary(asio::io_context& io, settings s = {});
  // Stops restarting and closes every worker's channel: the workers exit, as they do when a primary process ends.
  ~primary();
  primary(const primary&) = delete;
  primary& operator=(const primary&) = delete;

  // Starts a worker in a new slot. vars are added to its environment (and kept for its restarts).
  worker fork();
  worker fork(const environment::map& vars);
  // Workers that have not exited, in id order.
  std::vector<worker> workers() const;
  const settings& config() const noexcept;
  // The restart policy from now on (egg's master holds restarts back while its start is under way: a worker that
  // dies then fails the start, and is not forked again).
  void set_restart(restart_policy r) noexcept;

  void on_fork(std::function<void(worker&)> h);
  void on_online(std::function<void(worker&)> h);
  void on_listening(std::function<void(worker&, const asio::ip::tcp::endpoint&)> h);
  void on_disconnect(std::function<void(worker&)> h);
  void on_exit(std::function<void(worker&, const exit_status&)> h);
  void on_message(std::function<void(worker&, const boost::json::value&, handle)> h);
  void on_error(std::function<void(worker&, error_code)> h);

  // Replaces every worker, one at a time: a new worker joins the slot, and only once it is ready is the old one
  // disconnected (and waited for). Completes with void(error_code): empty when all were replaced;
  // errc::reload_in_progress for a second reload; timed_out when a new worker was not ready within
  // ready_timeout, errc::worker_failed when it exited first — then the reload stops there and the remaining old
  // workers keep serving.
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto reload(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code)>(
        [](auto h, std::shared_ptr<detail::primary_state> p) { detail::reload(p, std::move(h)); }, token, state_);
  }
  // Node's cluster.disconnect(): disconnects every worker, restarts none, completes once all have exited.
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto disconnect(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code)>(
        [](auto h, std::shared_ptr<detail::primary_state> p) { detail::disconnect_all(p, std::move(h)); }, token,
        state_);
  }

 private:
  std::shared_ptr<detail::primary_state> state_;
};

// ---- In a worker ----

// A worker is a process the primary started (it finds CLUTCH_WORKER_ID in its environment, and removes it so that
// its own children do not think they are workers).
bool is_worker();
inline bool is_primary() { return !is_worker(); }
int worker_id();  // 0 in the primary

namespace detail {
struct acceptor_state;
using accept_handler = asio::any_completion_handler<void(error_code, asio::ip::tcp::socket)>;
void async_accept(const std::shared_ptr<acceptor_state>& a, accept_handler h);
}  // namespace detail

// A listening socket as the cluster gives it: async_accept has the shape of asio's, whatever the policy.
class acceptor {
 public:
  using executor_type = asio::any_io_executor;
  acceptor() = default;

  // Completes with void(error_code, asio::ip::tcp::socket); operation_aborted once the acceptor is closed (by
  // close(), or because the primary asked this worker to stop).
  template <asio::completion_token_for<void(error_code, asio::ip::tcp::socket)> CompletionToken>
  auto async_accept(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, asio::ip::tcp::socket)>(
        [](auto h, std::shared_ptr<detail::acceptor_state> a) { detail::async_accept(a, std::move(h)); }, token,
        state_);
  }
  asio::ip::tcp::endpoint local_endpoint() const;
  bool is_open() const noexcept;
  void close();
  executor_type get_executor() const;
  // The kernel socket, or nullptr under round_robin (connections then arrive from the primary).
  asio::ip::tcp::acceptor* native() noexcept;

  explicit acceptor(std::shared_ptr<detail::acceptor_state> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<detail::acceptor_state> state_;
};

struct listen_options {
  bool exclusive = false;  // a socket of this worker's own, bound here rather than shared through the primary
  int backlog = 511;
};

namespace detail {
using listen_handler = asio::any_completion_handler<void(error_code, cluster::acceptor)>;
void listen(asio::io_context& io, const asio::ip::tcp::endpoint& at, const listen_options& o, listen_handler h);
}  // namespace detail

// Listens on `at` through the primary: port 0 in every worker means one real port shared by all. Completes with
// void(error_code, acceptor); the error is the bind's (EADDRINUSE…), and the primary keeps running. Outside a
// worker, it simply binds here, so the same program also runs alone.
template <asio::completion_token_for<void(error_code, acceptor)> CompletionToken>
auto listen(asio::io_context& io, const asio::ip::tcp::endpoint& at, const listen_options& o,
            CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(error_code, acceptor)>(
      [&io](auto h, asio::ip::tcp::endpoint e, listen_options lo) { detail::listen(io, e, lo, std::move(h)); }, token,
      at, o);
}
template <asio::completion_token_for<void(error_code, acceptor)> CompletionToken>
auto listen(asio::io_context& io, const asio::ip::tcp::endpoint& at, CompletionToken&& token) {
  return listen(io, at, listen_options{}, std::forward<CompletionToken>(token));
}

// The channel to the primary, for the application's own messages (Node's process.send / process.on('message')).
// The first call of any function here opens it and tells the primary the worker is online. Throws
// std::logic_error outside a worker.
channel& to_primary(asio::io_context& io);
// Tells the primary this worker is ready (settings::wait_ready).
void ready(asio::io_context& io);
// Runs when the primary asks this worker to stop, after the listeners have been closed; the channel closes after
// the handlers return. The process should then finish its open work and let io.run() return.
void on_disconnect(asio::io_context& io, std::function<void()> h);
// Node's worker.disconnect() in the worker: leaves the cluster gracefully. The listeners close, the primary is
// told (its worker::exited_after_disconnect() is true, and the slot is not restarted: this is no crash), the
// on_disconnect handlers run, and the channel closes. The process finishes its open connections and exits 0 once
// io.run() returns.
void disconnect_self(asio::io_context& io);

}  // namespace clutch::cluster
