// The clutch command: any program as a cluster, in the foreground (`clutch run`) or under a daemon driven by the
// other commands. `clutch --help` and `clutch COMMAND --help` list the options.
//
//   clutch run [OPTIONS] -- PROGRAM [ARGS…]          the engine in the foreground (a container's PID 1, a unit)
//   clutch start FILE.toml | --name NAME [OPTIONS] -- PROGRAM [ARGS…]
//                                                    the app(s) in the daemon, which starts if it is not running
//   clutch ls [--json] | status NAME [--json] | stop|restart|reload|delete NAME|all | scale NAME N
//   clutch logs [NAME] [-f] [-n LINES] [--timestamps] | monit | dashboard | save | resurrect | startup | kill | daemon
//   clutch completion bash|zsh                       (and `clutch manpage`, hidden: the .deb's clutch.1)
//
// `run`: SIGHUP reloads (one worker at a time, each replacement ready before its old worker gets the stop
// signal); SIGTERM or SIGINT stops every worker's process group and exits with how it ended (0, a worker's code,
// or 128+signal); SIGUSR1 and SIGUSR2 are passed on. clutch is a subreaper and reaps its workers' orphans (also as
// PID 1). Under systemd it takes the sockets it is given (LISTEN_FDS) and reports READY=1, RELOADING=1 and
// STOPPING=1 to its NOTIFY_SOCKET.
// The daemon keeps its files in $CLUTCH_HOME (default ~/.clutch); see src/supervisor/control.hpp.
#include <fcntl.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "common/exit_text.hpp"
#include "common/json_fields.hpp"
#include "os/kernel.hpp"
#include "os/proc_stat.hpp"
#include "os/self.hpp"
#include "supervisor/config.hpp"
#include "supervisor/control.hpp"
#include "supervisor/daemon.hpp"
#include "supervisor/ecosystem.hpp"
#include "supervisor/engine.hpp"
#include "supervisor/notify.hpp"
#include "supervisor/reaper.hpp"
#include "supervisor/status.hpp"
#include "docs.hpp"
#include "monit.hpp"
#include "text.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
namespace sv = clutch::supervisor;
using clutch::detail::number_of;
using clutch_cli::human_bytes;
using clutch_cli::human_time;

namespace {

// The options `run` and `start --name` share: what an app is. They become the JSON object that config.hpp
// checks, as a TOML file's apps do.
struct app_options {
  std::string name;
  std::string workers;
  std::vector<std::string> listen, env;
  std::string ready, stop_signal, restart, agent, max_memory, cwd, log_max_size, uid, gid, kill_mode;
  std::string log_date_format;
  std::string instance_var;
  long kill_timeout_ms = -1, watchdog_ms = -1, log_keep = -1, ready_timeout_ms = -1;
  bool shared_socket = false, node_cluster = false, no_node_cluster = false, shutdown_message = false,
       signal_first = false;

  void add_to(CLI::App* cmd, bool daemon) {
    cmd->add_option("--workers,-i,--instances", workers,
                    "worker processes: N, max or 0 (the CPUs), -N (the CPUs but N); default: the CPUs"
                    "; start: also \"auto\"");
    cmd->add_option("--listen", listen, "[NAME=][HOST:]PORT or unix:PATH, bound by clutch and passed as LISTEN_FDS");
    cmd->add_option("--ready", ready,
                    "when a worker counts as ready: none (default: once it runs), notify (it sends READY=1) or "
                    "listen (it waits for connections on its socket)");
    cmd->add_option("--ready-timeout", ready_timeout_ms, "ms a worker has to be ready (notify, listen; default 30000)");
    cmd->add_option("--stop-signal", stop_signal, "what a worker's group gets to stop (default SIGTERM)");
    cmd->add_option("--kill-timeout", kill_timeout_ms, "ms from the stop signal to SIGKILL (default 5000)");
    cmd->add_option("--kill-mode", kill_mode,
                    "group (default): the stop signal to the worker's whole process group; mixed: to its main "
                    "process only (it stops its own children), SIGKILL to the group at the deadline");
    cmd->add_option("--watchdog", watchdog_ms, "ms within which each worker must send WATCHDOG=1 (0: none)");
    cmd->add_option("--agent", agent, "a command (run by /bin/sh -c) started before the workers, stopped after");
    cmd->add_option("--max-memory", max_memory, "replace a worker gracefully past this RSS (e.g. 512M, 2G)");
    cmd->add_option("--restart", restart, "when an exited worker is replaced: always (default), on-failure, never");
    cmd->add_option("--cwd", cwd, "the workers' working folder");
    cmd->add_option("--uid", uid, "the user the workers run as: a name or a number (PM2's uid)");
    cmd->add_option("--gid", gid, "their group: a name or a number (default: the user's own group)");
    cmd->add_option("--env", env, "KEY=VALUE added to the workers' environment (repeatable)");
    cmd->add_flag("--node-cluster", node_cluster,
                  "serve Node's cluster protocol to the workers (the default for node and .js programs; for a "
                  "wrapper such as npm start)");
    cmd->add_flag("--no-node-cluster", no_node_cluster, "a Node program without Node's cluster protocol");
    cmd->add_flag("--signal-first", signal_first,
                  "stop a Node worker with its stop signal first, as PM2 does (default: Node's disconnect first)");
    cmd->add_option("--instance-var", instance_var,
                    "the variable that holds a worker's instance number, 0…N-1 (default NODE_APP_INSTANCE)");
    cmd->add_flag("--shutdown-with-message", shutdown_message,
                  "a Node worker gets the message 'shutdown' before its stop signal (PM2's shutdown_with_message)");
    cmd->add_flag("--shared-socket", shared_socket,
                  "one TCP socket per --listen that every worker accepts from (default: a socket per worker, with "
                  "new connections steered away from a worker about to stop)");
    if (daemon) {
      cmd->add_option("--name", name, "the app's name (start without a file)");
      cmd->add_option("--log-max-size", log_max_size, "rotate a log file past this size (default 10M)");
      cmd->add_option("--log-keep", log_keep, "rotated log files kept (default 5)");
      cmd->add_option("--log-date-format", log_date_format,
                      "each line in the log files begins with the date so written (PM2's, e.g. \"YYYY-MM-DD HH:mm:ss\")");
    } else {
      cmd->add_option("--name", name, "the name in /metrics and /api/status (default: the program's)");
    }
  }

