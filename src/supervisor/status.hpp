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
#include <set>
#include <string>

#include "os/proc_stat.hpp"
#include "supervisor/connection_limit.hpp"
#include "supervisor/engine.hpp"

namespace clutch::supervisor {

struct usage {
  double cpu_percent = 0;  // of one CPU, since the previous look at this pid (since it started, the first time)
  double cpu_seconds = 0;
  std::uint64_t rss = 0;   // bytes
};

// What a process and its whole tree use: a worker is often a wrapper (sh -c, a gunicorn master) whose children do
// the work. RSS is summed over the live processes (pages they share count once for each, as in ps); CPU time is
// theirs plus that of the descendants they have waited for, so that it does not drop when a child exits.
class usage_meter {
 public:
  usage look(pid_t pid);

 private:
  // One pass over /proc serves every look of a snapshot: the table is taken again only once it is this old.
  static constexpr std::chrono::milliseconds table_life{100};
  // How long a process found without descendants is read alone, without a pass over /proc.
  static constexpr std::chrono::seconds tree_life{5};
  os::process_table table_;
  std::chrono::steady_clock::time_point taken_{}, full_at_{};
  std::set<pid_t> alone_;  // without descendants at the last pass
  struct seen {
    std::uint64_t starttime;  // to tell a reused pid from the process we saw
    std::uint64_t ticks;
    std::chrono::steady_clock::time_point at;
    double percent;
  };
  std::map<pid_t, seen> last_;
};

// {"name", "workers", "processes": [{"id", "role", "pid", "slot", "state", "cpu", "cpu_seconds", "memory",
//  "restarts", "uptime"}]}: the engine's processes now, each with its tree (cpu: whole % of one CPU; cpu_seconds:
//  a decimal; memory: bytes; uptime: whole seconds).
boost::json::object app_status(const std::string& name, const engine& e, usage_meter& meter);

// {"pid", "memory"} of this process alone, the supervisor (its tree holds every app).
boost::json::object supervisor_status(usage_meter& meter);

// The snapshot's processes as Prometheus text, numbers as json_text writes them (no exponent). snapshot =
// {"apps": [app_status…], "supervisor": {"pid", "memory"}}.
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
