#include "supervisor/dashboard.hpp"

#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <fstream>

#include <boost/json/array.hpp>

#include "common/json_fields.hpp"
#include "os/file.hpp"

namespace clutch::supervisor {

namespace json = boost::json;
using ::clutch::detail::number_of;

std::int64_t unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void timeline::sample(const json::object& snapshot, std::int64_t at_ms) {
  last_ = at_ms;
  if (const auto* apps = snapshot.if_contains("apps"); apps && apps->is_array())
    for (const auto& app : apps->get_array()) {
      const auto& a = app.as_object();
      point p{at_ms, 0, 0, 0, {}};
      for (const auto& proc : a.at("processes").as_array()) {
        const auto& o = proc.as_object();
        p.cpu += number_of(o.at("cpu"));
        p.memory += static_cast<std::uint64_t>(number_of(o.at("memory")));
        p.restarts += static_cast<std::uint64_t>(number_of(o.at("restarts")));
        if (const auto* qs = o.if_contains("queues"); qs && qs->is_array() && o.at("role").as_string() == "worker") {
          auto& n = p.waiting[std::to_string(static_cast<std::uint64_t>(number_of(o.at("slot"))))];
          for (const auto& q : qs->get_array()) n += static_cast<std::uint64_t>(number_of(q.as_object().at("waiting")));
        }
      }
      apps_[std::string(a.at("name").as_string())].push_back(std::move(p));
    }
  // What is older than the charts show goes, and an app gone for as long with it.
  for (auto it = apps_.begin(); it != apps_.end();) {
    auto& points = it->second;
    while (!points.empty() && points.front().at < at_ms - span_ms) points.pop_front();
    it = points.empty() ? apps_.erase(it) : std::next(it);
  }
}

void timeline::event(const std::string& app, std::string_view kind, const std::string& text,
                     std::vector<std::string> lines) {
  if (lines.size() > lines_kept) lines.erase(lines.begin(), lines.end() - static_cast<std::ptrdiff_t>(lines_kept));
  events_.push_back({unix_ms(), app, std::string(kind), text, std::move(lines)});
  if (events_.size() > events_kept) events_.pop_front();
}

json::object timeline::since(std::int64_t after_ms, bool with_lines) const {
  json::object apps;
  for (const auto& [name, points] : apps_) {
    json::array t, cpu, memory, restarts, waiting;
    for (const auto& p : points) {
      if (p.at <= after_ms) continue;
      t.push_back(p.at);
      cpu.push_back(p.cpu);
      memory.push_back(p.memory);
      restarts.push_back(p.restarts);
      json::object w;
      for (const auto& [slot, n] : p.waiting) w[slot] = n;
      waiting.push_back(std::move(w));
    }
    if (t.empty()) continue;
    apps[name] = json::object{{"t", std::move(t)},
                              {"cpu", std::move(cpu)},
                              {"memory", std::move(memory)},
                              {"restarts", std::move(restarts)},
                              {"waiting", std::move(waiting)}};
  }
  json::array events;
  for (const auto& e : events_) {
    if (e.at <= after_ms) continue;
    json::object o{{"at", e.at}, {"app", e.app}, {"kind", e.kind}, {"text", e.text}};
    if (with_lines) {
      json::array lines;
      for (const auto& l : e.lines) lines.push_back(json::string(l));
      o["lines"] = std::move(lines);
    }
    events.push_back(std::move(o));
  }
  return {{"now", last_}, {"apps", std::move(apps)}, {"events", std::move(events)}};
}

std::string dashboard_token(const std::string& home, error_code& ec) {
  const std::string path = home + "/dashboard.token";
  std::string token;
  {
    std::ifstream in(path);
    if (in >> token && token.size() == 32) return token;
  }
  unsigned char bytes[16];
  for (std::size_t got = 0; got < sizeof bytes;) {
    const auto n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ec = error_code(errno, boost::system::system_category());
      return {};
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char hex[] = "0123456789abcdef";
  token.clear();
  for (const unsigned char b : bytes) {
    token += hex[b >> 4];
    token += hex[b & 15];
  }
  // Ours alone, and whole: no reader sees half of one.
  if (const int e = os::replace_file(path, token + "\n", 0600, false)) {
    ec = error_code(e, boost::system::system_category());
    return {};
  }
  return token;
}

bool same_token(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.empty()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace clutch::supervisor
