// clutch/app.hpp — the egg.js model: a master that only manages and forwards, one agent for background work, and
// app workers that serve, with a messenger that loses nothing.
//
//   int main() {
//     asio::io_context io;
//     switch (clutch::app::current_role()) {
//       case clutch::app::role::master: {
//         clutch::app::master m(io);                         // agent first, then the app workers (CPUs − 1)
//         return m.run([](const clutch::app::ready_info& r) { std::cout << r.url() << "\n"; });
//       }
//       case clutch::app::role::agent: {
//         auto& m = clutch::app::messenger::of(io);
//         m.on_request("stats", [](const json::value&, const clutch::app::sender&, clutch::app::responder r) {
//           r(json::object{{"hits", 1}}); });
//         clutch::app::ready(io);                                // the master now starts the app workers
//         break;
//       }
//       case clutch::app::role::app: {
//         auto& m = clutch::app::messenger::of(io);
//         m.send_to_agent("hello", "from an app worker");       // straight to the agent, not through the master
//         // cluster::listen(io, {tcp::v4(), 7001}, ...) as in clutch/cluster.hpp, then clutch::app::ready(io)
//         break;
//       }
//     }
//     io.run();
//   }
//
// Start order: the master forks the agent and waits until it calls ready(); then it forks the app workers (a
// cluster, clutch/cluster.hpp) and waits until every one of them has called ready(); then start() completes with
// the listening addresses and the pids. An agent or a worker that exits, fails to start, or is not ready in time
// during start-up fails start() with a message naming it (failure()), and everything started is stopped; run()
// then returns 1.
//
// The messenger is the same in every role. Each call names an action and carries one JSON value:
//   send_to_app    every app worker           send_to_agent   the agent
//   broadcast      the agent and every worker send_random     one app worker, chosen at random
//   send_to(pid)   that process               send_to_parent  the master's own parent (it forked the master)
//   request(to, action, data, timeout)        completes with the reply (an array of {pid, data} for several)
// Delivery: a message for a role that is not ready yet, or restarting, waits at the master (at most
// settings::queue_limit per role or process) and goes out once the role is ready. A message is acknowledged by
// the receiving process after its handlers ran; one whose receiver died first is sent again to the role's next
// process (a message for one pid fails instead). A message that cannot be delivered completes its token with an
// error (queue_full, no_such_process, undeliverable) and is counted in stats(): none is dropped silently. Across a
// crash of the receiver, a message is delivered at least once (the one being handled when it died comes again).
//
// Direct channels: the master gives the agent and each app worker the two ends of a socketpair. A worker's
// messages for the agent, and the agent's for one worker's pid (replies too), take it and never pass the master;
// app, broadcast and random go through the master, which knows who is ready. leader/follower (below) build on it.
//
// Faults: an agent that dies after start-up is replaced after settings::agent_restart_delay (about a second),
// longer each time it dies again soon after (×cluster.restart_backoff, up to cluster.max_restart_delay), and not
// at all after cluster.max_restarts such exits in a row (a run of cluster.stable_uptime ends a streak); messages
// for it wait meanwhile (and fail with undeliverable once it is given up), and workers learn the new pid
// (messenger::on_agent). An app worker that dies is replaced
// with the cluster's back-off. SIGTERM, SIGINT or SIGQUIT stop the master in order (app workers, then the agent,
// each with kill_timeout) and run() returns 0. Every role leads its own process group, which is stopped with it;
// and a role whose master dies, even by SIGKILL, ends its group at once, so nothing is left behind.
//
// Threads: one io_context on one thread per process, as everywhere in clutch.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch/cluster.hpp"
#include "clutch/error.hpp"

namespace clutch::app {

// parent is only ever a sender: the process that forked the master.
enum class role { master, agent, app, parent };
// This process's role, from CLUTCH_APP_ROLE (read once, then removed, so that the role's own children start as
// plain programs). The first call in an agent or app worker also arranges that its process group ends with it.
role current_role();
std::string_view to_string(role r) noexcept;

// Where a message goes.
struct destination {
  enum class kind { app, agent, all, random, pid, parent };
  kind what = kind::agent;
  int pid = 0;
  static destination app() { return {kind::app}; }
  static destination agent() { return {kind::agent}; }
  static destination all() { return {kind::all}; }
  static destination random() { return {kind::random}; }
  static destination process(int pid) { return {kind::pid, pid}; }
  static destination parent() { return {kind::parent}; }
};

struct sender {
  role from = role::master;
  int pid = 0;
};

namespace detail {
struct messenger_state;
struct responder_state;
using done_handler = asio::any_completion_handler<void(error_code)>;
using reply_handler = asio::any_completion_handler<void(error_code, boost::json::value)>;
void send(const std::shared_ptr<messenger_state>& m, const destination& to, std::string_view action,
          const boost::json::value& data, done_handler h);
void request(const std::shared_ptr<messenger_state>& m, const destination& to, std::string_view action,
             const boost::json::value& data, std::chrono::milliseconds timeout, reply_handler h);
}  // namespace detail

// Answers one request, once. A request whose every responder copy is gone unanswered fails with request_failed.
class responder {
 public:
  responder() = default;
  void operator()(boost::json::value reply) const;
  void fail(std::string_view why) const;
  explicit responder(std::shared_ptr<detail::responder_state> s) : state_(std::move(s)) {}

