#include "supervisor/status.hpp"

#include <unistd.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/json_fields.hpp"
#include "os/proc_stat.hpp"

namespace clutch::supervisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using clock = std::chrono::steady_clock;
using ::clutch::detail::json_text;
using ::clutch::detail::number_of;
using ::clutch::detail::number_text;

usage usage_meter::look(pid_t pid) {
  usage u;
  const auto now = clock::now();
  // A tree's members are found by one pass over /proc (this kernel may not list a process's children), which
  // costs milliseconds on a busy machine. A process that had no descendants at the last pass is read alone until
  // the next pass is due: a child it starts meanwhile is counted from then on (tree_life).
  std::optional<os::proc_stat> alone;
  if (now - full_at_ < tree_life && alone_.contains(pid)) alone = os::read_proc_stat(pid);
  std::uint64_t ticks = 0, pages = 0, starttime = 0;
  auto at = now;
  if (alone) {
    ticks = alone->utime + alone->stime + alone->cutime + alone->cstime;
    pages = alone->rss_pages;
    starttime = alone->starttime;
  } else {
    if (table_.size() == 0 || now - taken_ >= table_life) {
      table_ = os::process_table::scan();
      taken_ = full_at_ = now;
      alone_.clear();
    }
    at = taken_;
    const auto* root = table_.find(pid);
    if (!root) return u;
    std::size_t members = 0;
    table_.for_each_in_tree(pid, [&](const os::proc_stat& p) {
      ticks += p.utime + p.stime + p.cutime + p.cstime;
      pages += p.rss_pages;
      ++members;
    });
    if (members == 1) alone_.insert(pid);
    starttime = root->starttime;
  }
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  u.cpu_seconds = static_cast<double>(ticks) / hz;
  u.rss = pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const auto it = last_.find(pid);
  if (it != last_.end() && it->second.starttime == starttime) {
    auto& before = it->second;
    const double secs = std::chrono::duration<double>(at - before.at).count();
    // The same reading as the last look: the same answer. Fewer ticks than before (a child that a process outside
    // the tree reaped took its time along) count as none, never as a negative use.
    if (secs <= 0) {
      u.cpu_percent = before.percent;
      return u;
    }
    u.cpu_percent = ticks > before.ticks ? 100.0 * static_cast<double>(ticks - before.ticks) / hz / secs : 0;
  } else {
    double uptime = 0;
    std::ifstream("/proc/uptime") >> uptime;
    const double ran = uptime - static_cast<double>(starttime) / hz;
    if (ran > 0) u.cpu_percent = 100.0 * u.cpu_seconds / ran;
  }
  last_[pid] = {starttime, ticks, at, u.cpu_percent};
  if (last_.size() > 4096) last_.clear();  // pids that are long gone
  return u;
}

json::object app_status(const std::string& name, const engine& e, usage_meter& meter) {
  json::array procs;
  const auto now = clock::now();
  for (const auto& p : e.processes()) {
    const auto u = meter.look(p.tag.pid);
    const char* state = p.state == process_info::state::ready      ? "ready"
                        : p.state == process_info::state::stopping ? "stopping"
                                                                   : "starting";
    json::array queues;
    for (const auto& q : p.queues)
      queues.push_back(json::object{{"address", q.address}, {"waiting", q.waiting}, {"backlog", q.backlog}});
    procs.push_back(json::object{
        {"queues", std::move(queues)},
        {"id", p.tag.id},
        {"role", p.tag.agent ? "agent" : "worker"},
        {"pid", p.tag.pid},
        {"slot", p.slot},
        {"state", state},
        {"cpu", std::llround(u.cpu_percent)},  // whole percents: JSON readers need no more
        {"cpu_seconds", u.cpu_seconds},
        {"memory", u.rss},
        {"restarts", p.restarts},
        {"uptime", std::chrono::duration_cast<std::chrono::seconds>(now - p.started).count()},
    });
  }
  return {{"name", name}, {"workers", e.workers()}, {"processes", std::move(procs)}};
}

