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
    procs.push_back(json::object{
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
}

void status_server::accept() {
  acceptor_.async_accept([this](error_code ec, asio::ip::tcp::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (paused(ec, pause_, acceptor_.get_executor(), [this] { accept(); })) return;  // out of descriptors
    auto slot = ec ? nullptr : limit_.admit();
    if (!ec && !slot) {
      error_code ignored;
      s.close(ignored);  // over the limit: this client only is turned away
    } else if (!ec) {
      struct exchange {
        beast::tcp_stream stream;
        beast::flat_buffer buffer;
        http::request<http::string_body> req;
        http::response<http::string_body> res;
        std::shared_ptr<void> slot;
      };
      auto x = std::make_shared<exchange>(exchange{beast::tcp_stream(std::move(s)), {}, {}, {}, std::move(slot)});
      x->buffer.max_size(16 * 1024);  // a request line and a few headers: nothing here takes a body
      x->stream.expires_after(idle);
      http::async_read(x->stream, x->buffer, x->req, [this, x](error_code ec, std::size_t) {
        if (ec) return;
        const auto target = std::string(x->req.target().substr(0, x->req.target().find('?')));
        auto& res = x->res;
        res.version(x->req.version());
        res.keep_alive(false);
        res.set(http::field::server, "clutch");
        if (x->req.method() != http::verb::get && x->req.method() != http::verb::head) {
          res.result(http::status::method_not_allowed);
          res.body() = "GET only\n";
        } else if (target == "/metrics" || target == "/api/status" || target == "/ready") {
          // One request's failure (out of memory, say) is that request's 500, never the daemon's end.
          try {
            if (target == "/metrics") {
              res.set(http::field::content_type, "text/plain; version=0.0.4");
              res.body() = prometheus_text(snapshot_());
            } else if (target == "/api/status") {
              res.set(http::field::content_type, "application/json");
              res.body() = json_text(snapshot_()) + "\n";
            } else {
              const bool ready = all_ready(snapshot_());
              res.result(ready ? http::status::ok : http::status::service_unavailable);
              res.body() = ready ? "ready\n" : "not ready\n";
            }
          } catch (const std::exception& x) {
            res.result(http::status::internal_server_error);
            res.body() = std::string(x.what()) + "\n";
          }
        } else {
          res.result(http::status::not_found);
          res.body() = "not found: try /metrics, /api/status or /ready\n";
        }
        if (x->req.method() == http::verb::head) res.body().clear();
        res.prepare_payload();
        http::async_write(x->stream, x->res, [x](error_code, std::size_t) {
          error_code ignored;
          x->stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
        });
      });
    }
    accept();
  });
}

}  // namespace clutch::supervisor
