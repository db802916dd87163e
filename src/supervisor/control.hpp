// The daemon's control socket: a Unix stream socket only its owner may open (the folder 0700, the socket 0600),
// and the daemon also checks each peer's uid (SO_PEERCRED) and refuses any other. One JSON object per line each
// way: a request {"cmd": …}, then the daemon's answers ({"ok": true, …} or {"ok": false, "error": "…"}); `logs -f`
// keeps the connection and gets {"line": …} objects until it hangs up.
//
//   supervisor::control_server server(io, paths.socket, [&](json::object req, std::shared_ptr<control_session> s) {
//     s->send({{"ok", true}});
//     s->end();  // closes once everything is written
//   });
//   // in the CLI:
//   auto ec = supervisor::control_call(paths.socket, {{"cmd", "ls"}}, [](const json::object& answer) { ...; }, 30s);
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <boost/json/object.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "clutch/error.hpp"
#include "supervisor/connection_limit.hpp"

namespace clutch::supervisor {

// Where the daemon keeps its files. $CLUTCH_HOME when set, else ~/.clutch; the control socket is
// $CLUTCH_HOME/clutch.sock when CLUTCH_HOME is set, else $XDG_RUNTIME_DIR/clutch.sock, else ~/.clutch/clutch.sock.
struct daemon_paths {
  std::string home, socket, pid_file, lock_file, daemon_log, logs;
  std::string table, dump;  // the live app table and `clutch save`'s (app_table.hpp)
  static daemon_paths from_environment();
  // Where the CLI finds the daemon: `socket`, or $CLUTCH_HOME/clutch.sock (~/.clutch/clutch.sock) when only that
  // one is there: a daemon started without XDG_RUNTIME_DIR (by systemd, `clutch startup`'s unit) listens there.
  std::string reachable_socket() const;
};

// Makes a folder (and its parents) that only its owner can enter; an existing one must be ours.
error_code private_folder(const std::string& path);

class control_session : public std::enable_shared_from_this<control_session> {
 public:
  // Answers not yet written; past it, the session is closed. Above what `logs -n` (100,000 per stream) queues at once.
  static constexpr std::size_t max_queued = 250000;
  explicit control_session(boost::asio::local::stream_protocol::socket s);
  // A session inside the daemon, for a request that did not come through the socket (the dashboard's actions):
  // each answer goes to `answers`; end() closes it (on_close runs).
  control_session(boost::asio::any_io_executor ex, std::function<void(const boost::json::object&)> answers);
  void send(const boost::json::object& answer);
  // Closes the connection once what was sent has been written.
  void end();
  // The peer hung up (or end() closed it).
  void on_close(std::function<void()> h) { closed_ = std::move(h); }
  bool open() const noexcept { return open_; }

  // Reads the request line (within request_timeout, else the connection is dropped) and passes it on.
  void start(std::function<void(boost::json::object, std::shared_ptr<control_session>)> handler);
  // Its place under the server's connection limit, given back when the session ends.
  void hold(std::shared_ptr<void> slot) { slot_ = std::move(slot); }
  static constexpr std::chrono::seconds request_timeout{10};

 private:
  void write_next();
  void close();
  boost::asio::local::stream_protocol::socket socket_;
  std::string in_;
  std::deque<std::string> out_;
  bool writing_ = false, ending_ = false, open_ = true, asked_ = false;
  std::function<void()> closed_;
  std::function<void(const boost::json::object&)> answers_;  // in-process: no socket
  std::shared_ptr<void> slot_;
  std::unique_ptr<boost::asio::steady_timer> request_timer_;
};

class control_server {
 public:
  using handler = std::function<void(boost::json::object, std::shared_ptr<control_session>)>;
  control_server(boost::asio::io_context& io, handler h);
  // Binds path (a stale socket file is replaced: call it holding the daemon's lock) with mode 0600.
  error_code listen(const std::string& path);
  void close();
  // At most this many sessions at once (`logs -f` followers included); more are accepted and closed at once.
  static constexpr std::size_t max_sessions = 64;

 private:
  void accept();
  boost::asio::local::stream_protocol::acceptor acceptor_;
  handler handler_;
  connection_limit limit_{max_sessions};
  std::unique_ptr<boost::asio::steady_timer> pause_;
};

// What control_call finds wrong with the daemon's side of the exchange, as opposed to the connection's own errors.
enum class control_error {
  no_answer = 1,  // the daemon closed the connection before its first answer
  cut_short,      // it closed the connection in the middle of an answer line
  not_json,       // an answer line is not a JSON object
  timed_out,      // it stayed silent for longer than the call's timeout (compares equal to std::errc::timed_out)
};
const boost::system::error_category& control_category() noexcept;
inline error_code make_error_code(control_error e) noexcept { return {static_cast<int>(e), control_category()}; }

// Sends one request and passes each answer to on_answer until the daemon closes the connection or on_answer
// returns false. The error is the connection's (no daemon: ENOENT or ECONNREFUSED) or a control_error: a call
// succeeds only if at least one answer came. timeout bounds each silence of the daemon (before its first answer,
// and between answers); zero waits as long as it takes.
error_code control_call(const std::string& path, const boost::json::object& request,
                        const std::function<bool(const boost::json::object&)>& on_answer,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds::zero());

}  // namespace clutch::supervisor

template <>
struct boost::system::is_error_code_enum<clutch::supervisor::control_error> : std::true_type {};
