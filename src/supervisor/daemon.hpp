// The daemon behind `clutch start/ls/stop/…`: apps (each an engine), their log files, and the control socket
// the CLI talks to. `clutch daemon` runs it in the foreground; `clutch start` launches it in the background.
//
//   supervisor::daemon d(io, {.paths = supervisor::daemon_paths::from_environment(), .metrics_port = 9615});
//   if (auto ec = d.start()) { ... }   // the lock (one daemon per CLUTCH_HOME), the socket, the pid file
//   d.on_done([&] { io.stop(); });     // after `clutch kill` (or shutdown()) has stopped every app
//   on SIGUSR1: d.reopen_logs();
//
// Requests (one JSON line each; see control.hpp): start {apps: […]}, ls, status {name}, stop|restart|reload|delete
// {name | "all"}, scale {name, workers}, logs {name, lines, follow}, save, resurrect, kill.
#pragma once

#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clutch/error.hpp"
#include "supervisor/control.hpp"

namespace clutch::supervisor {

struct daemon_settings {
  daemon_paths paths;
  unsigned metrics_port = 0;  // 0: no HTTP status endpoint
  // Restore `clutch save`'s table at start (`clutch daemon --resurrect`, as the unit of `clutch startup` runs
  // it). A daemon that finds the last one ended without stopping its apps (killed, crashed, the machine reset)
  // restores that one's live table instead, in any case.
  bool resurrect = false;
};

struct daemon_state;

class daemon {
 public:
  daemon(boost::asio::io_context& io, daemon_settings s);
  ~daemon();
  daemon(const daemon&) = delete;
  daemon& operator=(const daemon&) = delete;

  // errc::already_running-like failure (EWOULDBLOCK) when another daemon holds the lock.
  error_code start();
  void reopen_logs();
  // Stops every app, then runs on_done.
  void shutdown();
  void on_done(std::function<void()> h);
  // Every process of every app (to tell them from orphans to reap).
  std::vector<int> pids() const;

 private:
  std::shared_ptr<daemon_state> state_;
};

}  // namespace clutch::supervisor