  // The app as config.hpp takes it; why says what is wrong.
  std::optional<json::object> to_json(const std::vector<std::string>& command, std::string& why) const {
    json::object o;
    // As PM2: app.js is named app.
    const std::filesystem::path given(command.front());
    o["name"] = !name.empty()                ? name
                : sv::is_node_script(command.front()) ? given.stem().string()
                                               : given.filename().string();
    std::string program = command.front();
    // A relative path is the caller's: the daemon's own folder is another.
    if (program.find('/') != std::string::npos && program.front() != '/')
      program = std::filesystem::absolute(program).lexically_normal().string();
    o["command"] = program;
    o["args"] = json::value_from(std::vector<std::string>(command.begin() + 1, command.end()));
    if (!workers.empty()) {
      const long cpus = std::max(1u, std::thread::hardware_concurrency());
      if (workers == "auto") {
        o["workers"] = "auto";
      } else if (workers == "max") {
        o["workers"] = cpus;
      } else {
        try {
          std::size_t used = 0;
          const long n = std::stol(workers, &used);
          if (used != workers.size()) throw std::invalid_argument(workers);
          // PM2's -i: 0 is every CPU, -N all but N (at least one).
          o["workers"] = n == 0 ? cpus : n < 0 ? std::max(1L, cpus + n) : n;
        } catch (const std::exception&) {
          why = "--workers '" + workers + "' must be a number, max (or auto)";
          return std::nullopt;
        }
      }
    }
    if (node_cluster && no_node_cluster) {
      why = "--node-cluster and --no-node-cluster: one or the other";
      return std::nullopt;
    }
    if (node_cluster || no_node_cluster) o["node_cluster"] = node_cluster;
    if (!instance_var.empty()) o["instance_var"] = instance_var;
    if (shutdown_message) o["shutdown_with_message"] = true;
    if (signal_first) o["disconnect_first"] = false;
    if (!listen.empty()) o["listen"] = json::value_from(listen);
    if (!ready.empty()) o["ready"] = ready;
    if (!stop_signal.empty()) o["stop_signal"] = stop_signal;
    if (!restart.empty()) o["restart"] = restart;
    if (!kill_mode.empty()) o["kill_mode"] = kill_mode;
    if (!agent.empty()) o["agent"] = agent;
    if (!max_memory.empty()) o["max_memory"] = max_memory;
    if (!log_max_size.empty()) o["log_max_size"] = log_max_size;
    if (!log_date_format.empty()) o["log_date_format"] = log_date_format;
    if (!uid.empty()) o["uid"] = uid;
    if (!gid.empty()) o["gid"] = gid;
    o["cwd"] = cwd.empty() ? std::filesystem::current_path().string() : std::filesystem::absolute(cwd).string();
    if (kill_timeout_ms >= 0) o["kill_timeout"] = kill_timeout_ms;
    if (watchdog_ms >= 0) o["watchdog"] = watchdog_ms;
    if (ready_timeout_ms >= 0) o["ready_timeout"] = ready_timeout_ms;
    if (log_keep >= 0) o["log_keep"] = log_keep;
    if (shared_socket) o["shared_socket"] = true;
    json::object vars;
    for (const auto& kv : env) {
      const auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        why = "--env '" + kv + "' must be KEY=VALUE";
        return std::nullopt;
      }
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    if (!vars.empty()) o["env"] = std::move(vars);
    if (sv::app_from_json(o, why, sv::field_names::options)) return o;
    return std::nullopt;
  }
};

int run(sv::run_settings s, const std::string& name, unsigned short status_port) {
  asio::io_context io{1};
  // What our own supervisor gave us, if any (systemd: socket activation, Type=notify): taken before the workers
  // start, so that they see only ours.
  auto given = sv::inherited_listeners();
  const auto parent = sv::notify_client::from_environment();
  const unsigned workers = s.workers;
  sv::engine e(io, std::move(s));
  e.on_log([](const std::string& line) { std::cerr << line << std::endl; });
  e.adopt(std::move(given));
  e.on_ready([&] { parent.send("READY=1\nSTATUS=" + std::to_string(workers) + " workers ready"); });
  sv::usage_meter meter;
  std::optional<sv::status_server> status;
  // The dashboard, read-only here (its actions are the daemon's): the page, its charts and its timeline.
  sv::timeline history;
  if (status_port) {
    status.emplace(io, [&] {
      return json::object{{"apps", json::array{sv::app_status(name, e, meter)}},
                          {"supervisor", sv::supervisor_status(meter)}};
    });
    if (auto ec = status->listen(status_port)) {
      std::cerr << "clutch: --status-port " << status_port << ": " << ec.message() << std::endl;
      return 1;
    }
    status->show_history(&history);
    e.on_event([&](std::string_view kind, const std::string& text) { history.event(name, kind, text); });
    e.on_exit([&](const sv::process_tag& tag, const clutch::exit_status& st, bool asked) {
      if (!asked)
        history.event(name, "crash",
                      clutch::detail::process_label(tag.agent, tag.id, tag.pid) + " " + clutch::detail::describe(st));
    });
    std::cerr << "clutch: status and dashboard on http://127.0.0.1:" << status->port() << "/" << std::endl;
  }
  // Orphans of the workers' trees come to us (as they would to a container's PID 1), and we reap them.
  sv::orphan_reaper children(io, [&] { return e.pids(); });
  asio::signal_set signals(io, SIGHUP, SIGTERM, SIGINT);
  signals.add(SIGUSR1);
  signals.add(SIGUSR2);
  int code = 0;
  auto finish = [&] {
    code = e.exit_code();
    signals.cancel();
    children.cancel();
    if (status) status->close();
    io.stop();
  };
  std::function<void(clutch::error_code, int)> on_signal = [&](clutch::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGUSR1 || sig == SIGUSR2) {  // for the program: passed on (as a container's PID 1 must)
      e.signal_all(sig);
      return signals.async_wait(on_signal);
    }
    if (sig == SIGHUP) {
      parent.send("RELOADING=1\nSTATUS=reloading");
      e.reload([&](clutch::error_code ec) {
        parent.send(ec ? "READY=1\nSTATUS=reload failed: " + ec.message() : std::string("READY=1\nSTATUS=reloaded"));
      });
      return signals.async_wait(on_signal);
    }
    parent.send("STOPPING=1\nSTATUS=stopping");
    std::cerr << "clutch: stopping" << std::endl;
    e.stop(finish);
  };
  signals.async_wait(on_signal);
  e.on_all_gone([&] {
    std::cerr << "clutch: no worker left to run" << std::endl;
    finish();
  });
  // Only now, with every signal handled: whoever sees a worker start may signal us at once.
  if (auto ec = e.start()) {
    std::cerr << "clutch: " << (e.last_error().empty() ? ec.message() : e.last_error()) << std::endl;
    return 1;
  }
  io.run();
  return code;
}