 private:
  std::shared_ptr<detail::responder_state> state_;
};

struct messenger_stats {
  std::uint64_t sent = 0;         // messages this process sent (one per call)
  std::uint64_t sent_direct = 0;  // of which over a direct channel
  std::uint64_t received = 0;     // messages delivered to this process's handlers
  std::uint64_t unhandled = 0;    // of which no handler took
  std::uint64_t undelivered = 0;  // messages from this process that could not be delivered
};

class messenger {
 public:
  using message_handler = std::function<void(const boost::json::value& data, const sender& from)>;
  using request_handler = std::function<void(const boost::json::value& data, const sender& from, responder reply)>;

  // This process's messenger. In an agent or app worker, the first call opens the channel to the master; in the
  // master, it is the master's (construct app::master first). Throws std::logic_error in a plain process.
  static messenger& of(asio::io_context& io);

  role self() const noexcept;
  int pid() const noexcept;
  int agent_pid() const noexcept;  // 0 until an agent is known

  void on(std::string action, message_handler h);
  // One handler per action; a request for an action without one fails with no_handler.
  void on_request(std::string action, request_handler h);
  // A new agent is ready (at start and after each restart), with its pid.
  void on_agent(std::function<void(int pid)> h);

  // Each send takes an optional completion token: void(error_code), once every receiver acknowledged the message,
  // or with the first error.
  template <typename Data, typename... Token>
  auto send_to_app(std::string_view action, Data&& data, Token&&... token) {
    return send(destination::app(), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }
  template <typename Data, typename... Token>
  auto send_to_agent(std::string_view action, Data&& data, Token&&... token) {
    return send(destination::agent(), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }
  template <typename Data, typename... Token>
  auto broadcast(std::string_view action, Data&& data, Token&&... token) {
    return send(destination::all(), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }
  template <typename Data, typename... Token>
  auto send_random(std::string_view action, Data&& data, Token&&... token) {
    return send(destination::random(), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }
  template <typename Data, typename... Token>
  auto send_to(int pid, std::string_view action, Data&& data, Token&&... token) {
    return send(destination::process(pid), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }
  template <typename Data, typename... Token>
  auto send_to_parent(std::string_view action, Data&& data, Token&&... token) {
    return send(destination::parent(), action, std::forward<Data>(data), std::forward<Token>(token)...);
  }

  // data is anything boost::json::value_from takes: a json::value, a string, a number, a map, a vector…
  template <typename Data>
  void send(const destination& to, std::string_view action, Data&& data) {
    detail::send(state_, to, action, boost::json::value_from(std::forward<Data>(data)), {});
  }
  template <typename Data, asio::completion_token_for<void(error_code)> CompletionToken>
  auto send(const destination& to, std::string_view action, Data&& data, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code)>(
        [](auto h, std::shared_ptr<detail::messenger_state> m, destination t, std::string a, boost::json::value d) {
          detail::send(m, t, a, d, std::move(h));
        },
        token, state_, to, std::string(action), boost::json::value_from(std::forward<Data>(data)));
  }

  // Completes with void(error_code, json::value): the reply; for app and all, an array of {pid, data} or
  // {pid, error}, one per receiver. timed_out if not complete by then (a late reply is dropped).
  template <typename Data, asio::completion_token_for<void(error_code, boost::json::value)> CompletionToken>
  auto request(const destination& to, std::string_view action, Data&& data, std::chrono::milliseconds timeout,
               CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, boost::json::value)>(
        [timeout](auto h, std::shared_ptr<detail::messenger_state> m, destination t, std::string a,
                  boost::json::value d) { detail::request(m, t, a, d, timeout, std::move(h)); },
        token, state_, to, std::string(action), boost::json::value_from(std::forward<Data>(data)));
  }

  messenger_stats stats() const noexcept;

  explicit messenger(std::shared_ptr<detail::messenger_state> s) : state_(std::move(s)) {}
  const std::shared_ptr<detail::messenger_state>& state() const noexcept { return state_; }

 private:
  std::shared_ptr<detail::messenger_state> state_;
};

// In an agent or app worker: this role is ready (its handlers are registered, and a worker listens). The master
// holds messages for it until then. In an app worker, this is also cluster::ready().
void ready(asio::io_context& io);
// In an agent or app worker: runs when the master asks this role to stop. The direct channels close after the
// handlers (what was sent still goes out), so the messenger keeps nothing running: finish open work and let
// io.run() return; the master kills the role's process group after settings::kill_timeout.
void on_stop(asio::io_context& io, std::function<void()> h);

// ---- The master ----

struct settings {
  // The agent's and the app workers' command: empty program is this executable; nullopt args are this process's
  // own arguments (argv[1…]).
  std::string agent_program{};
  std::optional<std::vector<std::string>> agent_args{};
  std::string app_program{};
  std::optional<std::vector<std::string>> app_args{};
  unsigned workers = 0;  // 0: CPUs minus one for the agent, at least one
  environment env{};
  std::string cwd{};
  // Roles' stdout/stderr come to the master as pipes instead of being inherited. When false, stdout is inherited
  // and stderr passes through the master, which keeps each role's last ten lines: a role that dies during start-up
  // is reported (failure()) with its exit and those lines.
  bool silent = false;
  std::chrono::milliseconds agent_start_timeout{30000};
  std::chrono::milliseconds app_start_timeout{30000};
  std::chrono::milliseconds agent_restart_delay{1000};  // the first wait before a restart (see Faults above)
  std::chrono::milliseconds kill_timeout{5000};  // per phase of a graceful stop, and for an agent asked to stop
  std::size_t queue_limit = 10000;               // messages waiting per role (or process) that is not ready
  bool direct = true;                            // agent↔worker socketpairs; false: everything through the master
  // The app workers' cluster: scheduling, restart policy and back-off. program, args, env, cwd, silent,
  // wait_ready, death_signal and kill_timeout are set from the fields above.
  cluster::settings cluster{};
};

struct ready_info {
  std::vector<asio::ip::tcp::endpoint> listening;  // where the app workers listen
  int agent_pid = 0;
  std::vector<int> app_pids;
  // "http://127.0.0.1:7001/" for the first listening address (0.0.0.0 shown as 127.0.0.1); empty if none.
  std::string url() const;
};

struct master_stats {
  std::uint64_t forwarded = 0;    // messages the master routed from one process to another
  std::uint64_t undelivered = 0;  // messages it could not deliver (each completed its token with an error)
  std::uint64_t queued = 0;       // messages waiting now for a role that is not ready
  unsigned agent_restarts = 0;
};

namespace detail {
struct master_state;
using start_handler = asio::any_completion_handler<void(error_code, ready_info)>;
void start(const std::shared_ptr<master_state>& m, start_handler h);
void stop(const std::shared_ptr<master_state>& m, done_handler h);
}  // namespace detail

class master {
 public:
  explicit master(asio::io_context& io, settings s = {});
  // Kills what is still running (each role's process group), without waiting.
  ~master();
  master(const master&) = delete;
  master& operator=(const master&) = delete;

  // Completes with void(error_code, ready_info) once the agent and every app worker are ready. On failure the
  // error is worker_failed or timed_out, failure() says who and why, and everything started has been stopped.
  template <asio::completion_token_for<void(error_code, ready_info)> CompletionToken>
  auto start(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, ready_info)>(
        [](auto h, std::shared_ptr<detail::master_state> m) { detail::start(m, std::move(h)); }, token, state_);
  }
  // Graceful stop: the app workers (each within kill_timeout), then the agent; each role's process group is gone
  // when it completes.
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto stop(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code)>(
        [](auto h, std::shared_ptr<detail::master_state> m) { detail::stop(m, std::move(h)); }, token, state_);
  }
  // start(), then stop on SIGTERM, SIGINT or SIGQUIT; runs the io_context until everything has stopped. Prints
  // the start-up failure to stderr. Returns the exit code: 0 after a stop, 1 if start-up failed.
  int run(std::function<void(const ready_info&)> on_ready = {});

  std::string failure() const;
  clutch::app::messenger& messenger() noexcept;
  cluster::primary& app_workers() noexcept;  // reload(), workers(), their events
  int agent_pid() const noexcept;            // 0 while there is none
  master_stats stats() const noexcept;
  const settings& config() const noexcept;

  // A role's process started (pid) or exited.
  void on_start(std::function<void(role, int pid)> h);
  void on_exit(std::function<void(role, int pid, const exit_status&)> h);

 private:
  std::shared_ptr<detail::master_state> state_;
};

// ---- Leader / follower (egg's cluster-client): the agent holds one upstream resource for every worker ----

// In the agent. Calls come from workers as requests; publish() pushes a topic's value to each subscribed worker
// over its direct channel, and keeps it, so that a worker subscribing later gets the current value at once.
class leader {
 public:
  explicit leader(messenger& m);
  void on_call(std::string name, messenger::request_handler h);
  void publish(const std::string& topic, boost::json::value value);
  std::size_t subscribers(const std::string& topic) const;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

// In an app worker. subscribe() survives agent restarts: the subscriptions are made again with each new agent.
class follower {
 public:
  explicit follower(messenger& m);
  void subscribe(std::string topic, std::function<void(const boost::json::value&)> h);
  template <typename Data, asio::completion_token_for<void(error_code, boost::json::value)> CompletionToken>
  auto call(std::string_view name, Data&& args, std::chrono::milliseconds timeout, CompletionToken&& token) {
    return messenger_.request(destination::agent(), call_action(name), std::forward<Data>(args), timeout,
                              std::forward<CompletionToken>(token));
  }

 private:
  static std::string call_action(std::string_view name);
  struct state;
  messenger messenger_;
  std::shared_ptr<state> state_;
};

}  // namespace clutch::app
