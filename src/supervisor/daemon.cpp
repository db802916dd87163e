#include "supervisor/daemon.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "common/exit_text.hpp"
#include "common/json_fields.hpp"
#include "os/proc_stat.hpp"
#include "supervisor/app_table.hpp"
#include "supervisor/config.hpp"
#include "supervisor/dashboard.hpp"
#include "supervisor/engine.hpp"
#include "supervisor/logs.hpp"
#include "supervisor/status.hpp"

namespace clutch::supervisor {

namespace asio = boost::asio;
namespace json = boost::json;
using ::clutch::detail::int_field;
using ::clutch::detail::string_field;
using session_ptr = std::shared_ptr<control_session>;

namespace {

std::string now_text() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ISO 8601 in UTC with milliseconds: 2024-05-01T12:34:56.789Z.
std::string now_text_ms() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[40];
  const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

struct exit_event {
  std::string when, who, how;
  bool asked = false;
  std::shared_ptr<last_lines> lines;
};

// What the daemon keeps of one process's output: a splitter per stream and its last lines.
struct output_of {
  line_splitter split[2];
  std::shared_ptr<last_lines> recent = std::make_shared<last_lines>();
  int open = 3;  // its two streams and the process itself: kept until all three have ended
};

struct app {
  app_spec spec;
  json::object source;  // what it was started from, to start it again
  std::unique_ptr<engine> eng;
  // errored: it stopped by itself, a slot given up after the crash-loop limit (a start that keeps failing, a
  // program that keeps crashing); stopped: asked to.
  enum class state { running, stopping, stopped, errored } st = state::stopped;
  bool gave_up = false;    // the engine ended by itself with a slot given up: errored once it is stopped
  std::string last_error;  // why it is errored, or why its last start failed
  std::unique_ptr<log_file> out, err;
  std::map<std::size_t, std::unique_ptr<log_file>> instance_logs[2];  // merge_logs = false: by slot, out and err
  std::map<int, output_of> output;  // by pid
  std::deque<exit_event> events;    // the last few exits
  std::vector<session_ptr> followers;
  std::vector<std::function<void()>> stopped_waiters;
  // The lines this daemon wrote last to each file ([0] out, [1] err), as written, with the time it read them:
  // what `logs --timestamps` stamps the files' last lines with (older ones, and those of an earlier daemon,
  // have none).
  static constexpr std::size_t timed_lines = 1000;
  std::deque<std::pair<std::string, std::string>> written[2];  // {time, line}
};

// The environment of the `clutch` command that sent req ("env": {NAME: VALUE}), if it sent one.
std::shared_ptr<const environment::map> caller_env(const json::object& req) {
  const auto* env = req.if_contains("env");
  if (!env || !env->is_object()) return nullptr;
  environment::map out;
  for (const auto& [k, v] : env->get_object())
    if (v.is_string() && !k.empty()) out[std::string(k)] = std::string(v.get_string());
  return std::make_shared<const environment::map>(std::move(out));
}

const char* state_name(app::state s) {
  switch (s) {
    case app::state::running: return "running";
    case app::state::stopping: return "stopping";
    case app::state::errored: return "errored";
    default: return "stopped";
  }
}

}  // namespace

struct daemon_state : std::enable_shared_from_this<daemon_state> {
  daemon_state(asio::io_context& io, daemon_settings s) : io(io), cfg(std::move(s)), control(io, {}) {}
  asio::io_context& io;
  daemon_settings cfg;
  control_server control;
  std::unique_ptr<status_server> metrics;
  timeline history;   // the dashboard's ten minutes (sampled by the status server) and events
  std::string token;  // the dashboard's, once the status server runs
  os::unique_fd lock;
  std::map<std::string, std::shared_ptr<app>> apps;
  usage_meter meter;
  std::function<void()> done;
  bool shutting_down = false;
  std::vector<session_ptr> killers;  // `clutch kill`s waiting for the end
  std::vector<session_ptr> all_followers;  // `clutch logs -f` of every app, those started later too

  void say(const std::string& line) { std::cerr << now_text() << ' ' << line << std::endl; }

  json::object snapshot() {
    json::array list;
    for (auto& [name, a] : apps) list.push_back(describe(*a));
    return {{"apps", std::move(list)},
            {"supervisor", supervisor_status(meter)}};
  }

  json::object describe(app& a) {
    json::object o;
    if (a.eng) {
      o = app_status(a.spec.name, *a.eng, meter);
    } else {
      o = {{"name", a.spec.name}, {"workers", a.spec.run.workers}, {"processes", json::array{}}};
    }
    o["state"] = state_name(a.st);
    if (a.eng && a.eng->errored_slots() > 0) o["errored_workers"] = a.eng->errored_slots();
    const std::string why = a.eng && !a.eng->last_error().empty() ? a.eng->last_error() : a.last_error;
    if (!why.empty()) o["last_error"] = why;
    unsigned restarts = 0;
    for (const auto& p : o["processes"].as_array())
      restarts += static_cast<unsigned>(::clutch::detail::number_of(p.as_object().at("restarts")));
    o["restarts"] = restarts;
    return o;
  }

  // ---- the apps' processes -------------------------------------------------------------------------------

