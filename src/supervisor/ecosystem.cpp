// PM2's ecosystem fields → clutch's app keys:
//   name, script (+ interpreter, node_args/interpreter_args, args) → name, command, args
//   cwd, env + env_<name>, instances (N, "max", 0, -N), exec_mode (cluster or fork: a Node app gets Node's
//   cluster protocol either way, which is a superset of fork mode's), max_memory_restart, kill_timeout,
//   wait_ready (→ ready = "message"), listen_timeout (→ ready_timeout), shutdown_with_message, autorestart
//   (false → restart = "never"), max_restarts, min_uptime, restart_delay, instance_var, out_file, error_file,
//   merge_logs/combine_logs (absent: clutch's merged files, each line prefixed [ID]; false: a file per instance),
//   log_date_format (time: true → "YYYY-MM-DDTHH:mm:ss"), uid, gid.
// Anything else is named as not supported, once per field.
#include "supervisor/ecosystem.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value_from.hpp>
#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "clutch/child_process.hpp"

namespace clutch::supervisor {

namespace json = boost::json;

namespace {

// Prints the file's exports as JSON: module.exports, a default export, or {apps} of an ESM module.
constexpr const char* evaluate = R"JS(
const path = require('path');
const file = path.resolve(process.argv[1]);
const out = (c) => process.stdout.write(JSON.stringify(c && c.default && !c.apps ? c.default : c));
const fail = (e) => { process.stderr.write(String(e && e.message || e)); process.exit(1); };
if (file.endsWith('.mjs')) import(require('url').pathToFileURL(file).href).then(out, fail);
else { try { out(require(file)); } catch (e) { fail(e); } }
)JS";

// PM2's args and node_args: a string split at spaces, or a list.
std::vector<std::string> words(const json::value& v) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& w : v.get_array())
      if (w.is_string()) out.emplace_back(w.get_string());
  } else if (v.is_string()) {
    std::istringstream in{std::string(v.get_string())};
    for (std::string w; in >> w;) out.push_back(w);
  }
  return out;
}

// A duration PM2 accepts: milliseconds as a number, or "10s", "500ms", "2m", "1h".
std::optional<std::int64_t> millis(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_double()) return static_cast<std::int64_t>(v.get_double());
  if (!v.is_string()) return std::nullopt;
  const std::string t(v.get_string());
  std::size_t used = 0;
  double n = 0;
  try {
    n = std::stod(t, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const auto unit = t.substr(used);
  const double scale = unit.empty() || unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : unit == "h" ? 3600000 : -1;
  if (scale < 0) return std::nullopt;
  return static_cast<std::int64_t>(n * scale);
}

std::string text_of(const json::value& v) {
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_double()) return std::to_string(v.get_double());
  if (v.is_bool()) return v.get_bool() ? "true" : "false";
  return {};
}

}  // namespace

bool is_ecosystem_file(std::string_view file) {
  const auto base = std::filesystem::path(file).filename().string();
  const bool script = is_node_script(base) || base.ends_with(".json");
  return script && (base.starts_with("ecosystem") || base.find(".config.") != std::string::npos);
}

