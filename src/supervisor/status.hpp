// What the supervisor tells about its processes: one JSON snapshot (state, pid, CPU, RSS, restarts, uptime per
// process), served with its Prometheus rendering over HTTP on 127.0.0.1:
//   GET /api/status  the snapshot
//   GET /metrics     the same as Prometheus text (clutch_process_* gauges and counters, labelled app/id/role)
//   GET /ready       200 when every app's workers are ready, else 503 (a readiness probe)
//   GET /            the web dashboard, and GET /api/history its data (show_history); POST /api/apps/NAME/ACTION
//                    its actions, with the token (allow_actions)
// The dashboard's requests whose Host is not 127.0.0.1:PORT or localhost:PORT get 403.
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
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <memory>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "os/proc_stat.hpp"
#include "supervisor/connection_limit.hpp"
#include "supervisor/dashboard.hpp"
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
//  "restarts", "uptime", "queues": [{"address", "waiting", "backlog"}]}]}: the engine's processes now, each with
//  its tree (cpu: whole % of one CPU; cpu_seconds: a decimal; memory: bytes; uptime: whole seconds; queues: the
//  accept queue of each of its steered sockets).
boost::json::object app_status(const std::string& name, const engine& e, usage_meter& meter);

// {"pid", "memory"} of this process alone, the supervisor (its tree holds every app).
boost::json::object supervisor_status(usage_meter& meter);

// The snapshot's processes as Prometheus text, numbers as json_text writes them (no exponent). snapshot =
// {"apps": [app_status…], "supervisor": {"pid", "memory"}}.
std::string prometheus_text(const boost::json::object& snapshot);

// Every app's processes ready (state "ready"), at least one, none starting.
bool all_ready(const boost::json::object& snapshot);

// The web dashboard's page (dashboard.html, built in).
extern const char* const dashboard_html;

class status_server {
 public:
  status_server(boost::asio::io_context& io, std::function<boost::json::object()> snapshot);
  // Also serves the dashboard: the page at / and GET /api/history?since=MS (the timeline's samples and events
  // after MS), and from now on adds the snapshot to history once a second, until close(). history outlives the
  // server.
  void show_history(timeline* history);
  // POST /api/apps/NAME/ACTION[?workers=N] with the header X-Clutch-Token: TOKEN calls act(NAME, ACTION, N or -1,
  // reply) and answers what reply gets (200 if ok, else 400). Without the token (or without act): 403, and
  // nothing changes. The token also shows the events' log lines.
  using action = std::function<void(const std::string& app, const std::string& what, std::int64_t workers,
                                    std::function<void(bool ok, const boost::json::object& answer)> reply)>;
  void allow_actions(std::string token, action act);
  // 127.0.0.1:port (0: any free one).
  error_code listen(unsigned short port);
  unsigned short port() const;
  void close();
  // At most this many connections at once, each given `idle` to send its request. Past it, a new one takes the
  // place of the one that has waited longest without sending a request, or is closed if all have sent one.
  static constexpr std::size_t max_connections = 64;
  static constexpr std::chrono::seconds idle{5};

 private:
  struct exchange {
    boost::beast::tcp_stream stream;
    boost::beast::flat_buffer buffer;
    boost::beast::http::request<boost::beast::http::string_body> req;
    boost::beast::http::response<boost::beast::http::string_body> res;
    std::shared_ptr<void> slot;
    bool reading = true;  // its request not read yet
  };
  // The slot of the connection that has waited longest without sending its request, which is closed: a client
  // that sends its request at once (the dashboard's page, a scraper) is served while others hold every slot idle.
  std::shared_ptr<void> evict_idle();
  void accept();
  void answer(const std::shared_ptr<exchange>& x);
  // Static: an action's reply may come after the server is gone (the daemon stopping meanwhile).
  static void send(const std::shared_ptr<exchange>& x);
  boost::asio::ip::tcp::acceptor acceptor_;
  std::function<boost::json::object()> snapshot_;
  std::deque<std::weak_ptr<exchange>> unread_;  // accepted, oldest first (some may have sent theirs since)
  timeline* history_ = nullptr;
  std::unique_ptr<boost::asio::steady_timer> sampler_;
  void sample();
  std::string token_;
  action act_;
  connection_limit limit_{max_connections};
  std::unique_ptr<boost::asio::steady_timer> pause_;
};

}  // namespace clutch::supervisor