  void on_output(const std::shared_ptr<app>& a, const process_tag& tag, int stream, std::string_view data, bool end) {
    auto& o = a->output[tag.pid];
    const int i = stream == child::err ? 1 : 0;
    auto& file = a->spec.merge_logs || tag.agent ? (i ? *a->err : *a->out) : instance_log(*a, i, tag.slot);
    std::string prefix = tag.agent ? "[agent] " : "[" + std::to_string(tag.id) + "] ";
    // PM2's log_date_format: the date first, as PM2 writes it ("DATE: text").
    if (!a->spec.log_date_format.empty())
      prefix = date_text(a->spec.log_date_format, std::chrono::system_clock::now()) + ": " + prefix;
    // When the daemon read them, for `logs --timestamps`: the lines of one chunk came in together.
    const std::string read_at = now_text_ms();
    auto line = [&](std::string_view text) {
      file.append(prefix, text);
      o.recent->add(text);
      auto& written = a->written[i];
      written.emplace_back(read_at, prefix + std::string(text));
      if (written.size() > app::timed_lines) written.pop_front();
      if (a->followers.empty() && all_followers.empty()) return;
      const json::object msg{
          {"app", a->spec.name}, {"line", prefix + std::string(text)}, {"stream", i ? "err" : "out"}, {"time", read_at}};
      for (auto& f : a->followers) f->send(msg);
      for (auto& f : all_followers) f->send(msg);
    };
    o.split[i].feed(data, line);
    if (end) o.split[i].finish(line);
    if (auto ec = file.flush()) say("clutch: " + a->spec.name + ": cannot write " + file.path() + ": " + ec.message());
    if (end && --o.open == 0) a->output.erase(tag.pid);
  }

  void on_exit(const std::shared_ptr<app>& a, const process_tag& tag, const exit_status& st, bool asked) {
    exit_event ev;
    ev.when = now_text();
    ev.who = ::clutch::detail::process_label(tag.agent, tag.id, tag.pid);
    ev.how = ::clutch::detail::describe(st);
    ev.asked = asked;
    // The lines it wrote last, all of them (the exit comes after its pipes are read); a grandchild holding the pipes
    // may still add some, and they land here too.
    auto& o = a->output[tag.pid];
    ev.lines = o.recent;
    if (--o.open == 0) a->output.erase(tag.pid);
    if (!asked)
      history.event(a->spec.name, "crash", ev.who + " " + ev.how,
                    {ev.lines->lines().begin(), ev.lines->lines().end()});
    a->events.push_back(std::move(ev));
    if (a->events.size() > 10) a->events.pop_front();
  }

  void on_start_failed(const std::shared_ptr<app>& a, const process_tag& tag, const std::string& why) {
    exit_event ev;
    ev.when = now_text();
    ev.who = tag.agent ? std::string("agent") : "worker " + std::to_string(tag.id);
    ev.how = why;
    history.event(a->spec.name, "start_failed", why);
    a->events.push_back(std::move(ev));
    if (a->events.size() > 10) a->events.pop_front();
  }

  // Another app of this daemon holding an address `a` asks for: both would get connections meant for the other
  // (SO_REUSEPORT lets a second socket of the same user join the port). Names the address and the app.
  std::string address_taken(const app& a) const {
    for (const auto& [name, other] : apps) {
      if (other.get() == &a || other->st == app::state::stopped || other->st == app::state::errored) continue;
      for (const auto& mine : a.spec.run.listen)
        for (const auto& theirs : other->spec.run.listen) {
          if (mine.unix_socket != theirs.unix_socket) continue;
          bool same = false;
          if (mine.unix_socket) {
            same = mine.path == theirs.path;
          } else if (mine.tcp.port() != 0 && mine.tcp.port() == theirs.tcp.port()) {
            same = mine.tcp.address() == theirs.tcp.address() || mine.tcp.address().is_unspecified() ||
                   theirs.tcp.address().is_unspecified();
          }
          if (same) return address_text(mine) + " is already used by app '" + other->spec.name + "'";
        }
    }
    return {};
  }

  // merge_logs = false: the instance's own file, NAME.out-3.log (PM2's NAME-out-3.log), opened on its first line.
  log_file& instance_log(app& a, int i, std::size_t slot) {
    auto& file = a.instance_logs[i][slot];
    if (!file) {
      std::string path = (i ? a.err : a.out)->path();
      const auto dot = path.rfind(".log");
      path.insert(dot != std::string::npos && dot + 4 == path.size() ? dot : path.size(), "-" + std::to_string(slot));
      file = std::make_unique<log_file>(path, a.spec.log_max_size, a.spec.log_keep);
      if (auto ec = file->open()) say("clutch: " + a.spec.name + ": cannot open " + path + ": " + ec.message());
    }
    return *file;
  }

  error_code open_logs(app& a) {
    for (auto& files : a.instance_logs) files.clear();
    auto path = [&](const std::string& given, const char* stream) {
      return given.empty() ? cfg.paths.logs + "/" + a.spec.name + "." + stream + ".log" : given;
    };
    a.out = std::make_unique<log_file>(path(a.spec.out_file, "out"), a.spec.log_max_size, a.spec.log_keep);
    a.err = std::make_unique<log_file>(path(a.spec.err_file, "err"), a.spec.log_max_size, a.spec.log_keep);
    if (auto ec = a.out->open()) return ec;
    return a.err->open();
  }