int run_daemon(unsigned metrics_port, bool resurrect) {
  asio::io_context io{1};
  // systemd's Type=notify (`clutch startup`'s unit): READY=1 once the apps are restored and requests are taken.
  const auto parent = sv::notify_client::from_environment();
  sv::daemon d(io, {.paths = sv::daemon_paths::from_environment(), .metrics_port = metrics_port,
                    .resurrect = resurrect});
  sv::orphan_reaper children(io, [&] { return d.pids(); });
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGUSR1);
  signals.add(SIGHUP);
  std::function<void(clutch::error_code, int)> on_signal = [&](clutch::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGUSR1) d.reopen_logs();      // after logrotate (or anyone) moved the files away
    if (sig == SIGTERM || sig == SIGINT) d.shutdown();
    signals.async_wait(on_signal);            // SIGHUP: ignored (the daemon has no terminal to lose)
  };
  signals.async_wait(on_signal);
  d.on_done([&] {
    signals.cancel();
    children.cancel();
    io.stop();
  });
  if (auto ec = d.start()) {  // with every signal handled
    std::cerr << "clutch daemon: "
              << (ec == std::errc::operation_would_block ? "another daemon is running for this CLUTCH_HOME"
                                                         : ec.message())
              << std::endl;
    return 1;
  }
  parent.send("READY=1\nSTATUS=taking requests");
  io.run();
  return 0;
}

// ---- the CLI's side of the control socket ----------------------------------------------------------------------

bool no_daemon(const clutch::error_code& ec) {
  return ec == std::errc::no_such_file_or_directory || ec == std::errc::connection_refused;
}

// Starts `clutch daemon` in the background (its own session, output to daemon.log) and waits until it answers.
clutch::error_code launch_daemon(const sv::daemon_paths& paths, unsigned metrics_port) {
  if (auto ec = sv::private_folder(paths.home)) return ec;
  const int log = ::open(paths.daemon_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log < 0) return clutch::error_code(errno, boost::system::system_category());
  asio::io_context io;
  std::vector<std::string> args{"daemon"};
  if (metrics_port) args.insert(args.end(), {"--metrics-port", std::to_string(metrics_port)});
  clutch::options o;
  o.detached = true;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::fd(log), clutch::stdio::fd(log)};
  auto daemon = clutch::spawn(io, clutch::os::self_command().exe, args, o);
  ::close(log);
  if (auto ec = daemon.spawn_error()) return ec;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       std::chrono::steady_clock::now() < end;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    const auto ec = sv::control_call(
        paths.socket, {{"cmd", "ping"}}, [](const json::object&) { return false; },
        std::max(left, std::chrono::milliseconds(1)));
    if (!ec) return {};
    if (!no_daemon(ec)) return ec;
    if (::waitpid(daemon.pid(), nullptr, WNOHANG) == daemon.pid())  // it gave up: its reason is in daemon.log
      return make_error_code(std::errc::no_child_process);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return make_error_code(std::errc::timed_out);
}

// How long the daemon may stay silent before the CLI gives up on it (zero: no bound), or nullopt when
// CLUTCH_TIMEOUT_MS is not a number. A command it answers at once gets 30 s. One it answers once workers have
// stopped or are ready can rightly take longer than any fixed bound (kill_timeout, ready_timeout are the app's), so
// it waits as long as it takes, and a daemon that dies still ends the wait (its connection closes).
// CLUTCH_TIMEOUT_MS sets one bound for all of them; never for an endless one (logs -f, which waits for lines as
// long as its user).
enum class answer { at_once, when_done, endless };
std::optional<std::chrono::milliseconds> answer_timeout(answer kind) {
  if (kind == answer::endless) return std::chrono::milliseconds::zero();
  if (const char* env = std::getenv("CLUTCH_TIMEOUT_MS"); env && *env) {
    char* end = nullptr;
    errno = 0;
    const long long ms = std::strtoll(env, &end, 10);
    if (*end != '\0' || ms < 0 || errno == ERANGE) return std::nullopt;
    return std::chrono::milliseconds(ms);
  }
  if (kind == answer::when_done) return std::chrono::milliseconds::zero();
  return std::chrono::seconds(30);
}

// Sends a request and passes the answers to print (true: more may come); returns the exit code. 0 only when the
// daemon answered, none of its answers was {"ok": false}, and print took them all; no_daemon_code when no daemon
// is running (and start_daemon is false).
constexpr int no_daemon_code = 3;
int call(const json::object& request, const std::function<bool(const json::object&)>& print,
         std::chrono::milliseconds timeout, bool start_daemon = false, unsigned metrics_port = 0) {
  auto paths = sv::daemon_paths::from_environment();
  paths.socket = paths.reachable_socket();
  int code = 0;
  bool first = true;
  auto take = [&](const json::object& a) {
    const auto* ok = a.if_contains("ok");
    const bool has_ok = ok && ok->is_bool();
    if (has_ok && !ok->get_bool()) {
      std::cerr << "clutch: " << clutch::detail::string_field(a, "error") << std::endl;
      code = 1;
      return false;
    }
    // Later answers (log lines) carry no "ok"; the first always does, so one without it is not the daemon's.
    if (std::exchange(first, false) && !has_ok) {
      std::cerr << "clutch: " << paths.socket << ": the answer is not the daemon's: " << json::serialize(a)
                << std::endl;
      code = 1;
      return false;
    }
    return print(a);
  };
  clutch::error_code ec;
  try {
    ec = sv::control_call(paths.socket, request, take, timeout);
    if (ec && no_daemon(ec) && start_daemon) {
      if (auto launch = launch_daemon(paths, metrics_port)) {
        std::cerr << "clutch: could not start the daemon: " << launch.message() << " (see " << paths.daemon_log
                  << ")" << std::endl;
        return 1;
      }
      ec = sv::control_call(paths.socket, request, take, timeout);
    }
  } catch (const std::exception& e) {  // an answer without the fields its command has (boost::json's at, as_…)
    std::cerr << "clutch: " << paths.socket << ": an answer is not what this clutch expects: " << e.what()
              << std::endl;
    return 1;
  }
  if (ec && no_daemon(ec)) return no_daemon_code;
  if (ec) {
    std::cerr << "clutch: " << paths.socket << ": " << ec.message();
    if (ec == sv::control_error::timed_out)
      std::cerr << " (silent for " << timeout.count() << " ms; CLUTCH_TIMEOUT_MS sets how long to wait)";
    std::cerr << std::endl;
    return 1;
  }
  return code;
}

