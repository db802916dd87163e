// What an app is, for the daemon: from a TOML file (`clutch start FILE.toml`) or from the command line (`clutch
// start --name …`), both turned into the same JSON object, which is what the control socket carries and what one
// function checks.
//
//   std::string why;
//   auto file = supervisor::load_config("apps.toml", why);      // nullopt: why says "apps.toml:7: …", the line
//                                                                //   of the key at fault
//   for (auto& o : file->apps) {
//     auto app = supervisor::app_from_json(o, why);              // nullopt: why names the app and the field
//   }
//
// The keys (TOML and JSON alike): name, command, args, cwd, env, workers (N or "auto"), listen (strings as
// --listen takes them), agent, ready (none, notify, listen, message), ready_timeout (ms), restart, stop_signal,
// kill_timeout (ms), kill_mode (group, mixed), max_memory ("512M"), watchdog (ms), out_file, err_file,
// log_max_size ("10M"), log_keep, log_date_format (PM2's, "YYYY-MM-DD HH:mm:ss"), merge_logs, shared_socket
// (true: one TCP socket for every worker, unsteered), uid, gid, node_cluster (default: true for node and .js
// programs), disconnect_first, instance_var, shutdown_with_message, max_restarts, min_uptime (ms), restart_delay
// (ms). An unknown key is an error, so that a typo is not ignored.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "supervisor/engine.hpp"

namespace clutch::supervisor {

struct app_spec {
  std::string name;
  run_settings run;
  bool workers_auto = false;  // run.workers is then set by the daemon (auto_workers)
  std::string out_file, err_file;  // empty: $CLUTCH_HOME/logs/NAME.out.log, NAME.err.log
  std::uint64_t log_max_size = 10 << 20;
  unsigned log_keep = 5;
  std::string log_date_format;  // PM2's: each line in the files begins with the date so written (logs.hpp)
  bool merge_logs = true;       // false: a file per instance, NAME.out-0.log, … (PM2's merge_logs = false)
};

struct config_file {
  std::vector<boost::json::object> apps;
  unsigned metrics_port = 0;  // 0: none
};

// Reads and checks a TOML file (every app in it goes through app_from_json). Relative paths in it (cwd, log
// files, a command with a '/') are taken from the file's folder.
std::optional<config_file> load_config(const std::string& path, std::string& why);

// How `why` names a field: as the file's key ("app 'web': max_memory …") or as the command line's option
// ("--max-memory …"), for an app that came from `clutch run` or `clutch start --name`.
enum class field_names { config, options };

// field, when given, says where the value refused is, so that a file can point at its line: the key, and for a
// table or list (env, listen, args) the entry at fault in it, a key or an index written in digits. Empty when
// nothing is refused, or no key is at fault.
std::optional<app_spec> app_from_json(const boost::json::object& o, std::string& why,
                                      field_names names = field_names::config,
                                      std::vector<std::string>* field = nullptr);

// A script node runs, as PM2 guesses from the extension (.js, .mjs, .cjs): `command = "app.js"`, `clutch start
// app.js`, an ecosystem file's script.
bool is_node_script(std::string_view file);

// An app's name: letters, digits, '-', '_', '.', at most 64, not "all" (the CLI's word for every app).
bool valid_app_name(std::string_view name);

// "512M", "2G", "300K", "1048576": bytes; nullopt for anything else (or zero).
std::optional<std::uint64_t> parse_size(std::string_view text);

// workers = "auto": the CPUs shared between `apps` such apps, one fewer for an app with an agent, at least 1.
unsigned auto_workers(unsigned cpus, unsigned apps, bool has_agent);

}  // namespace clutch::supervisor