  // Starts a's engine; on failure, why says it in words (naming the address, for a bind error).
  error_code launch(const std::shared_ptr<app>& a, std::string& why) {
    if (auto taken = address_taken(*a); !taken.empty()) {
      why = a->last_error = taken;
      return make_error_code(std::errc::address_in_use);
    }
    if (!a->out) {
      if (auto ec = open_logs(*a)) {
        why = a->last_error = "cannot open its log files: " + ec.message();
        return ec;
      }
    }
    auto eng = std::make_unique<engine>(io, a->spec.run);
    std::weak_ptr<app> wa = a;
    auto self = weak_from_this();
    eng->on_log([self, name = a->spec.name](const std::string& line) {
      if (auto d = self.lock()) d->say(name + ": " + line);
    });
    eng->on_output([self, wa](const process_tag& tag, int stream, std::string_view data, bool end) {
      auto d = self.lock();
      auto a = wa.lock();
      if (d && a) d->on_output(a, tag, stream, data, end);
    });
    // The live table knows every process of the app (a restore after a crash waits for them to be gone).
    eng->on_start([self](const process_tag&) {
      if (auto d = self.lock()) d->persist_soon();
    });
    eng->on_exit([self, wa](const process_tag& tag, const exit_status& st, bool asked) {
      auto d = self.lock();
      auto a = wa.lock();
      if (d && a) d->on_exit(a, tag, st, asked);
    });
    eng->on_event([self, name = a->spec.name](std::string_view kind, const std::string& text) {
      if (auto d = self.lock()) d->history.event(name, kind, text);
    });
    eng->on_start_failed([self, wa](const process_tag& tag, const std::string& why) {
      auto d = self.lock();
      auto a = wa.lock();
      if (d && a) d->on_start_failed(a, tag, why);
    });
    eng->on_all_gone([self, wa] {
      auto d = self.lock();
      auto a = wa.lock();
      if (!d || !a || !a->eng) return;
      a->gave_up = a->eng->errored_slots() > 0;
      if (a->gave_up) a->last_error = a->eng->last_error();
      d->say(a->spec.name + ": no worker left to run; " + (a->gave_up ? "errored: " + a->last_error : "stopped"));
      // Not from inside the engine's own callback.
      asio::post(d->io, [d, a] { d->stop(a, {}); });
    });
    if (auto ec = eng->start()) {
      why = a->last_error = eng->last_error().empty() ? ec.message() : eng->last_error();
      return ec;
    }
    a->eng = std::move(eng);
    a->st = app::state::running;
    a->gave_up = false;
    a->last_error.clear();
    return {};
  }

  // Stops a's engine; done runs once it is stopped and gone, with its sockets (at once if it was stopped).
  void stop(const std::shared_ptr<app>& a, std::function<void()> done) {
    if (a->st == app::state::stopped || a->st == app::state::errored || !a->eng) {
      if (a->st != app::state::errored) a->st = app::state::stopped;
      if (done) done();
      return;
    }
    if (done) a->stopped_waiters.push_back(std::move(done));
    if (a->st == app::state::stopping) return;
    a->st = app::state::stopping;
    a->eng->stop([self = weak_from_this(), a] {
      auto d = self.lock();
      if (!d) return;
      // The engine is gone only after its own callback has returned.
      asio::post(d->io, [a, self] {
        if (a->eng && !a->gave_up && !a->eng->last_error().empty()) a->last_error = a->eng->last_error();
        a->eng.reset();  // its sockets close before a waiter (a restart) binds them again
        a->st = a->gave_up ? app::state::errored : app::state::stopped;
        for (auto& w : std::exchange(a->stopped_waiters, {})) w();
        if (auto d = self.lock()) d->persist();
      });
    });
  }

  // ---- requests ---------------------------------------------------------------------------------------------

  static void fail(const session_ptr& s, const std::string& why) {
    s->send({{"ok", false}, {"error", why}});
    s->end();
  }

  // The apps a request names ("all": every one), or nothing after telling the client why.
  std::vector<std::shared_ptr<app>> named(const json::object& req, const session_ptr& s) {
    const std::string name(string_field(req, "name"));
    std::vector<std::shared_ptr<app>> out;
    if (name == "all") {
      for (auto& [n, a] : apps) out.push_back(a);
      if (out.empty()) fail(s, "no app is defined (clutch start first)");
      return out;
    }
    auto it = apps.find(name);
    if (it == apps.end()) {
      std::string known;
      for (auto& [n, a] : apps) known += (known.empty() ? "" : ", ") + n;
      fail(s, "no app named '" + name + "'" + (known.empty() ? " (none is defined)" : " (known: " + known + ")"));
      return out;
    }
    out.push_back(it->second);
    return out;
  }

  // Runs action on each app; answers {"ok": …} once every one has called its finish(error text or ""). An empty
  // list answers nothing: named() has told the client why already.
  void for_each_app(const std::vector<std::shared_ptr<app>>& list, const session_ptr& s,
                    const std::function<void(const std::shared_ptr<app>&, std::function<void(std::string)>)>& action) {
    struct tally {
      std::size_t left;
      std::string errors;
      json::array names;
    };
    auto t = std::make_shared<tally>(tally{list.size(), {}, {}});
    for (auto& a : list) {
      action(a, [t, s, name = a->spec.name](std::string error) {
        if (!error.empty()) t->errors += (t->errors.empty() ? "" : "; ") + name + ": " + error;
        else t->names.push_back(json::string(name));
        if (--t->left > 0) return;
        if (t->errors.empty()) s->send({{"ok", true}, {"apps", t->names}});
        else s->send({{"ok", false}, {"error", t->errors}, {"apps", t->names}});
        s->end();
      });
    }
  }

  // ---- the app table on disk (app_table.hpp) -----------------------------------------------------------------

  std::vector<table_entry> table() const {
    std::vector<table_entry> out;
    for (const auto& [name, a] : apps)
      out.push_back({a->source, a->spec.run.base_env, a->st == app::state::running,
                     a->eng ? a->eng->pids() : std::vector<int>{}});
    return out;
  }