// One app of a start's answer: started (with its workers), or left alone as it runs already.
void print_started(const json::object& a) {
  const std::string name(clutch::detail::string_field(a, "name"));
  const auto* started = a.if_contains("started");
  if (started && started->is_bool() && !started->get_bool()) {
    std::cout << "clutch: " << name << " is " << clutch::detail::string_field(a, "state") << " already; left alone"
              << std::endl;
    return;
  }
  std::cout << "clutch: started " << name << " (" << number_of(a.at("workers")) << " workers)" << std::endl;
}

void print_table(const json::array& apps) {
  std::printf("%-16s %-9s %5s %-7s %8s %-9s %6s %8s %8s %7s\n", "APP", "STATE", "ID", "ROLE", "PID", "PROCESS",
              "CPU%", "MEMORY", "RESTARTS", "UPTIME");
  for (const auto& av : apps) {
    const auto& a = av.as_object();
    const std::string name(a.at("name").as_string()), state(a.at("state").as_string());
    const auto& procs = a.at("processes").as_array();
    if (procs.empty()) std::printf("%-16s %-9s %5s %-7s %8s %-9s %6s %8s %8s %7s\n", name.c_str(), state.c_str(), "-",
                                   "-", "-", "-", "-", "-", "-", "-");
    for (const auto& pv : procs) {
      const auto& p = pv.as_object();
      const std::string role(p.at("role").as_string()), pstate(p.at("state").as_string());
      const std::string id = role == "agent" ? "-" : std::to_string(static_cast<long>(number_of(p.at("id"))));
      std::printf("%-16s %-9s %5s %-7s %8.0f %-9s %6.0f %8s %8.0f %7s\n", name.c_str(), state.c_str(), id.c_str(),
                  role.c_str(), number_of(p.at("pid")), pstate.c_str(), number_of(p.at("cpu")),
                  human_bytes(number_of(p.at("memory"))).c_str(), number_of(p.at("restarts")),
                  human_time(number_of(p.at("uptime"))).c_str());
    }
  }
}

void print_status(const json::object& a) {
  std::cout << "app:      " << a.at("name").as_string().c_str() << " (" << a.at("state").as_string().c_str() << ")\n"
            << "command:  " << a.at("command").as_string().c_str();
  for (const auto& arg : a.at("args").as_array()) std::cout << ' ' << arg.as_string().c_str();
  std::cout << "\ncwd:      " << a.at("cwd").as_string().c_str() << "\nworkers:  " << number_of(a.at("workers"))
            << "\nlisten:   ";
  for (const auto& l : a.at("listen").as_array()) std::cout << l.as_string().c_str() << ' ';
  std::cout << "\nlogs:     " << a.at("out_file").as_string().c_str() << ", " << a.at("err_file").as_string().c_str()
            << "\n\n";
  print_table(json::array{a});
  const auto& events = a.at("events").as_array();
  if (!events.empty()) std::cout << "\nexits (latest last):\n";
  for (const auto& ev : events) {
    const auto& e = ev.as_object();
    std::cout << "  " << e.at("when").as_string().c_str() << "  " << e.at("who").as_string().c_str() << " "
              << e.at("how").as_string().c_str() << (e.at("asked").as_bool() ? " (asked to stop)" : "") << "\n";
    if (const auto* lines = e.if_contains("last_lines"))
      for (const auto& l : lines->as_array()) std::cout << "    | " << l.as_string().c_str() << "\n";
  }
  std::cout << std::flush;
}

// One line of `clutch logs`. For one app as its file holds it ("[3] text"), stderr's on stderr. For every app all
// on stdout, so that a pipe to grep sees them, as "web[3] | text", stderr's as "web[3] err | text". With
// timestamps, the time the daemon read the line first (blank for lines an earlier daemon wrote to the files).
void print_log_line(const json::object& a, bool every, bool timestamps, bool follow) {
  const auto* line = a.if_contains("line");
  if (!line || !line->is_string()) return;
  const std::string_view text = line->get_string();
  const bool err = clutch::detail::string_field(a, "stream") == "err";
  std::string out;
  // A line read back from a file that an earlier daemon wrote has no time: blanks keep the columns.
  if (timestamps) {
    const auto at = clutch::detail::string_field(a, "time");
    out.append(at.empty() ? std::string(24, ' ') : std::string(at)).append(" ");
  }
  if (every) {
    std::string_view who, rest = text;  // the file's "[3] " becomes the app's "web[3]"
    if (const auto close = text.find("] "); text.starts_with('[') && close != std::string_view::npos) {
      who = text.substr(0, close + 1);
      rest = text.substr(close + 2);
    }
    out.append(clutch::detail::string_field(a, "app")).append(who).append(err ? " err | " : " | ").append(rest);
  } else {
    out.append(text);
  }
  auto& stream = err && !every ? std::cerr : std::cout;
  stream << out << '\n';
  if (follow) stream << std::flush;
}

// The process exists and is not a zombie.
bool running(pid_t pid) {
  const auto st = clutch::os::read_proc_stat(pid);
  return st && st->state != 'Z';
}

// argv split at the first "--": ours before it, the program's after it (never taken for our own options).
struct split_args {
  int ours;
  std::vector<std::string> command;
};
split_args split_at_dashes(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") return {i, std::vector<std::string>(argv + i + 1, argv + argc)};
  return {argc, {}};
}

// The edits (insert, delete, replace a character, or swap two neighbours) that turn a into b.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// The known word that typed most likely meant, dashes aside (-workers means --workers), or "" when none is close:
// a third of the typed word may be wrong, and never all of it.
std::string closest(std::string_view typed, const std::vector<std::string>& known) {
  const auto bare = [](std::string_view w) { return w.substr(std::min(w.find_first_not_of('-'), w.size())); };
  const auto word = bare(typed);
  std::string best;
  std::size_t best_distance = (word.size() + 2) / 3 + 1;
  for (const auto& k : known) {
    const auto dist = edit_distance(word, bare(k));
    if (dist < best_distance && dist < word.size()) {
      best = k;
      best_distance = dist;
    }
  }
  return best;
}