json::object supervisor_status(usage_meter&) {
  const auto own = os::read_proc_stat(::getpid());
  const std::uint64_t rss = own ? own->rss_pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
  return {{"pid", ::getpid()}, {"memory", rss}};
}

namespace {

std::string label(std::string_view text) {  // a Prometheus label value: \, " and newline escaped
  std::string out;
  for (char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string prometheus_text(const json::object& snapshot) {
  struct metric {
    const char* name;
    const char* type;
    const char* help;
    const char* field;
  };
  static constexpr metric metrics[] = {
      {"clutch_process_up", "gauge", "1 when the process is ready, 0 while it starts or stops", nullptr},
      {"clutch_process_cpu_seconds_total", "counter", "CPU time used (user + system)", "cpu_seconds"},
      {"clutch_process_cpu_percent", "gauge", "CPU use since the previous look, % of one CPU", "cpu"},
      {"clutch_process_resident_memory_bytes", "gauge", "resident set size", "memory"},
      {"clutch_process_restarts_total", "counter", "restarts of the process's slot", "restarts"},
      {"clutch_process_uptime_seconds", "gauge", "time since the process started", "uptime"},
  };
  std::ostringstream out;
  const auto* apps = snapshot.if_contains("apps");
  for (const auto& m : metrics) {
    out << "# HELP " << m.name << ' ' << m.help << "\n# TYPE " << m.name << ' ' << m.type << '\n';
    if (!apps || !apps->is_array()) continue;
    for (const auto& app : apps->get_array()) {
      const auto& a = app.as_object();
      const auto* procs = a.if_contains("processes");
      if (!procs || !procs->is_array()) continue;
      for (const auto& proc : procs->get_array()) {
        const auto& p = proc.as_object();
        out << m.name << "{app=\"" << label(a.at("name").as_string()) << "\",role=\""
            << label(p.at("role").as_string()) << "\",id=\"" << number_text(p.at("id")) << "\",pid=\""
            << number_text(p.at("pid")) << "\"} ";
        if (m.field) out << number_text(p.at(m.field));
        else out << (p.at("state").as_string() == "ready" ? 1 : 0);
        out << '\n';
      }
    }
  }
  if (const auto* d = snapshot.if_contains("supervisor"); d && d->is_object()) {
    out << "# HELP clutch_supervisor_resident_memory_bytes the supervisor's own resident set size\n"
        << "# TYPE clutch_supervisor_resident_memory_bytes gauge\n"
        << "clutch_supervisor_resident_memory_bytes " << number_text(d->as_object().at("memory")) << '\n';
  }
  return out.str();
}

bool all_ready(const json::object& snapshot) {
  const auto* apps = snapshot.if_contains("apps");
  if (!apps || !apps->is_array()) return false;
  bool any = false;
  for (const auto& app : apps->get_array()) {
    const auto& a = app.as_object();
    if (const auto* st = a.if_contains("state"); st && st->is_string() && st->get_string() == "stopped") continue;
    std::size_t ready_workers = 0;
    for (const auto& proc : a.at("processes").as_array()) {
      const auto& p = proc.as_object();
      if (p.at("state").as_string() == "starting") return false;
      if (p.at("role").as_string() == "worker" && p.at("state").as_string() == "ready") ++ready_workers;
    }
    if (ready_workers < static_cast<std::size_t>(number_of(a.at("workers")))) return false;
    any = true;
  }
  return any;
}

status_server::status_server(asio::io_context& io, std::function<json::object()> snapshot)
    : acceptor_(io), snapshot_(std::move(snapshot)) {}

error_code status_server::listen(unsigned short port) {
  error_code ec;
  const asio::ip::tcp::endpoint at(asio::ip::make_address_v4("127.0.0.1"), port);
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) return ec;
  accept();
  return {};
}

unsigned short status_server::port() const {
  error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void status_server::close() {
  error_code ignored;
  acceptor_.close(ignored);
  if (pause_) pause_->cancel();
  if (sampler_) sampler_->cancel();
}

std::shared_ptr<void> status_server::evict_idle() {
  while (!unread_.empty()) {
    auto x = unread_.front().lock();
    unread_.pop_front();
    if (!x || !x->reading) continue;
    auto slot = std::move(x->slot);
    error_code ignored;
    x->stream.socket().close(ignored);  // its read ends with an error, and the exchange with it
    return slot;
  }
  return nullptr;
}

void status_server::show_history(timeline* history) {
  history_ = history;
  sampler_ = std::make_unique<asio::steady_timer>(acceptor_.get_executor());
  sample();
}

void status_server::sample() {
  history_->sample(snapshot_(), unix_ms());
  sampler_->expires_after(std::chrono::seconds(1));
  sampler_->async_wait([this](error_code ec) {
    if (!ec) sample();  // cancelled by close() or the server's end
  });
}

void status_server::allow_actions(std::string token, action act) {
  token_ = std::move(token);
  act_ = std::move(act);
}

namespace {

// The value of NAME in a query string ("since=123&x=1"), or "".
std::string query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
      return std::string(pair.substr(name.size() + 1));
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
  }
  return {};
}

std::int64_t query_number(std::string_view query, std::string_view name) {
  const auto text = query_value(query, name);
  std::int64_t n = 0;
  for (const char c : text) {
    if (c < '0' || c > '9' || n > (std::int64_t{1} << 50)) return -1;
    n = n * 10 + (c - '0');
  }
  return text.empty() ? -1 : n;
}

}  // namespace

void status_server::accept() {
  acceptor_.async_accept([this](error_code ec, asio::ip::tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (paused(ec, pause_, acceptor_.get_executor(), [this] { accept(); })) return;  // out of descriptors
    auto slot = ec ? nullptr : limit_.admit();
    if (!ec && !slot) slot = evict_idle();
    if (!ec && !slot) {
      error_code ignored;
      s.close(ignored);  // over the limit, every one busy: this client only is turned away
    } else if (!ec) {
      auto x = std::make_shared<exchange>(exchange{beast::tcp_stream(std::move(s)), {}, {}, {}, std::move(slot)});
      x->buffer.max_size(16 * 1024);  // a request line and a few headers: nothing here takes a body
      x->stream.expires_after(idle);
      if (unread_.size() >= 2 * max_connections)
        std::erase_if(unread_, [](const auto& w) { return w.expired() || !w.lock()->reading; });
      unread_.push_back(x);
      http::async_read(x->stream, x->buffer, x->req, [this, x](error_code ec, std::size_t) {
        x->reading = false;
        if (!ec) answer(x);
      });
    }
    accept();
  });
}

void status_server::answer(const std::shared_ptr<exchange>& x) {
  const std::string_view whole = x->req.target();
  const auto mark = whole.find('?');
  const auto target = std::string(whole.substr(0, mark));
  const auto query = mark == std::string_view::npos ? std::string_view() : whole.substr(mark + 1);
  auto& res = x->res;
  res.version(x->req.version());
  res.keep_alive(false);
  res.set(http::field::server, "clutch");
  res.set(http::field::cache_control, "no-store");
  const bool get = x->req.method() == http::verb::get || x->req.method() == http::verb::head;
  const bool post = x->req.method() == http::verb::post;
  auto fail = [&](http::status st, const std::string& why) {
    res.result(st);
    res.set(http::field::content_type, "application/json");
    res.body() = json_text(json::object{{"ok", false}, {"error", why}}) + "\n";
  };
  // A page another site's script reaches through a name it points at 127.0.0.1 (DNS rebinding) names that
  // site, not us, in Host: it gets nothing of the dashboard's (scrapers of /metrics keep whatever Host they send).
  const std::string port_text = std::to_string(port());
  const std::string_view host = x->req[http::field::host];
  const bool our_host = host == "127.0.0.1:" + port_text || host == "localhost:" + port_text;
  static const std::string actions_prefix = "/api/apps/";
  const bool token_ok = !token_.empty() && same_token(x->req["X-Clutch-Token"], token_);
  const bool dashboards = target == "/" || target == "/api/history" || target.starts_with(actions_prefix);
  if (!our_host && dashboards) {
    fail(http::status::forbidden, "Host must be 127.0.0.1:" + port_text + " or localhost:" + port_text);
  } else if (post && target.starts_with(actions_prefix)) {
    // /api/apps/NAME/ACTION: the token, or nothing changes.
    const auto rest = std::string_view(target).substr(actions_prefix.size());
    const auto slash = rest.find('/');
    if (!act_ || !token_ok) {
      fail(http::status::forbidden, act_ ? "this needs the token `clutch dashboard` prints" : "read-only here");
    } else if (slash == std::string_view::npos || slash == 0) {
      fail(http::status::not_found, "POST /api/apps/NAME/reload|restart|stop|start|scale?workers=N");
    } else {
      x->stream.expires_after(std::chrono::minutes(10));  // a reload takes as long as the app's readiness
      try {
        act_(std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1)), query_number(query, "workers"),
             [x](bool ok, const json::object& answer) {
               x->res.result(ok ? http::status::ok : http::status::bad_request);
               x->res.set(http::field::content_type, "application/json");
               x->res.body() = json_text(answer) + "\n";
               send(x);
             });
      } catch (const std::exception& e) {
        fail(http::status::internal_server_error, e.what());
        send(x);
      }
      return;
    }
  } else if (!get) {
    fail(http::status::method_not_allowed, "GET, or POST to /api/apps/NAME/ACTION");
  } else {
    // One request's failure (out of memory, say) is that request's 500, never the daemon's end.
    try {
      if (target == "/" && history_) {
        res.set(http::field::content_type, "text/html; charset=utf-8");
        // The page runs nothing of another origin's, and no other page may frame it (its buttons act).
        res.set("Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                "img-src data:; frame-ancestors 'none'");
        res.set("X-Frame-Options", "DENY");
        res.body() = dashboard_html;
      } else if (target == "/api/history" && history_) {
        res.set(http::field::content_type, "application/json");
        auto h = history_->since(std::max<std::int64_t>(query_number(query, "since"), 0), token_ok);
        h["actions"] = act_ != nullptr;
        h["token_ok"] = token_ok;
        res.body() = json_text(h) + "\n";
      } else if (target == "/metrics") {
        res.set(http::field::content_type, "text/plain; version=0.0.4");
        res.body() = prometheus_text(snapshot_());
      } else if (target == "/api/status") {
        res.set(http::field::content_type, "application/json");
        res.body() = json_text(snapshot_()) + "\n";
      } else if (target == "/ready") {
        const bool ready = all_ready(snapshot_());
        res.result(ready ? http::status::ok : http::status::service_unavailable);
        res.body() = ready ? "ready\n" : "not ready\n";
      } else {
        res.result(http::status::not_found);
        res.body() = history_ ? "not found: try /, /metrics, /api/status, /api/history or /ready\n"
                              : "not found: try /metrics, /api/status or /ready\n";
      }
    } catch (const std::exception& e) {
      fail(http::status::internal_server_error, e.what());
    }
  }
  send(x);
}

void status_server::send(const std::shared_ptr<exchange>& x) {
  if (x->req.method() == http::verb::head) x->res.body().clear();
  x->res.prepare_payload();
  http::async_write(x->stream, x->res, [x](error_code, std::size_t) {
    error_code ignored;
    x->stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  });
}

}  // namespace clutch::supervisor