  // The live table, after every change: what a daemon after a crash of this one restores. Written once per turn
  // of the event loop however many changes it saw (a start of 100 apps is one write, not 400).
  void persist() {
    if (shutting_down || std::exchange(persist_posted, true)) return;
    asio::post(io, [self = weak_from_this()] {
      auto d = self.lock();
      if (!d) return;
      d->persist_posted = false;
      if (d->shutting_down) return;  // a clean end: the next daemon restores nothing of it
      if (auto ec = write_table(d->cfg.paths.table, d->table()))
        d->say("clutch: cannot write " + d->cfg.paths.table + ": " + ec.message());
    });
  }
  bool persist_posted = false;
  // For what only a restore's wait needs (the pids of restarted workers): within a second, so that a reload of
  // every app is a few writes, not one per worker.
  void persist_soon() {
    if (shutting_down || persist_timer) return;
    persist_timer.emplace(io, std::chrono::seconds(1));
    persist_timer->async_wait([self = weak_from_this()](error_code ec) {
      auto d = self.lock();
      if (!d || ec) return;
      d->persist_timer.reset();
      d->persist();
    });
  }
  std::optional<asio::steady_timer> persist_timer;

  // Apps from a table, those not known already: each defined again, the running ones started (one that cannot
  // start is errored, and says why). Their names.
  json::array restore(const std::vector<table_entry>& entries) {
    // The processes of the daemon before (after a crash: its workers, which die with it) may still hold their
    // sockets for a moment, and a new SO_REUSEPORT socket on their port would join their group: wait until they
    // are gone, 2 s at most (a pid taken since by another process only makes it wait).
    for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
         std::chrono::steady_clock::now() < until;) {
      bool left = false;
      for (const auto& e : entries)
        for (const int pid : e.pids)
          if (auto st = os::read_proc_stat(pid); st && st->state != 'Z' && st->state != 'X') left = true;
      if (!left) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::vector<std::pair<app_spec, json::object>> specs;
    std::map<std::string, bool> running;
    for (const auto& e : entries) {
      std::string why;
      auto spec = app_from_json(e.source, why);
      if (!spec) {
        say("clutch: an app cannot be restored: " + why);
        continue;
      }
      if (apps.contains(spec->name) || running.contains(spec->name)) continue;
      spec->run.base_env = e.env;
      running[spec->name] = e.running;
      specs.emplace_back(std::move(*spec), e.source);
    }
    assign_auto_workers(specs);
    json::array names;
    for (auto& [spec, source] : specs) {
      auto a = std::make_shared<app>();
      a->spec = std::move(spec);
      a->source = std::move(source);
      const auto name = a->spec.name;
      apps[name] = a;
      names.push_back(json::string(name));
      std::string why;
      if (!running[name]) continue;  // stopped, as it was
      if (launch(a, why)) {
        a->st = app::state::errored;
        say(name + ": cannot be restored: " + why);
        continue;
      }
      say(name + ": restored, " + std::to_string(a->spec.run.workers) + " workers of " + a->spec.run.program);
    }
    persist();
    return names;
  }

  // ---- the requests, one member each; `requests` below is the table `handle` dispatches on ----

  // PM2's save: the table as it is now, for `clutch resurrect` (and `clutch daemon --resurrect` at boot).
  void save(const json::object&, const session_ptr& s) {
    if (auto ec = write_table(cfg.paths.dump, table())) return fail(s, "cannot write " + cfg.paths.dump + ": " + ec.message());
    s->send({{"ok", true}, {"file", cfg.paths.dump}, {"apps", apps.size()}});
    s->end();
  }

  void resurrect(const json::object&, const session_ptr& s) {
    std::string why;
    auto entries = read_table(cfg.paths.dump, why);
    if (!entries) return fail(s, why);
    if (entries->empty()) return fail(s, "nothing was saved (clutch save first): " + cfg.paths.dump);
    s->send({{"ok", true}, {"apps", restore(*entries)}});
    s->end();
  }

  void ls(const json::object&, const session_ptr& s) {
    auto snap = snapshot();
    s->send({{"ok", true}, {"apps", snap["apps"]}, {"supervisor", snap["supervisor"]}});
    s->end();
  }

  // dashboard: {"ok", "url"}: the dashboard's address with the token in its fragment (which no browser sends
  // on). The status server starts on a free port of 127.0.0.1 if metrics_port gave none.
  void dashboard(const json::object&, const session_ptr& s) {
    if (!metrics) {
      if (auto ec = serve_status(0)) return fail(s, "cannot serve the dashboard: " + ec.message());
      say("clutch: status and dashboard on http://127.0.0.1:" + std::to_string(metrics->port()));
    }
    if (token.empty()) return fail(s, "cannot make the dashboard's token in " + cfg.paths.home);
    s->send({{"ok", true}, {"url", "http://127.0.0.1:" + std::to_string(metrics->port()) + "/#token=" + token}});
    s->end();
  }

  // The status server (and the dashboard, its history and its actions) on 127.0.0.1:port.
  error_code serve_status(unsigned short port) {
    auto server = std::make_unique<status_server>(io, [w = weak_from_this()] {
      auto d = w.lock();
      return d ? d->snapshot() : json::object{};
    });
    error_code ec;
    token = dashboard_token(cfg.paths.home, ec);
    if (!ec)
      server->allow_actions(token, [w = weak_from_this()](const std::string& app, const std::string& what,
                                                          std::int64_t workers, auto reply) {
        if (auto d = w.lock()) d->act(app, what, workers, std::move(reply));
      });
    if (auto ec = server->listen(port)) return ec;
    server->show_history(&history);
    metrics = std::move(server);
    return {};
  }

  // A dashboard action, as the CLI's request of the same name would do it (handle()), answered through an
  // in-process session.
  void act(const std::string& name, const std::string& what, std::int64_t workers,
           std::function<void(bool, const json::object&)> reply) {
    static const std::set<std::string, std::less<>> actions{"reload", "restart", "stop", "start", "scale"};
    if (!actions.contains(what)) return reply(false, {{"ok", false}, {"error", "no action '" + what + "'"}});
    json::object req{{"cmd", what}, {"name", name}};
    if (what == "scale") req["workers"] = workers;
    auto last = std::make_shared<json::object>();
    auto s = std::make_shared<control_session>(io.get_executor(), [last](const json::object& a) {
      if (a.contains("ok")) *last = a;
    });
    s->on_close([last, reply = std::move(reply)] {
      const auto* ok = last->if_contains("ok");
      reply(ok && ok->is_bool() && ok->get_bool(), *last);
    });
    say("clutch: the dashboard asks: " + what + " " + name);
    handle(std::move(req), s);
  }