// CLI11 2.1 refuses an unknown option without naming what was meant: names the first unknown option of cmd among
// args, and the known one closest to it. False when every option was known (the extra was a positional).
bool explain_unknown_option(const CLI::App& cmd, const std::string& who, const std::vector<std::string>& args) {
  std::vector<std::string> known;
  for (const CLI::Option* o : cmd.get_options()) {
    for (const auto& l : o->get_lnames()) known.push_back("--" + l);
    for (const auto& n : o->get_snames()) known.push_back("-" + n);
  }
  const auto is_known = [&](std::string_view w) { return std::find(known.begin(), known.end(), w) != known.end(); };
  for (const auto& arg : args) {
    if (arg.size() < 2 || arg[0] != '-' || std::isdigit(static_cast<unsigned char>(arg[1]))) continue;
    const std::string option = arg.substr(0, arg.find('='));
    // -n10 and -fn 5: a known short option with its value or more flags after it.
    if (is_known(option) || (arg[1] != '-' && is_known(arg.substr(0, 2)))) continue;
    const auto guess = closest(option, known);
    std::cerr << who << ": unknown option " << option;
    if (!guess.empty()) std::cerr << "; did you mean " << guess << "?";
    else std::cerr << " (" << who << " --help lists the options)";
    std::cerr << std::endl;
    return true;
  }
  return false;
}

// ---- the commands ----------------------------------------------------------------------------------------

// What a command line may set: each command binds the fields it takes to its options.
struct cli_options {
  app_options run_opts, start_opts, reload_opts;
  unsigned short status_port = 0;
  unsigned metrics_port = 0;
  std::string file, name;
  bool as_json = false, follow = false, timestamps = false, update_env = false, resurrect = false, install = false,
       unit_template = false;
  std::string unit_dir = "/etc/systemd/system", unit_exe, shell;
  long count = 0, lines = 15;
  std::vector<std::string> program;  // PROGRAM [ARGS…] after --
  std::chrono::milliseconds timeout{};
  CLI::App* app = nullptr;  // the whole command line's tree, for the commands that print it (prints_tree)
};

// One command: its name and help, its options, how long the daemon may take to answer it, and what it does. To
// add one, add an entry to `commands()` here and, if it asks the daemon something new, one to daemon.cpp's
// `requests`.
struct command {
  std::string name, help;
  std::function<void(CLI::App&, cli_options&)> options = [](CLI::App&, cli_options&) {};
  std::function<answer(const cli_options&)> waits = [](const cli_options&) { return answer::at_once; };
  bool asks_daemon = true;  // false: run and daemon, which need no daemon's answer (nor CLUTCH_TIMEOUT_MS)
  // completion and manpage: they print text made from the CLI11 tree (o.app), and so run with it and on any
  // kernel; every other command first needs pidfds, and runs after the tree is freed.
  bool prints_tree = false;
  bool hidden = false;  // not in --help, the man page or the completions (the man page's own command)
  std::function<int(cli_options&)> run;
};

// Sends request and prints each answer; when no daemon runs, if_none decides (by default: say so, exit 1).
int ask(const json::object& request, const cli_options& o, const std::function<bool(const json::object&)>& print,
        const std::function<int()>& if_none = {}) {
  const int rc = call(request, print, o.timeout);
  if (rc != no_daemon_code) return rc;
  if (if_none) return if_none();
  std::cerr << "clutch: no daemon is running (" << sv::daemon_paths::from_environment().socket
            << "); clutch start starts one" << std::endl;
  return 1;
}

int run_command(cli_options& o) {
  auto& opts = o.run_opts;
  if (o.program.empty()) {
    std::cerr << "clutch run: no command: give PROGRAM [ARGS…] after --" << std::endl;
    return 2;
  }
  std::string why;
  auto js = opts.to_json(o.program, why);
  if (!js) {
    std::cerr << "clutch run: " << why << std::endl;
    return 2;
  }
  if (opts.workers == "auto") {
    std::cerr << "clutch run: --workers auto is for the daemon's apps; give a number" << std::endl;
    return 2;
  }
  auto spec = sv::app_from_json(*js, why);
  if (opts.workers.empty()) spec->run.workers = std::max(1u, std::thread::hardware_concurrency());
  return run(std::move(spec->run), spec->name, o.status_port);
}

// req with this command's environment ("env"), which new apps start from, as under PM2; with update_env
// (--update-env), the apps it names too (a restart or reload by name sends it only then). Not what belongs to this process alone: its supervisor's sockets and
// channels.
json::object with_env(json::object req, bool update_env = false) {
  static const std::set<std::string_view> own{
      "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
      "NODE_CHANNEL_FD", "NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID", "CLUTCH_WORKER_ID", "CLUTCH_AGENT"};
  json::object env;
  for (char** e = environ; *e; ++e) {
    const std::string_view kv(*e);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0 || own.contains(kv.substr(0, eq))) continue;
    env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  req["env"] = std::move(env);
  if (update_env) req["update_env"] = true;
  return req;
}

// A TOML file's apps, or a PM2 ecosystem file's (its --env NAME among opts.env: an entry without '=';
// KEY=VALUE entries are added to every app's env). Unsupported ecosystem fields are said on stderr.
std::optional<sv::config_file> load_apps(const std::string& file, const app_options& opts, std::string& why) {
  if (!sv::is_ecosystem_file(file)) return sv::load_config(file, why);
  std::string env_name;
  json::object vars;
  for (const auto& e : opts.env) {
    const auto eq = e.find('=');
    if (eq == std::string::npos) env_name = e;
    else vars[e.substr(0, eq)] = e.substr(eq + 1);
  }
  std::vector<std::string> unsupported;
  auto cfg = sv::load_ecosystem(file, env_name, why, unsupported);
  for (const auto& u : unsupported) std::cerr << "clutch: " << u << std::endl;
  if (cfg && !vars.empty())
    for (auto& a : cfg->apps) {
      auto& env = a["env"];
      if (!env.is_object()) env = json::object{};
      for (const auto& [k, v] : vars) env.as_object()[k] = v;
    }
  return cfg;
}

// The apps of a TOML or ecosystem file as the daemon takes them, with the file's metrics port; nullopt once
// `clutch VERB: why` is said.
std::optional<std::pair<json::array, unsigned>> file_apps(const char* verb, const std::string& file,
                                                          const app_options& opts) {
  std::string why;
  auto cfg = load_apps(file, opts, why);
  if (!cfg) {
    std::cerr << "clutch " << verb << ": " << why << std::endl;
    return std::nullopt;
  }
  json::array apps;
  for (auto& a : cfg->apps) apps.push_back(std::move(a));
  return std::pair{std::move(apps), cfg->metrics_port};
}

