// What the web dashboard (dashboard.html, served at / by status_server) shows beyond /api/status: each app's
// last ten minutes, sampled once a second, and the events of its timeline; and the token its actions need.
//
//   supervisor::timeline t;
//   t.sample(snapshot, unix_ms());                      // once a second (status_server::show_history does it)
//   t.event("web", "crash", "worker 3 (pid 123) killed by SIGKILL", {"its", "last", "lines"});
//   boost::json::object h = t.since(ms, with_lines);     // GET /api/history?since=MS
//   std::string token = supervisor::dashboard_token(home, ec);  // made once, kept in HOME/dashboard.token (0600)
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "clutch/error.hpp"

namespace clutch::supervisor {

class timeline {
 public:
  static constexpr std::int64_t span_ms = 10 * 60 * 1000;  // what the charts show
  static constexpr std::size_t events_kept = 200;
  static constexpr std::size_t lines_kept = 20;            // of a crashed process's last lines

  // Per app: the CPU (% of one CPU) and memory (bytes) of all its processes, its restarts, and the accept queue
  // of each worker's steered sockets (connections waiting, summed over its addresses), by slot.
  void sample(const boost::json::object& snapshot, std::int64_t at_ms);
  void event(const std::string& app, std::string_view kind, const std::string& text,
             std::vector<std::string> lines = {});
  // {"now": ms, "apps": {NAME: {"t": [ms…], "cpu": […], "memory": […], "restarts": […], "waiting": [{SLOT: n}…]}},
  //  "events": [{"at", "app", "kind", "text", "lines"?}]}: samples and events after after_ms. Events' lines only
  // with_lines (a holder of the token): a process's output may hold what only its owner should see.
  boost::json::object since(std::int64_t after_ms, bool with_lines) const;

 private:
  struct point {
    std::int64_t at;
    double cpu;
    std::uint64_t memory;
    std::uint64_t restarts;
    std::map<std::string, std::uint64_t> waiting;
  };
  struct happening {
    std::int64_t at;
    std::string app, kind, text;
    std::vector<std::string> lines;
  };
  std::map<std::string, std::deque<point>> apps_;
  std::deque<happening> events_;
  std::int64_t last_ = 0;
};

// Now, in milliseconds since the epoch: the timeline's clock.
std::int64_t unix_ms();

// The dashboard's token: HOME/dashboard.token, made (128 random bits, hex) if it is not there yet, 0600 in the
// owner-only home. Actions need it; reading the page does not.
std::string dashboard_token(const std::string& home, error_code& ec);

// a == b in a time that does not depend on where they differ.
bool same_token(std::string_view a, std::string_view b);

}  // namespace clutch::supervisor