  void ping(const json::object&, const session_ptr& s) {
    s->send({{"ok", true}, {"pid", ::getpid()}});
    s->end();
  }

  // Answered once every app has stopped, so that the CLI returns only then.
  void kill(const json::object&, const session_ptr& s) {
    killers.push_back(s);
    shutdown();
  }

  void status(const json::object& req, const session_ptr& s) {
    auto list = named(req, s);
    if (list.empty()) return;
    auto& a = *list.front();
    auto o = describe(a);
    o["command"] = a.spec.run.program;
    o["args"] = json::value_from(a.spec.run.args);
    o["cwd"] = a.spec.run.cwd;
    o["out_file"] = a.out ? a.out->path() : "";
    o["err_file"] = a.err ? a.err->path() : "";
    json::array listen;
    if (a.eng)
      for (const auto& at : a.eng->addresses()) listen.push_back(json::string(at));
    o["listen"] = std::move(listen);
    json::array events;
    for (const auto& ev : a.events) {
      json::object e{{"when", ev.when}, {"who", ev.who}, {"how", ev.how}, {"asked", ev.asked}};
      if (ev.lines && !ev.asked) e["last_lines"] = json::value_from(ev.lines->lines());
      events.push_back(std::move(e));
    }
    o["events"] = std::move(events);
    s->send({{"ok", true}, {"app", std::move(o)}});
    s->end();
  }

  void stop_apps(const json::object& req, const session_ptr& s) {
    for_each_app(named(req, s), s, [this](const std::shared_ptr<app>& a, std::function<void(std::string)> finish) {
      stop(a, [finish]() { finish(""); });
    });
  }

  void delete_apps(const json::object& req, const session_ptr& s) {
    for_each_app(named(req, s), s, [this](const std::shared_ptr<app>& a, std::function<void(std::string)> finish) {
      stop(a, [this, a, finish]() {
        apps.erase(a->spec.name);
        finish("");
      });
    });
  }

  // --update-env (PM2's): the apps start from the caller's environment from now on.
  static void update_env(const json::object& req, app& a) {
    const auto* u = req.if_contains("update_env");
    if (!u || !u->is_bool() || !u->get_bool()) return;
    if (auto env = caller_env(req)) a.spec.run.base_env = std::move(env);
    if (a.eng) a.eng->set_settings(a.spec.run);
  }

  void restart(const json::object& req, const session_ptr& s) {
    for_each_app(named(req, s), s, [this, req](const std::shared_ptr<app>& a, std::function<void(std::string)> finish) {
      update_env(req, *a);
      stop(a, [this, a, finish]() {
        std::string why;
        launch(a, why);
        finish(why);
      });
    });
  }

  // {name} reloads running apps; {apps} is a file's apps, with the settings it has now (reload_file).
  void reload(const json::object& req, const session_ptr& s) {
    if (req.contains("apps")) return reload_file(req, s);
    for_each_app(named(req, s), s, [req](const std::shared_ptr<app>& a, std::function<void(std::string)> finish) {
      if (a->st != app::state::running) return finish("it is " + std::string(state_name(a->st)));
      update_env(req, *a);
      a->eng->reload([finish](error_code ec) { finish(ec ? ec.message() : ""); });
    });
  }

  void scale(const json::object& req, const session_ptr& s) {
    auto list = named(req, s);
    if (list.empty()) return;
    const auto n = int_field(req, "workers");
    if (n < 1 || n > 1024 || list.size() != 1) return fail(s, "scale takes one app and a count from 1 to 1024");
    auto& a = *list.front();
    a.spec.run.workers = static_cast<unsigned>(n);
    a.spec.workers_auto = false;
    a.source["workers"] = n;
    if (a.eng) a.eng->scale(static_cast<unsigned>(n));
    history.event(a.spec.name, "scale", "scaled to " + std::to_string(n) + " workers");
    s->send({{"ok", true}, {"workers", n}});
    s->end();
  }

  using request_handler = void (daemon_state::*)(const json::object&, const session_ptr&);
  // Every request the daemon answers: {"cmd": NAME, …} → its member. The CLI's side is tools/clutch/main.cpp's
  // command table.
  static const std::map<std::string, request_handler, std::less<>>& requests() {
    static const std::map<std::string, request_handler, std::less<>> table{
        {"ls", &daemon_state::ls},           {"ping", &daemon_state::ping},
        {"start", &daemon_state::start},     {"kill", &daemon_state::kill},
        {"logs", &daemon_state::logs},       {"status", &daemon_state::status},
        {"stop", &daemon_state::stop_apps},  {"delete", &daemon_state::delete_apps},
        {"restart", &daemon_state::restart}, {"reload", &daemon_state::reload},
        {"scale", &daemon_state::scale},     {"save", &daemon_state::save},
        {"resurrect", &daemon_state::resurrect}, {"dashboard", &daemon_state::dashboard},
    };
    return table;
  }

  // Every request, from the control socket or the dashboard. One request's failure is that client's error;
  // nothing a request does may end the daemon and its apps.
  void handle(json::object req, const session_ptr& s) {
    try {
      dispatch(std::move(req), s);
    } catch (const std::exception& x) {
      say(std::string("clutch: a request failed: ") + x.what());
      s->send({{"ok", false}, {"error", std::string("the daemon could not do that: ") + x.what()}});
      s->end();
    }
  }