int start_command(cli_options& o) {
  // `clutch start app.js [-i N] [--name api] [-- ARGS…]`, as PM2's: node runs the script, named after it.
  if (sv::is_node_script(o.file) && !sv::is_ecosystem_file(o.file)) {
    o.program.insert(o.program.begin(), std::exchange(o.file, {}));
    if (o.start_opts.name.empty()) o.start_opts.name = std::filesystem::path(o.program.front()).stem().string();
  }
  if (o.file.empty()) {  // --name NAME [OPTIONS] -- PROGRAM
    auto& opts = o.start_opts;
    if (opts.name.empty()) {
      std::cerr << "clutch start: give a TOML file, or --name NAME [OPTIONS] -- PROGRAM [ARGS…]" << std::endl;
      return 2;
    }
    if (o.program.empty()) {
      std::cerr << "clutch start: no command: give PROGRAM [ARGS…] after --" << std::endl;
      return 2;
    }
    std::string why;
    auto js = opts.to_json(o.program, why);
    if (!js) {
      std::cerr << "clutch start: " << why << std::endl;
      return 2;
    }
    const int rc = call(with_env({{"cmd", "start"}, {"apps", json::array{*js}}}), [](const json::object&) { return true; },
                        o.timeout, true, o.metrics_port);
    if (rc == 0) std::cout << "clutch: started " << opts.name << std::endl;
    return rc;
  }
  if (!o.program.empty() || !o.start_opts.name.empty()) {
    std::cerr << "clutch start: a TOML file or --name … -- PROGRAM, not both" << std::endl;
    return 2;
  }
  const auto print_apps = [](const json::object& a) {
    for (const auto& s : a.at("apps").as_array()) print_started(s.as_object());
    return true;
  };
  // `clutch start NAME` (PM2's `pm2 start web`): a known app, stopped or errored, starts again. A word that
  // names no file and could be an app's name is taken as one.
  if (!std::filesystem::exists(o.file) && o.file.find('/') == std::string::npos && !o.file.ends_with(".toml") &&
      !sv::is_ecosystem_file(o.file)) {
    const int rc = call({{"cmd", "start"}, {"name", o.file}}, print_apps, o.timeout);
    if (rc == no_daemon_code) std::cerr << "clutch: no daemon is running, so no app is known by name" << std::endl;
    return rc;
  }
  auto cfg = file_apps("start", o.file, o.start_opts);
  if (!cfg) return 2;
  // The file's apps that run already are left alone (PM2's `start ecosystem.config.js`).
  return call(with_env({{"cmd", "start"}, {"apps", std::move(cfg->first)}, {"keep_running", true}}), print_apps,
              o.timeout, true, o.metrics_port ? o.metrics_port : cfg->second);
}

// `clutch reload FILE` (PM2's startOrReload): the file's apps with the settings it has now; a daemon starts if
// none runs. `clutch reload NAME|all`: one worker at a time.
int reload_command(cli_options& o) {
  if (!o.name.ends_with(".toml") && o.name.find('/') == std::string::npos && !sv::is_ecosystem_file(o.name)) {
    json::object req{{"cmd", "reload"}, {"name", o.name}};
    return ask(o.update_env ? with_env(std::move(req), true) : req, o, [&](const json::object&) {
      std::cout << "clutch: reload " << o.name << ": done" << std::endl;
      return true;
    });
  }
  auto cfg = file_apps("reload", o.name, o.reload_opts);
  if (!cfg) return 2;
  return call(with_env({{"cmd", "reload"}, {"apps", std::move(cfg->first)}}, o.update_env),
              [&](const json::object& a) {
                for (const auto& s : a.at("apps").as_array())
                  std::cout << "clutch: " << clutch::detail::string_field(s.as_object(), "action") << " "
                            << clutch::detail::string_field(s.as_object(), "name") << std::endl;
                return true;
              },
              o.timeout, true, cfg->second);
}

int kill_command(cli_options& o) {
  int code = 0;
  const int rc = ask(
      {{"cmd", "kill"}}, o,
      [&](const json::object& a) {
        // It answers just before it ends: return once it has (a script may start a new one right after).
        const auto pid = clutch::detail::int_field(a, "pid");
        for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
             pid > 0 && running(static_cast<pid_t>(pid)) && std::chrono::steady_clock::now() < end;)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (pid > 0 && running(static_cast<pid_t>(pid))) {
          std::cerr << "clutch: the daemon (pid " << pid << ") said it stopped every app but has not ended"
                    << std::endl;
          code = 1;
          return false;
        }
        std::cout << "clutch: the daemon stopped every app and ended" << std::endl;
        return true;
      },
      [] {
        std::cout << "clutch: no daemon was running" << std::endl;
        return 0;
      });
  return rc ? rc : code;
}

// stop, restart, delete: NAME or all; done once every app named has.
// `clutch startup`: PM2's startup for systemd. The unit runs `clutch daemon --resurrect` as this user, with this
// CLUTCH_HOME and PATH (so that node is found), restarted whatever ends it; a crash's successor restores the live
// table by itself. Stop: `clutch kill`, every app stopped gracefully.
int startup_command(cli_options& o) {
  if (o.unit_template && o.install) {
    std::cerr << "clutch startup: --template prints the unit; the Debian package installs it as clutch@.service"
              << std::endl;
    return 2;
  }
  const auto paths = sv::daemon_paths::from_environment();
  const passwd* pw = ::getpwuid(::geteuid());
  const std::string exe = o.unit_exe.empty() ? clutch::os::self_command().exe : o.unit_exe;
  // --template: clutch@.service for any user (`systemctl enable clutch@alice`), as the Debian package installs
  // it; systemd's User= gives the daemon that user's HOME, and so ~/.clutch.
  const std::string user = o.unit_template ? "%i" : pw ? pw->pw_name : std::to_string(::geteuid());
  const char* path = o.unit_template ? nullptr : std::getenv("PATH");
  std::ostringstream unit;
  unit << "[Unit]\nDescription=clutch: the apps of " << user;
  if (!o.unit_template) unit << " (" << paths.home << ")";
  unit << "\nAfter=network-online.target\nWants=network-online.target\n\n"
       << "[Service]\nType=notify\nNotifyAccess=main\nUser=" << user << "\n";
  if (!o.unit_template && std::getenv("CLUTCH_HOME")) unit << "Environment=CLUTCH_HOME=" << paths.home << "\n";
  if (path) unit << "Environment=PATH=" << path << "\n";
  unit << "ExecStart=" << exe << " daemon --resurrect\nExecReload=" << exe << " reload all\nExecStop=" << exe
       << " kill\nRestart=always\nRestartSec=100ms\nLimitNOFILE=infinity\n\n"
       << "[Install]\nWantedBy=multi-user.target\n";
  if (o.unit_template) {
    std::cout << "# clutch@.service: systemctl enable --now clutch@USER runs USER's daemon at boot.\n" << unit.str();
    return 0;
  }
  const std::string name = "clutch-" + user + ".service";
  if (!o.install) {
    std::cout << "# " << name << ": `clutch startup --install` writes it to " << o.unit_dir
              << " and enables it; `clutch save` chooses the apps it starts.\n"
              << unit.str();
    return 0;
  }
  const std::string file = o.unit_dir + "/" + name;
  {
    std::ofstream out(file);
    out << unit.str();
    if (!out.flush()) {
      std::cerr << "clutch startup: cannot write " << file << ": " << std::strerror(errno) << std::endl;
      return 1;
    }
  }
  std::cout << "clutch: wrote " << file << std::endl;
  // Enabled when systemd runs this machine; else it is left for the user to enable.
  if (::access("/run/systemd/system", F_OK) == 0) {
    for (const auto& args : {std::vector<std::string>{"daemon-reload"}, std::vector<std::string>{"enable", name}}) {
      auto r = clutch::spawn_sync("systemctl", args);
      if (r.status.code != 0 || r.error) {
        std::cerr << "clutch startup: systemctl " << args.back() << " failed: " << r.err << std::endl;
        return 1;
      }
    }
    std::cout << "clutch: enabled " << name << " (clutch save chooses the apps it starts)" << std::endl;
  } else {
    std::cout << "clutch: systemd is not running here; enable it with: systemctl enable " << name << std::endl;
  }
  return 0;
}

