// What the supervisor tells about its processes: one JSON snapshot (state, pid, CPU, RSS, restarts, uptime per
// process), served with its Prometheus rendering over HTTP on 127.0.0.1:
//   GET /api/status  the snapshot
//   GET /metrics     the same as Prometheus text (clutch_process_* gauges and counters, labelled app/id/role)
//   GET /ready       200 when every app's workers are ready, else 503 (a readiness probe)
//
//   supervisor::usage_meter meter;                       // CPU % between two looks at a pid
//   json::object app = supervisor::app_status("web", engine, meter);
//   supervisor::status_server http(io, [&] { return snapshot(); });
//   if (auto ec = http.listen(9615)) { ... }
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "supervisor/connection_limit.hpp"
#include "supervisor/engine.hpp"

namespace clutch::supervisor {

struct usage {
  double cpu_percent = 0;  // of one CPU, since the previous look at this pid (since it started, the first time)
  double cpu_seconds = 0;
  std::uint64_t rss = 0;   // bytes
};

class usage_meter {
 public:
  usage look(pid_t pid);

 private:
  struct seen {
    std::uint64_t ticks;
    std::chrono::steady_clock::time_point at;
  };
  std::map<pid_t, seen> last_;
};

// {"name", "workers", "processes": [{"id", "role", "pid", "slot", "state", "cpu", "cpu_seconds", "memory",
//  "restarts", "uptime"}]}: the engine's processes now (cpu: whole % of one CPU; memory: bytes; uptime: s).
boost::json::object app_status(const std::string& name, const engine& e, usage_meter& meter);

// {"pid", "memory"} of this process, the supervisor.
boost::json::object supervisor_status(usage_meter& meter);

// The snapshot's processes as Prometheus text. snapshot = {"apps": [app_status…], "supervisor": {"pid", "memory"}}.
std::string prometheus_text(const boost::json::object& snapshot);

// Every app's processes ready (state "ready"), at least one, none starting.
bool all_ready(const boost::json::object& snapshot);

class status_server {
 public:
  status_server(boost::asio::io_context& io, std::function<boost::json::object()> snapshot);
  // 127.0.0.1:port (0: any free one).
  error_code listen(unsigned short port);
  unsigned short port() const;
  void close();
  // At most this many connections at once, each given `idle` to send its request; more are closed at once.
  static constexpr std::size_t max_connections = 64;
  static constexpr std::chrono::seconds idle{5};

 private:
  void accept();
  boost::asio::ip::tcp::acceptor acceptor_;
  std::function<boost::json::object()> snapshot_;
  connection_limit limit_{max_connections};
  std::unique_ptr<boost::asio::steady_timer> pause_;
};

}  // namespace clutch::supervisor