  void dispatch(json::object req, const session_ptr& s) {
    const std::string cmd(string_field(req, "cmd"));
    if (shutting_down) return fail(s, "the daemon is shutting down");
    const auto& table = requests();
    const auto it = table.find(cmd);
    if (it == table.end()) return fail(s, "unknown request '" + cmd + "'");
    (this->*it->second)(req, s);
    // What changes the table is written; what only reads it is not (an `ls` costs no write).
    static const std::set<std::string_view> reads_only{"ls", "ping", "logs", "status", "save", "dashboard"};
    if (!reads_only.contains(cmd)) persist();
  }

  // logs {name (none or "all": every app), lines, follow}: {"ok"} (with "out_file", "err_file" for one app), the
  // last lines of each file ({"app", "line", "stream"}, app by app, out before err), then with follow each new line
  // as it is read ({"app", "line", "stream", "time"}). A line is as the file holds it: "[3] text".
  void logs(const json::object& req, const session_ptr& s) {
    const std::string name(string_field(req, "name"));
    const bool every = name.empty() || name == "all";
    const auto* f = req.if_contains("follow");
    const bool follow = f && f->is_bool() && f->get_bool();
    std::vector<std::shared_ptr<app>> list;
    if (every) {
      for (auto& [n, a] : apps) list.push_back(a);
      // Following, an empty daemon is fine: the apps started next will be followed.
      if (list.empty() && !follow) return fail(s, "no app is defined (clutch start first)");
    } else {
      list = named(req, s);
      if (list.empty()) return;
    }
    for (auto& a : list)
      if (!a->out && open_logs(*a)) return fail(s, "cannot open the log files of " + a->spec.name);
    auto n = static_cast<std::size_t>(std::clamp<std::int64_t>(int_field(req, "lines", 15), 0, 100000));
    // Each line is an answer in the session's queue: fewer lines of each file, rather than a session cut off.
    if (!list.empty()) n = std::min(n, (control_session::max_queued - 16) / (2 * list.size()));
    json::object head{{"ok", true}};
    if (!every) {
      head["out_file"] = list.front()->out->path();
      head["err_file"] = list.front()->err->path();
    }
    s->send(head);
    for (auto& a : list)
      for (int i : {0, 1}) {
        const auto* file = i ? a->err.get() : a->out.get();
        // A file per instance (merge_logs = false): the lines this daemon wrote, in the order it wrote them.
        std::deque<std::string> lines;
        if (a->spec.merge_logs) {
          lines = tail_file(file->path(), n);
        } else {
          for (auto w = a->written[i].end() - static_cast<std::ptrdiff_t>(std::min(n, a->written[i].size()));
               w != a->written[i].end(); ++w)
            lines.push_back(w->second);
        }
        // The file's last lines are the last this daemon wrote, as long as they read the same: those get the
        // time it read them.
        const auto& written = a->written[i];
        std::vector<std::string> times(lines.size());
        auto w = written.rbegin();
        for (auto l = lines.rbegin(); l != lines.rend() && w != written.rend() && *l == w->second; ++l, ++w)
          times[static_cast<std::size_t>(lines.rend() - l - 1)] = w->first;
        for (std::size_t k = 0; k < lines.size(); ++k) {
          json::object answer{{"app", a->spec.name}, {"line", lines[k]}, {"stream", i ? "err" : "out"}};
          if (!times[k].empty()) answer["time"] = times[k];
          s->send(answer);
        }
      }
    if (!follow) return s->end();
    if (every) {
      all_followers.push_back(s);
      s->on_close([self = weak_from_this(), ws = std::weak_ptr(s)] {
        if (auto d = self.lock())
          std::erase_if(d->all_followers, [&](const session_ptr& f) { return f == ws.lock() || !f->open(); });
      });
      return;
    }
    auto a = list.front();
    a->followers.push_back(s);
    s->on_close([wa = std::weak_ptr(a), ws = std::weak_ptr(s)] {
      auto a = wa.lock();
      if (!a) return;
      std::erase_if(a->followers, [&](const session_ptr& f) { return f == ws.lock() || !f->open(); });
    });
  }

  // {"cmd": "start", "name": N}: a known app that is stopped or errored starts again, as it was defined.
  void start_known(const json::object& req, const session_ptr& s) {
    auto list = named(req, s);
    if (list.empty()) return;
    auto a = list.front();
    if (a->st == app::state::running || a->st == app::state::stopping) {
      s->send({{"ok", true}, {"apps", json::array{json::object{{"name", a->spec.name}, {"started", false},
                                                                {"state", state_name(a->st)}}}}});
      return s->end();
    }
    std::string why;
    if (launch(a, why)) return fail(s, a->spec.name + ": " + why);
    say(a->spec.name + ": started again");
    s->send({{"ok", true}, {"apps", json::array{json::object{{"name", a->spec.name}, {"started", true},
                                                              {"workers", a->spec.run.workers}}}}});
    s->end();
  }