command app_verb(const std::string& verb) {
  return {.name = verb,
          .help = verb + " an app, or all",
          .options =
              [verb](CLI::App& c, cli_options& o) {
                c.add_option("name", o.name, "the app, or all")->required();
                if (verb == "restart")
                  c.add_flag("--update-env", o.update_env, "the app starts from this command's environment now");
              },
          .waits = [](const cli_options&) { return answer::when_done; },
          .run = [verb](cli_options& o) {
            json::object req{{"cmd", verb}, {"name", o.name}};
            return ask(o.update_env ? with_env(std::move(req), true) : req, o, [&](const json::object&) {
              std::cout << "clutch: " << verb << " " << o.name << ": done" << std::endl;
              return true;
            });
          }};
}

const std::vector<command>& commands() {
  static const std::vector<command> table{
      {.name = "run",
       .help = "run PROGRAM as N workers in the foreground (also as a container's PID 1)",
       .options =
           [](CLI::App& c, cli_options& o) {
             o.run_opts.add_to(&c, false);
             c.add_option("--status-port", o.status_port, "serve /metrics, /api/status and /ready on 127.0.0.1:PORT");
             c.footer("PROGRAM [ARGS…] follows, after --");
           },
       .asks_daemon = false,
       .run = run_command},
      {.name = "start",
       .help = "start apps in the daemon (started if it is not running)",
       .options =
           [](CLI::App& c, cli_options& o) {
             o.start_opts.add_to(&c, true);
             c.add_option("file", o.file,
                          "a TOML file of [[app]] tables, a PM2 ecosystem file (--env NAME: its env_NAME), or a "
                          "Node script (app.js: as PM2's start)");
             c.add_option("--metrics-port", o.metrics_port, "if this start launches the daemon: its /metrics port");
             c.footer("A script: SCRIPT.js [OPTIONS] [-- ARGS…]. Without a file: --name NAME [OPTIONS] -- PROGRAM "
                      "[ARGS…]");
           },
       .run = start_command},
      {.name = "ls",
       .help = "list the apps and their processes",
       .options = [](CLI::App& c, cli_options& o) { c.add_flag("--json", o.as_json, "JSON instead of a table"); },
       .run =
           [](cli_options& o) {
             const auto print = [&](const json::array& apps) {
               if (o.as_json) std::cout << clutch::detail::json_text(apps) << std::endl;
               else print_table(apps);
             };
             return ask(
                 {{"cmd", "ls"}}, o,
                 [&](const json::object& a) {
                   print(a.at("apps").as_array());
                   return true;
                 },
                 [&] {  // nothing runs: an empty list, as PM2's
                   print({});
                   return 0;
                 });
           }},
      {.name = "status",
       .help = "one app: its processes, and its last exits with their output",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_option("name", o.name, "the app")->required();
             c.add_flag("--json", o.as_json, "JSON instead of text");
           },
       .run =
           [](cli_options& o) {
             return ask({{"cmd", "status"}, {"name", o.name}}, o, [&](const json::object& a) {
               if (o.as_json) std::cout << clutch::detail::json_text(a.at("app")) << std::endl;
               else print_status(a.at("app").as_object());
               return true;
             });
           }},
      app_verb("stop"),
      app_verb("restart"),
      {.name = "reload",
       .help = "reload an app, or all, one worker at a time; or a TOML file's apps with the settings it has now "
               "(starting new ones)",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_option("name", o.name, "the app, all, a FILE.toml or a PM2 ecosystem file")->required();
             c.add_flag("--update-env", o.update_env, "the apps start from this command's environment now");
             c.add_option("--env", o.reload_opts.env, "an ecosystem file's env_NAME to apply (PM2's --env)");
           },
       .waits = [](const cli_options&) { return answer::when_done; },
       .run = reload_command},
      {.name = "scale",
       .help = "change an app's number of workers",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_option("name", o.name, "the app")->required();
             c.add_option("workers", o.count, "the new number")->required()->check(CLI::Range(1, 1024));
           },
       .run =
           [](cli_options& o) {
             return ask({{"cmd", "scale"}, {"name", o.name}, {"workers", o.count}}, o, [&](const json::object&) {
               std::cout << "clutch: " << o.name << " now has " << o.count << " workers" << std::endl;
               return true;
             });
           }},
      {.name = "logs",
       .help = "the last log lines of an app or of every app, and with -f the new ones",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_option("name", o.name, "the app (default: every app, each line prefixed with APP[ID])");
             c.add_flag("-f,--follow", o.follow, "keep printing new lines");
             c.add_option("-n,--lines", o.lines, "how many of the last lines of each file (default 15)")
                 ->check(CLI::Range(0, 100000));
             c.add_flag("--timestamps,--timestamp", o.timestamps,
                        "each line after the time the daemon read it (ISO 8601, UTC, ms); blank for lines in the "
                        "files from before this daemon");
           },
       .waits = [](const cli_options& o) { return o.follow ? answer::endless : answer::at_once; },
       .run =
           [](cli_options& o) {
             const bool every = o.name.empty() || o.name == "all";
             json::object request{{"cmd", "logs"}, {"name", every ? "all" : o.name}, {"lines", o.lines},
                                  {"follow", o.follow}};
             return ask(request, o, [&](const json::object& a) {
               print_log_line(a, every, o.timestamps, o.follow);
               return true;
             });
           }},
      {.name = "kill",
       .help = "stop every app and the daemon",
       .waits = [](const cli_options&) { return answer::when_done; },
       .run = kill_command},
      app_verb("delete"),
      {.name = "daemon",
       .help = "run the daemon in the foreground",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_option("--metrics-port", o.metrics_port, "serve /metrics, /api/status and /ready on 127.0.0.1");
             c.add_flag("--resurrect", o.resurrect, "start the apps clutch save saved (as at boot)");
           },
       .asks_daemon = false,
       .run = [](cli_options& o) { return run_daemon(o.metrics_port, o.resurrect); }},
      {.name = "monit",
       .help = "a live view of the apps in the terminal (pm2 monit): up/down select, r reload, R restart, q quit",
       .asks_daemon = false,
       .run = [](cli_options&) { return clutch_cli::monit(sv::daemon_paths::from_environment().reachable_socket()); }},
      {.name = "dashboard",
       .help = "print the web dashboard's address, with the token its actions need (the daemon serves it on "
               "127.0.0.1: its metrics_port, or a free port from now on)",
       .run =
           [](cli_options& o) {
             return ask({{"cmd", "dashboard"}}, o, [](const json::object& a) {
               std::cout << clutch::detail::string_field(a, "url") << std::endl;
               return true;
             });
           }},
      {.name = "save",
       .help = "save the apps as they are now, for clutch resurrect and the daemon of clutch startup",
       .run =
           [](cli_options& o) {
             return ask({{"cmd", "save"}}, o, [](const json::object& a) {
               std::cout << "clutch: saved " << clutch::detail::int_field(a, "apps") << " apps to "
                         << clutch::detail::string_field(a, "file") << std::endl;
               return true;
             });
           }},
      {.name = "resurrect",
       .help = "start the apps clutch save saved (the daemon is started if it is not running)",
       .waits = [](const cli_options&) { return answer::when_done; },
       .run =
           [](cli_options& o) {
             return call({{"cmd", "resurrect"}},
                         [](const json::object& a) {
                           for (const auto& n : a.at("apps").as_array())
                             std::cout << "clutch: restored " << n.as_string().c_str() << std::endl;
                           return true;
                         },
                         o.timeout, true);
           }},
      {.name = "startup",
       .help = "print a systemd unit that starts the daemon at boot with the saved apps (--install: write it)",
       .options =
           [](CLI::App& c, cli_options& o) {
             c.add_flag("--install", o.install, "write it and enable it (systemctl), instead of printing it");
             c.add_option("--unit-dir", o.unit_dir, "where --install writes it (default /etc/systemd/system)");
             c.add_flag("--template", o.unit_template,
                        "print clutch@.service instead, for any user (systemctl enable clutch@USER)");
             c.add_option("--exe", o.unit_exe, "the clutch the unit runs (default: this one)");
           },
       .asks_daemon = false,
       .run = startup_command},
      {.name = "completion",
       .help = "print the shell completions for bash or zsh (source <(clutch completion bash))",
       .options = [](CLI::App& c, cli_options& o) {
         c.add_option("shell", o.shell, "bash or zsh")->required()->check(CLI::IsMember({"bash", "zsh"}));
       },
       .asks_daemon = false,
       .prints_tree = true,
       .run =
           [](cli_options& o) {
             std::cout << *clutch_cli::completion_script(*o.app, o.shell);
             return 0;
           }},
      {.name = "manpage",
       .help = "print the man page (roff), made from this help; the Debian package installs it as clutch(1)",
       .asks_daemon = false,
       .prints_tree = true,
       .hidden = true,
       .run =
           [](cli_options& o) {
             std::cout << clutch_cli::man_page(*o.app, CLUTCH_VERSION);
             return 0;
           }},
  };
  return table;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> names;  // the ones a typo is matched against: not the hidden one
  for (const auto& c : commands())
    if (!c.hidden) names.push_back(c.name);
  const auto known = [&](const char* name) {
    return std::any_of(commands().begin(), commands().end(), [&](const command& c) { return c.name == name; });
  };
  if (argc > 1 && argv[1][0] != '-' && !known(argv[1])) {
    std::cerr << "clutch: unknown command " << argv[1];
    if (const auto guess = closest(argv[1], names); !guess.empty()) {
      std::cerr << "; did you mean " << guess << "?" << std::endl;
    } else {
      std::string known;
      for (const auto& c : names) known += (known.empty() ? "" : ", ") + c;
      std::cerr << " (the commands: " << known << ")" << std::endl;
    }
    return 2;
  }
  // On the heap, to be freed before a command runs: the daemon then reuses its memory instead of keeping it.
  auto tree = std::make_unique<CLI::App>("clutch: any program as a cluster", "clutch");
  CLI::App& app = *tree;
  app.require_subcommand(1);
  app.set_version_flag("--version", "clutch " CLUTCH_VERSION);
  cli_options o;
  o.app = &app;
  for (const auto& c : commands()) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    if (c.hidden) sub->group("");
    c.options(*sub, o);
  }

  if (argc == 1) {  // as git: what there is to do, and a failure, since nothing was done
    std::cout << app.help() << std::flush;
    return 1;
  }
  auto [ours, program] = split_at_dashes(argc, argv);
  o.program = std::move(program);
  try {
    app.parse(ours, argv);
  } catch (const CLI::ParseError& e) {
    // An unknown option explains the failure best, whatever CLI11 met first (at the top, a missing command).
    if (e.get_exit_code() != 0) {
      // argv[1] is a command here (or an option of clutch's own): the one whose options were mistyped.
      const bool top = argv[1][0] == '-';
      const CLI::App& cmd = top ? app : *app.get_subcommand(argv[1]);
      if (explain_unknown_option(cmd, top ? "clutch" : "clutch " + std::string(argv[1]),
                                 std::vector<std::string>(argv + (top ? 1 : 2), argv + ours)))
        return 2;
    }
    // --help and --version are not errors; every real one is a usage error: 2, whatever CLI11's own code for it.
    return app.exit(e) == 0 ? 0 : 2;
  }
  const std::string verb = app.get_subcommands().front()->get_name();
  const auto& c = *std::find_if(commands().begin(), commands().end(), [&](const command& k) { return k.name == verb; });
  if (!c.prints_tree) {
    if (const auto missing = clutch::os::missing_kernel_features()) {
      std::cerr << "clutch: " << *missing << std::endl;
      return 1;
    }
    o.app = nullptr;
    tree.reset();
  }
  if (c.asks_daemon) {
    const auto timeout = answer_timeout(c.waits(o));
    if (!timeout) {
      std::cerr << "clutch: CLUTCH_TIMEOUT_MS must be a whole number of milliseconds (0: no bound)" << std::endl;
      return 2;
    }
    o.timeout = *timeout;
  }
  return c.run(o);
}
