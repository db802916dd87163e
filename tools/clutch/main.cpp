// The clutch command. So far: `clutch run`, the engine in the foreground.
//
//   clutch run [--workers N] [--listen [NAME=][HOST:]PORT | unix:PATH]… [--ready none|notify] [--agent 'CMD…']
//              [--stop-signal SIG] [--kill-timeout MS] [--watchdog MS] [--max-memory SIZE]
//              [--restart always|on-failure|never]
//              -- PROGRAM [ARGS…]
//
// SIGHUP reloads (one worker at a time, each replacement ready before its old worker gets the stop signal);
// SIGTERM or SIGINT stops every worker's process group and exits with how it ended (0, a worker's code, or
// 128+signal). SIGUSR1 and SIGUSR2 are passed on to every worker. clutch is a subreaper, and reaps the orphans of its workers' trees (also as a container's PID 1).
// Under systemd, clutch takes the sockets it is given (LISTEN_FDS) and reports READY=1, RELOADING=1 and
// STOPPING=1 to its NOTIFY_SOCKET.
#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <algorithm>
#include <charconv>
#include <iostream>
#include <optional>
#include <thread>

#include "supervisor/engine.hpp"
#include "supervisor/notify.hpp"
#include "supervisor/reaper.hpp"

namespace asio = boost::asio;
namespace sv = clutch::supervisor;

// "512M", "2G", "300K", "1048576": bytes; nullopt for anything else (or zero).
std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (err != std::errc{} || n == 0) return std::nullopt;
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  if (unit.empty() || unit == "B") return n;
  const int shift = unit == "K" || unit == "KB" ? 10 : unit == "M" || unit == "MB" ? 20 : unit == "G" || unit == "GB" ? 30 : -1;
  if (shift < 0 || n > (~std::uint64_t{0} >> shift)) return std::nullopt;
  return n << shift;
}

int run(sv::run_settings s) {
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
  if (auto ec = e.start()) {
    std::cerr << "clutch: " << ec.message() << std::endl;
    return 1;
  }
  // Orphans of the workers' trees come to us (as they would to a container's PID 1), and we reap them.
  sv::become_subreaper();
  asio::signal_set children(io, SIGCHLD);
  std::function<void(clutch::error_code, int)> on_child = [&](clutch::error_code ec, int) {
    if (ec) return;
    const auto workers = e.pids();
    sv::reap_strangers([&](pid_t p) { return std::find(workers.begin(), workers.end(), p) != workers.end(); });
    children.async_wait(on_child);
  };
  children.async_wait(on_child);
  asio::signal_set signals(io, SIGHUP, SIGTERM, SIGINT);
  signals.add(SIGUSR1);
  signals.add(SIGUSR2);
  int code = 0;
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
    e.stop([&] {
      code = e.exit_code();
      signals.cancel();
      io.stop();
    });
  };
  signals.async_wait(on_signal);
  e.on_all_gone([&] {
    std::cerr << "clutch: no worker left to run" << std::endl;
    code = e.exit_code();
    signals.cancel();
    io.stop();
  });
  io.run();
  return code;
}

int main(int argc, char** argv) {
  CLI::App app{"clutch: any program as a cluster"};
  app.require_subcommand(1);
  auto* run_cmd = app.add_subcommand("run", "run PROGRAM as N workers in the foreground (also as a container's PID 1)");
  sv::run_settings s;
  s.workers = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> listen, command;
  std::string ready = "none", stop_signal = "SIGTERM", restart = "always";
  long kill_timeout_ms = 5000, watchdog_ms = 0;
  std::string max_memory;
  run_cmd->add_option("--workers", s.workers, "worker processes (default: CPUs)")->check(CLI::Range(1, 1024));
  run_cmd->add_option("--listen", listen, "[NAME=][HOST:]PORT or unix:PATH, bound by clutch and passed as LISTEN_FDS");
  run_cmd->add_option("--ready", ready, "when a worker counts as ready")->check(CLI::IsMember({"none", "notify"}));
  run_cmd->add_option("--stop-signal", stop_signal, "what a worker's group gets to stop (default SIGTERM)");
  run_cmd->add_option("--kill-timeout", kill_timeout_ms, "ms from the stop signal to SIGKILL")->check(CLI::Range(0L, 3600000L));
  run_cmd->add_option("--watchdog", watchdog_ms, "ms within which each worker must send WATCHDOG=1 (0: none)")
      ->check(CLI::Range(0L, 3600000L));
  run_cmd->add_option("--agent", s.agent, "a command (run by /bin/sh -c) started before the workers, stopped after");
  run_cmd->add_option("--max-memory", max_memory, "replace a worker gracefully past this RSS (e.g. 512M, 2G)");
  run_cmd->add_option("--restart", restart, "when an exited worker is replaced")
      ->check(CLI::IsMember({"always", "on-failure", "never"}));
  // Everything after "--" (or the first word that is not an option) is the program and its own arguments: split
  // there before CLI11 sees it, so that the program's own options are never taken for ours.
  run_cmd->prefix_command();
  run_cmd->footer("PROGRAM [ARGS…] follows, after --");
  if (argc > 1 && argv[1][0] != '-' && std::string_view(argv[1]) != "run") {
    std::cerr << "clutch: unknown command '" << argv[1] << "' (known: run)" << std::endl;
    return 2;
  }
  int ours = argc;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--") {
      ours = i;
      break;
    }
  CLI11_PARSE(app, ours, argv);
  command.assign(argv + std::min(ours + 1, argc), argv + argc);
  if (ours == argc) command = run_cmd->remaining();
  if (command.empty()) {
    std::cerr << "clutch run: no command: give PROGRAM [ARGS…] after --" << std::endl;
    return 2;
  }

  for (const auto& text : listen) {
    std::string why;
    auto spec = sv::parse_listen(text, why);
    if (!spec) {
      std::cerr << "clutch run: --listen " << why << std::endl;
      return 2;
    }
    s.listen.push_back(*spec);
  }
  clutch::error_code ec;
  if (clutch::signal_spec(stop_signal).resolve(ec) < 0) {
    std::cerr << "clutch run: --stop-signal '" << stop_signal << "' is not a signal" << std::endl;
    return 2;
  }
  s.stop_signal = stop_signal;
  s.ready = ready == "notify" ? sv::ready_mode::notify : sv::ready_mode::none;
  s.kill_timeout = std::chrono::milliseconds(kill_timeout_ms);
  s.watchdog = std::chrono::milliseconds(watchdog_ms);
  if (!max_memory.empty()) {
    auto bytes = parse_size(max_memory);
    if (!bytes) {
      std::cerr << "clutch run: --max-memory '" << max_memory << "': expected a size such as 512M or 2G" << std::endl;
      return 2;
    }
    s.max_memory = *bytes;
  }
  s.restart = restart == "never"        ? clutch::cluster::restart_policy::never
              : restart == "on-failure" ? clutch::cluster::restart_policy::on_failure
                                        : clutch::cluster::restart_policy::always;
  s.program = command.front();
  s.args.assign(command.begin() + 1, command.end());
  return run(std::move(s));
}