  // {"cmd": "start", "apps": [...]}: new apps, or known ones that are stopped or errored with these settings.
  // With "keep_running" (a file's apps, PM2's `start ecosystem.config.js`), an app that runs already is left
  // alone and said to be; without it (`start --name`), that is an error.
  void start(const json::object& req, const session_ptr& s) {
    if (!req.contains("apps") && req.contains("name")) return start_known(req, s);
    const auto* keep = req.if_contains("keep_running");
    const bool keep_running = keep && keep->is_bool() && keep->get_bool();
    json::array left_alone;
    const auto* list = req.if_contains("apps");
    if (!list || !list->is_array() || list->as_array().empty()) return fail(s, "start: no app given");
    std::vector<std::pair<app_spec, json::object>> specs;
    for (const auto& v : list->as_array()) {
      std::string why;
      if (!v.is_object()) return fail(s, "start: an app must be a JSON object");
      auto spec = app_from_json(v.as_object(), why);
      if (!spec) return fail(s, why);
      if (auto it = apps.find(spec->name); it != apps.end() && (it->second->st == app::state::running ||
                                                                 it->second->st == app::state::stopping)) {
        if (keep_running) {
          left_alone.push_back(json::object{{"name", spec->name}, {"started", false},
                                            {"state", state_name(it->second->st)}});
          continue;
        }
        return fail(s, "app '" + spec->name + "' is already " + state_name(it->second->st) +
                           " (clutch restart " + spec->name + ", or clutch stop " + spec->name + " first)");
      }
      specs.emplace_back(std::move(*spec), v.as_object());
    }
    assign_auto_workers(specs);
    json::array started;
    std::string errors;
    const auto env = caller_env(req);  // one, shared by the apps of this start
    for (auto& [spec, source] : specs) {
      auto a = std::make_shared<app>();
      a->spec = std::move(spec);
      a->spec.run.base_env = env;
      a->source = std::move(source);
      const auto name = a->spec.name;
      apps[name] = a;
      std::string why;
      if (launch(a, why)) {
        errors += (errors.empty() ? "" : "; ") + name + ": " + why;
        apps.erase(name);
        continue;
      }
      say(name + ": started, " + std::to_string(a->spec.run.workers) + " workers of " + a->spec.run.program);
      started.push_back(json::object{{"name", name}, {"workers", a->spec.run.workers}, {"started", true}});
    }
    for (auto& v : left_alone) started.push_back(std::move(v));
    if (errors.empty()) s->send({{"ok", true}, {"apps", std::move(started)}});
    else s->send({{"ok", false}, {"error", errors}, {"apps", std::move(started)}});
    s->end();
  }

  // workers = "auto": the CPUs shared between these apps and the daemon's other running auto apps.
  void assign_auto_workers(std::vector<std::pair<app_spec, json::object>>& specs) const {
    unsigned auto_apps = 0;
    for (const auto& p : specs) auto_apps += p.first.workers_auto;
    // Not a structured binding: Clang before 16 cannot capture one in a lambda.
    for (const auto& entry : apps) {
      const auto& a = entry.second;
      const bool given = std::any_of(specs.begin(), specs.end(),
                                     [&entry](const auto& p) { return p.first.name == entry.first; });
      if (a->spec.workers_auto && (a->st == app::state::running || a->st == app::state::stopping) && !given)
        ++auto_apps;
    }
    const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    for (auto& p : specs)
      if (p.first.workers_auto) p.first.run.workers = auto_workers(cpus, auto_apps, !p.first.run.agent.empty());
  }

  // Does a running app with spec `was` need a restart (not a rolling reload) to take `now`? Its sockets, its agent
  // and its log files are set up when it starts; everything else reaches the workers started by a reload.
  static bool needs_restart(const app_spec& was, const app_spec& now) {
    auto addresses = [](const app_spec& a) {
      std::vector<std::string> out;
      for (const auto& l : a.run.listen) out.push_back(l.name + "=" + address_text(l));
      return out;
    };
    return addresses(was) != addresses(now) || was.run.steer != now.run.steer || was.run.agent != now.run.agent ||
           was.out_file != now.out_file || was.err_file != now.err_file || was.log_max_size != now.log_max_size ||
           was.log_keep != now.log_keep || was.merge_logs != now.merge_logs;
  }

  // {"cmd": "reload", "apps": [...]} (PM2's startOrReload): a file's apps with the settings it has now. A running
  // app gets a rolling reload with them (or a restart, when its sockets, agent or log files changed); the
  // others start.
  void reload_file(const json::object& req, const session_ptr& s) {
    const auto* list = req.if_contains("apps");
    if (!list || !list->is_array() || list->as_array().empty()) return fail(s, "reload: no app given");
    std::vector<std::pair<app_spec, json::object>> specs;
    for (const auto& v : list->as_array()) {
      std::string why;
      if (!v.is_object()) return fail(s, "reload: an app must be a JSON object");
      auto spec = app_from_json(v.as_object(), why);
      if (!spec) return fail(s, why);
      if (auto it = apps.find(spec->name); it != apps.end() && it->second->st == app::state::stopping)
        return fail(s, "app '" + spec->name + "' is stopping; try again once it has stopped");
      specs.emplace_back(std::move(*spec), v.as_object());
    }
    assign_auto_workers(specs);
    struct tally {
      std::size_t left;
      std::string errors;
      json::array done;
    };
    auto t = std::make_shared<tally>(tally{specs.size(), {}, {}});
    auto finish = [t, s](const std::string& name, const std::string& action, const std::string& error) {
      if (!error.empty()) t->errors += (t->errors.empty() ? "" : "; ") + name + ": " + error;
      else t->done.push_back(json::object{{"name", name}, {"action", action}});
      if (--t->left > 0) return;
      if (t->errors.empty()) s->send({{"ok", true}, {"apps", t->done}});
      else s->send({{"ok", false}, {"error", t->errors}, {"apps", t->done}});
      s->end();
    };
    const auto* u = req.if_contains("update_env");
    const bool take_env = u && u->is_bool() && u->get_bool();
    const auto env = caller_env(req);
    for (auto& [spec, source] : specs) {
      const std::string name = spec.name;
      auto it = apps.find(name);
      // A new app starts from the caller's environment; a known one keeps its own unless --update-env.
      spec.run.base_env = it == apps.end() || take_env ? env : it->second->spec.run.base_env;
      if (it == apps.end() || it->second->st != app::state::running) {
        auto a = std::make_shared<app>();
        a->spec = std::move(spec);
        a->source = std::move(source);
        if (it != apps.end()) a->events = it->second->events;
        apps[name] = a;
        std::string why;
        if (launch(a, why)) {
          apps.erase(name);
          finish(name, "", why);
          continue;
        }
        say(name + ": started, " + std::to_string(a->spec.run.workers) + " workers of " + a->spec.run.program);
        finish(name, "started", "");
        continue;
      }
      auto a = it->second;
      if (needs_restart(a->spec, spec)) {
        stop(a, [this, a, spec = std::move(spec), source = std::move(source), finish, name]() mutable {
          a->spec = std::move(spec);
          a->source = std::move(source);
          a->out.reset();  // its log files may have moved
          a->err.reset();
          std::string why;
          launch(a, why);
          say(name + ": restarted with its new settings");
          finish(name, "restarted", why);
        });
        continue;
      }
      const unsigned workers = spec.run.workers;
      a->spec = std::move(spec);
      a->source = std::move(source);
      a->eng->set_settings(a->spec.run);
      say(name + ": reload with its new settings");
      a->eng->reload([a, workers, finish, name](error_code ec) {
        if (!ec && a->eng && a->eng->workers() != workers) a->eng->scale(workers);
        finish(name, "reloaded", ec ? ec.message() : "");
      });
    }
  }