std::optional<config_file> load_ecosystem(const std::string& path, const std::string& env_name, std::string& why,
                                          std::vector<std::string>& unsupported) {
  const auto folder = std::filesystem::absolute(path).parent_path();
  json::value doc;
  {
    options o;
    o.timeout = std::chrono::seconds(30);
    o.cwd = folder.string();
    auto r = spawn_sync("node", {"-e", evaluate, std::filesystem::absolute(path).string()}, o);
    if (r.error) {
      why = path + ": node could not read it: " + r.error.message();
      return std::nullopt;
    }
    if (r.status.code != 0) {
      why = path + ": " + (r.err.empty() ? std::string("node could not read it") : r.err);
      return std::nullopt;
    }
    json::error_code ec;
    doc = json::parse(r.out, ec);
    if (ec) {
      why = path + ": what it exports is not JSON: " + ec.message();
      return std::nullopt;
    }
  }
  const json::value* apps = doc.is_array() ? &doc : doc.is_object() ? doc.get_object().if_contains("apps") : nullptr;
  if (!apps || !apps->is_array() || apps->get_array().empty()) {
    why = path + ": it has no apps[]";
    return std::nullopt;
  }
  static const std::set<std::string_view> mapped{
      "name",          "script",     "args",           "cwd",          "instances",        "exec_mode",
      "env",           "interpreter", "node_args",     "interpreter_args", "max_memory_restart", "kill_timeout",
      "wait_ready",    "listen_timeout", "shutdown_with_message", "autorestart", "max_restarts", "min_uptime",
      "restart_delay", "instance_var", "out_file",     "error_file",   "merge_logs",       "uid",
      "gid",           "combine_logs", "log_date_format", "time"};
  std::set<std::string> said;
  auto note = [&](const std::string& app, const std::string& field, const std::string& what) {
    if (said.insert(field).second) unsupported.push_back(path + ": " + field + " is not supported (" + what + "); app '" + app + "' runs without it");
  };
  const long cpus = std::max(1u, std::thread::hardware_concurrency());
  config_file out;
  for (const auto& item : apps->get_array()) {
    if (!item.is_object()) {
      why = path + ": an entry of apps[] is not an object";
      return std::nullopt;
    }
    const auto& p = item.get_object();
    json::object a;
    const auto* script = p.if_contains("script");
    if (!script || !script->is_string() || script->get_string().empty()) {
      why = path + ": an app without script";
      return std::nullopt;
    }
    std::string program(script->get_string());
    const std::string name = p.contains("name") ? text_of(p.at("name")) : std::filesystem::path(program).stem().string();
    a["name"] = name;
    // The cwd, and the script relative to it, are the file's folder's when relative.
    auto cwd = folder;
    if (const auto* c = p.if_contains("cwd"); c && c->is_string()) cwd = (folder / std::string(c->get_string())).lexically_normal();
    a["cwd"] = cwd.string();
    if (program.find('/') != std::string::npos && program.front() != '/') program = (cwd / program).lexically_normal().string();
    std::string interpreter = p.contains("interpreter") ? text_of(p.at("interpreter")) : "";
    std::vector<std::string> args;
    auto interpreter_args = words(p.contains("node_args") ? p.at("node_args") : p.contains("interpreter_args") ? p.at("interpreter_args") : json::value());
    if (interpreter.empty() && is_node_script(program)) interpreter = "node";
    if (interpreter.empty() || interpreter == "none") {
      a["command"] = program;
    } else {
      a["command"] = interpreter;
      args = interpreter_args;
      args.push_back(program);
      // A Node app keeps Node's cluster protocol with its interpreter's options in front.
      const auto base = std::filesystem::path(interpreter).filename().string();
      if (base == "node" || base == "nodejs") a["node_cluster"] = true;
    }
    if (const auto* v = p.if_contains("args")) for (auto& w : words(*v)) args.push_back(w);
    a["args"] = json::value_from(args);
    if (const auto* v = p.if_contains("instances")) {
      long n = 1;
      if (v->is_string() && v->get_string() == "max") n = 0;
      else if (v->is_int64()) n = static_cast<long>(v->get_int64());
      else if (v->is_string()) n = std::atol(std::string(v->get_string()).c_str());
      a["workers"] = n == 0 ? cpus : n < 0 ? std::max(1L, cpus + n) : n;
    } else {
      a["workers"] = 1;  // PM2's default: one instance
    }
    json::object env;
    auto add_env = [&](const json::value* e) {
      if (!e || !e->is_object()) return;
      for (const auto& [k, v] : e->get_object()) env[k] = text_of(v);
    };
    add_env(p.if_contains("env"));
    if (!env_name.empty()) add_env(p.if_contains("env_" + env_name));
    if (!env.empty()) a["env"] = std::move(env);
    if (const auto* v = p.if_contains("max_memory_restart")) a["max_memory"] = text_of(*v);
    for (const auto& [from, to] : {std::pair{"kill_timeout", "kill_timeout"}, {"listen_timeout", "ready_timeout"},
                                   {"min_uptime", "min_uptime"}, {"restart_delay", "restart_delay"}})
      if (const auto* v = p.if_contains(from)) {
        if (auto ms = millis(*v)) a[to] = *ms;
        else note(name, from, "'" + text_of(*v) + "' is not a duration");
      }
    if (const auto* v = p.if_contains("max_restarts"); v && v->is_int64()) a["max_restarts"] = v->get_int64();
    if (const auto* v = p.if_contains("wait_ready"); v && v->is_bool() && v->get_bool()) a["ready"] = "message";
    if (const auto* v = p.if_contains("shutdown_with_message"); v && v->is_bool()) a["shutdown_with_message"] = v->get_bool();
    if (const auto* v = p.if_contains("autorestart"); v && v->is_bool() && !v->get_bool()) a["restart"] = "never";
    if (const auto* v = p.if_contains("instance_var"); v && v->is_string()) a["instance_var"] = v->get_string();
    for (const auto& [from, to] : {std::pair{"out_file", "out_file"}, {"error_file", "err_file"}})
      if (const auto* v = p.if_contains(from); v && v->is_string())
        a[to] = v->get_string().starts_with("/") ? std::string(v->get_string()) : (folder / std::string(v->get_string())).string();
    for (const char* f : {"merge_logs", "combine_logs"})
      if (const auto* v = p.if_contains(f); v && v->is_bool()) a["merge_logs"] = v->get_bool();
    if (const auto* v = p.if_contains("log_date_format"); v && v->is_string()) {
      a["log_date_format"] = v->get_string();
    } else if (const auto* t = p.if_contains("time"); t && t->is_bool() && t->get_bool()) {
      a["log_date_format"] = "YYYY-MM-DDTHH:mm:ss";  // what PM2's `time` writes
    }
    for (const char* f : {"uid", "gid"})
      if (const auto* v = p.if_contains(f)) a[f] = *v;
    for (const auto& [k, v] : p) {
      const std::string key(k);
      if (mapped.contains(key) || key.starts_with("env_")) continue;
      note(name, key, "clutch has no such setting");
    }
    out.apps.push_back(std::move(a));
  }
  // Every app as config.hpp checks it: a bad value is named like a TOML file's.
  for (const auto& a : out.apps) {
    std::string bad;
    if (!app_from_json(a, bad)) {
      why = path + ": " + bad;
      return std::nullopt;
    }
  }
  return out;
}

}  // namespace clutch::supervisor