  void shutdown() {
    if (std::exchange(shutting_down, true)) return;
    if (persist_timer) persist_timer->cancel();
    say("clutch: stopping every app");
    control.close();
    auto left = std::make_shared<std::size_t>(apps.size() + 1);
    auto one_done = [self = shared_from_this(), left] {
      if (--*left > 0) return;
      self->say("clutch: every app stopped; the daemon ends");
      ::unlink(self->cfg.paths.socket.c_str());
      ::unlink(self->cfg.paths.pid_file.c_str());
      // The daemon ends once the answers to `clutch kill` are out.
      auto left = std::make_shared<std::size_t>(self->killers.size() + 1);
      auto end = [self, left] {
        if (--*left == 0 && self->done) self->done();
      };
      for (auto& k : std::exchange(self->killers, {})) {
        k->on_close(end);
        k->send({{"ok", true}, {"pid", ::getpid()}});
        k->end();
      }
      end();
    };
    for (auto& [name, a] : apps) stop(a, [one_done]() { one_done(); });
    one_done();
  }
};

namespace {
// As systemd and nginx do: the soft limit up to the hard one, so that many apps' pipes, sockets and clients do
// not run the daemon out of descriptors at a low default (1024).
void raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}
}  // namespace

daemon::daemon(asio::io_context& io, daemon_settings s) : state_(std::make_shared<daemon_state>(io, std::move(s))) {}

daemon::~daemon() = default;

error_code daemon::start() {
  auto& d = *state_;
  const auto& p = d.cfg.paths;
  raise_fd_limit();
  if (auto ec = private_folder(p.home)) return ec;
  if (auto ec = private_folder(p.logs)) return ec;
  // One daemon per home: the lock is held as long as the daemon lives.
  d.lock.reset(::open(p.lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!d.lock) return error_code(errno, boost::system::system_category());
  if (::flock(d.lock.get(), LOCK_EX | LOCK_NB) != 0) return error_code(errno, boost::system::system_category());
  d.control = control_server(d.io, [w = std::weak_ptr(state_)](json::object req, session_ptr s) {
    if (auto d = w.lock()) d->handle(std::move(req), s);
  });
  if (auto ec = d.control.listen(p.socket)) return ec;
  if (d.cfg.metrics_port) {
    if (auto ec = d.serve_status(static_cast<unsigned short>(d.cfg.metrics_port))) return ec;
  }
  // We hold the lock, so the last daemon is gone: its pid file left behind says it ended without stopping its
  // apps (killed, crashed, the machine reset). Its live table brings them back as they were.
  std::string last_pid;
  if (std::ifstream(p.pid_file) >> last_pid || d.cfg.resurrect) {
    const bool crashed = !last_pid.empty();
    const auto& file = crashed ? p.table : p.dump;
    std::string why;
    if (auto entries = read_table(file, why)) {
      const auto names = d.restore(*entries);
      if (crashed)
        d.say("clutch: the last daemon (pid " + last_pid + ") ended without stopping its apps; restored " +
              std::to_string(names.size()) + " apps from " + file);
      else
        d.say("clutch: resurrected " + std::to_string(names.size()) + " apps from " + file);
    } else {
      d.say("clutch: nothing restored: " + why);
    }
  }
  std::ofstream(p.pid_file) << ::getpid() << '\n';
  d.say("clutch: daemon " + std::to_string(::getpid()) + " listening on " + p.socket +
        (d.metrics ? ", status on http://127.0.0.1:" + std::to_string(d.metrics->port()) : std::string()));
  return {};
}

void daemon::reopen_logs() {
  for (auto& [name, a] : state_->apps) {
    std::vector<log_file*> files{a->out.get(), a->err.get()};
    for (auto& by_slot : a->instance_logs)
      for (auto& [slot, f] : by_slot) files.push_back(f.get());
    for (auto* f : files)
      if (f) {
        if (auto ec = f->reopen()) state_->say(name + ": cannot reopen " + f->path() + ": " + ec.message());
      }
  }
  state_->say("clutch: log files reopened");
}

void daemon::shutdown() { state_->shutdown(); }
void daemon::on_done(std::function<void()> h) { state_->done = std::move(h); }

std::vector<int> daemon::pids() const {
  std::vector<int> out;
  for (auto& [name, a] : state_->apps)
    if (a->eng)
      for (int pid : a->eng->pids()) out.push_back(pid);
  return out;
}


}  // namespace clutch::supervisor
