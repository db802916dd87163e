#include "supervisor/config.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace clutch::supervisor {

namespace json = boost::json;

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (err != std::errc{} || n == 0) return std::nullopt;
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  if (unit.empty() || unit == "B") return n;
  const int shift = unit == "K" || unit == "KB"   ? 10
                    : unit == "M" || unit == "MB" ? 20
                    : unit == "G" || unit == "GB" ? 30
                                                  : -1;
  if (shift < 0 || n > (~std::uint64_t{0} >> shift)) return std::nullopt;
  return n << shift;
}

bool is_node_script(std::string_view file) {
  for (std::string_view ext : {".js", ".mjs", ".cjs"})
    if (file.size() > ext.size() && file.ends_with(ext)) return true;
  return false;
}

bool valid_app_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name == "all" || name.front() == '.' || name.front() == '-') return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

unsigned auto_workers(unsigned cpus, unsigned apps, bool has_agent) {
  const unsigned share = cpus / std::max(1u, apps);
  return std::max(1u, share - (has_agent && share > 0 ? 1 : 0));
}

namespace {

// A field's value as the type wanted, or why not.
struct reader {
  const json::object& o;
  std::string& why;
  field_names names;
  std::string app;
  std::vector<std::string> at;  // the key refused, and its entry at fault

  bool fail(std::string_view key, std::string_view what, std::string entry = {}) {
    at = {std::string(key)};
    if (!entry.empty()) at.push_back(std::move(entry));
    if (names == field_names::options) {
      std::string option(key);
      std::replace(option.begin(), option.end(), '_', '-');
      why = "--" + option + " " + std::string(what);
    } else {
      why = (app.empty() ? std::string("app") : "app '" + app + "'") + ": " + std::string(key) + " " +
            std::string(what);
    }
    return false;
  }
  bool text(std::string_view key, std::string& out) {
    const auto* v = o.if_contains(key);
    if (!v) return true;
    if (!v->is_string()) return fail(key, "must be a string");
    out = std::string(v->get_string());
    return true;
  }
  bool number(std::string_view key, std::int64_t lo, std::int64_t hi, std::int64_t& out) {
    const auto* v = o.if_contains(key);
    if (!v) return true;
    if (!v->is_int64() || v->get_int64() < lo || v->get_int64() > hi)
      return fail(key, "must be a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
    out = v->get_int64();
    return true;
  }
  bool size(std::string_view key, std::uint64_t& out) {
    const auto* v = o.if_contains(key);
    if (!v) return true;
    if (v->is_int64() && v->get_int64() > 0) {
      out = static_cast<std::uint64_t>(v->get_int64());
      return true;
    }
    auto bytes = v->is_string() ? parse_size(v->get_string()) : std::nullopt;
    if (!bytes)
      return fail(key, (v->is_string() ? "'" + std::string(v->get_string()) + "' " : std::string()) +
                           "must be a size such as 512M or 2G");
    out = *bytes;
    return true;
  }
  bool strings(std::string_view key, std::vector<std::string>& out) {
    const auto* v = o.if_contains(key);
    if (!v) return true;
    if (!v->is_array()) return fail(key, "must be a list of strings");
    for (const auto& item : v->get_array()) {
      if (!item.is_string()) return fail(key, "must be a list of strings", std::to_string(out.size()));
      out.emplace_back(item.get_string());
    }
    return true;
  }
};

const std::set<std::string_view> known_keys{
    "name",        "command",      "args",       "cwd",      "env",         "workers",  "listen",
    "agent",       "ready",        "restart",    "stop_signal", "kill_timeout", "max_memory", "watchdog",
    "out_file",    "err_file",     "log_max_size", "log_keep", "shared_socket", "ready_timeout", "uid", "gid",
    "node_cluster", "instance_var", "shutdown_with_message", "kill_mode", "max_restarts", "min_uptime",
    "restart_delay", "disconnect_first", "log_date_format", "merge_logs"};

// A Node program: the command is node (nodejs), or a script that node runs (.js, .mjs, .cjs).
bool is_node(std::string_view program) {
  const auto base = program.substr(program.rfind('/') + 1);
  return base == "node" || base == "nodejs" || is_node_script(program);
}

// A user or a group as PM2's ecosystem gives it: a number, or a name looked up now. A user's name also gives its
// own group, for when no gid is given.
bool id_of(const json::value& v, bool user, std::uint32_t& id, std::optional<std::uint32_t>& group) {
  std::string text;
  if (v.is_int64()) {
    if (v.get_int64() < 0 || v.get_int64() > 0xffffffffLL) return false;
    id = static_cast<std::uint32_t>(v.get_int64());
  } else if (v.is_string() && !v.get_string().empty()) {
    text = std::string(v.get_string());
    std::uint32_t n = 0;
    const auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (err == std::errc{} && end == text.data() + text.size()) {
      id = n;
    } else {
      std::vector<char> buf(16384);
      if (user) {
        passwd pw{}, *found = nullptr;
        if (::getpwnam_r(text.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) return false;
        id = found->pw_uid;
        group = found->pw_gid;
        return true;
      }
      ::group gr{}, *found = nullptr;
      if (::getgrnam_r(text.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) return false;
      id = found->gr_gid;
      return true;
    }
  } else {
    return false;
  }
  if (user) {  // a number: its own group, if the system knows the user
    std::vector<char> buf(16384);
    passwd pw{}, *found = nullptr;
    if (::getpwuid_r(id, &pw, buf.data(), buf.size(), &found) == 0 && found) group = found->pw_gid;
  }
  return true;
}

// TOML → JSON, keeping what JSON can say (dates and times become their text).
json::value to_json(const toml::node& n) {
  if (auto* t = n.as_table()) {
    json::object o;
    for (auto&& [k, v] : *t) o[std::string(k.str())] = to_json(v);
    return o;
  }
  if (auto* a = n.as_array()) {
    json::array out;
    for (auto&& v : *a) out.push_back(to_json(v));
    return out;
  }
  if (auto* s = n.as_string()) return json::string(s->get());
  if (auto* i = n.as_integer()) return i->get();
  if (auto* f = n.as_floating_point()) return f->get();
  if (auto* b = n.as_boolean()) return b->get();
  std::ostringstream text;  // dates and times, as TOML writes them
  if (auto* d = n.as_date()) text << d->get();
  else if (auto* t = n.as_time()) text << t->get();
  else if (auto* dt = n.as_date_time()) text << dt->get();
  return json::string(text.str());
}

std::string where(const std::string& path, const toml::source_region& r) {
  return path + ":" + std::to_string(r.begin.line);
}

std::string where(const std::string& path, toml::source_index line) { return path + ":" + std::to_string(line); }

// The line of the value at field (a key, then an entry in it) in an app's table; a key's own line, not its
// table's. What is not in the file (a missing key, the cwd load_config adds) is the table's line.
toml::source_index line_of(const toml::table& app, const std::vector<std::string>& field) {
  const toml::node* at = &app;
  toml::source_index line = app.source().begin.line;
  const auto better = [&](toml::source_index l) {
    if (l > 0) line = l;
  };
  for (const auto& step : field) {
    if (const auto* t = at->as_table()) {
      const auto it = t->find(step);
      if (it == t->end()) break;
      better(it->second.source().begin.line);
      better(it->first.source().begin.line);  // a value can start lines below its key (a list)
      at = &it->second;
    } else if (const auto* a = at->as_array()) {
      std::size_t i = 0;
      const auto [end, err] = std::from_chars(step.data(), step.data() + step.size(), i);
      if (err != std::errc{} || end != step.data() + step.size() || i >= a->size()) break;
      at = a->get(i);
      better(at->source().begin.line);
    } else {
      break;
    }
  }
  return line;
}

// The file's text; nullopt, with why, when it cannot be read.
std::optional<std::string> read_text(const std::string& path, std::string& why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    why = "cannot open " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) why = "cannot read " + path + ": " + std::strerror(errno);  // a folder: EISDIR
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (!why.empty()) return std::nullopt;
  return text;
}

std::optional<app_spec> read_app(reader& r) {
  const json::object& o = r.o;
  app_spec a;
  if (!r.text("name", a.name)) return std::nullopt;
  r.app = a.name;
  if (!valid_app_name(a.name))
    return r.fail("name", a.name.empty() ? "is missing"
                                         : "'" + a.name + "' is not a name (letters, digits, - _ . ; not \"all\")"),
           std::nullopt;
  for (const auto& [k, v] : o)
    if (!known_keys.contains(k)) return r.fail(k, "is not a setting clutch knows"), std::nullopt;
  auto& s = a.run;
  if (!r.text("command", s.program) || !r.strings("args", s.args) || !r.text("cwd", s.cwd) ||
      !r.text("agent", s.agent) || !r.text("out_file", a.out_file) || !r.text("err_file", a.err_file) ||
      !r.text("log_date_format", a.log_date_format))
    return std::nullopt;
  if (const auto* v = o.if_contains("merge_logs")) {
    if (!v->is_bool()) return r.fail("merge_logs", "must be true or false"), std::nullopt;
    a.merge_logs = v->get_bool();
  }
  if (s.program.empty()) return r.fail("command", "is missing"), std::nullopt;
  // Node's cluster protocol for a Node program, unless node_cluster = false (true: for a wrapper, npm start…).
  s.node_cluster = is_node(s.program);
  if (const auto* v = o.if_contains("node_cluster")) {
    if (!v->is_bool()) return r.fail("node_cluster", "must be true or false"), std::nullopt;
    s.node_cluster = v->get_bool();
  }
  if (is_node_script(s.program)) {  // app.js: node runs it, as PM2 guesses from the extension
    s.args.insert(s.args.begin(), s.program);
    s.program = "node";
  }
  if (const auto* v = o.if_contains("disconnect_first")) {
    if (!v->is_bool()) return r.fail("disconnect_first", "must be true or false"), std::nullopt;
    s.disconnect_first = v->get_bool();
  }
  if (const auto* v = o.if_contains("shutdown_with_message")) {
    if (!v->is_bool()) return r.fail("shutdown_with_message", "must be true or false"), std::nullopt;
    s.shutdown_message = v->get_bool();
  }
  if (!r.text("instance_var", s.instance_var)) return std::nullopt;
  if (!s.instance_var.empty() &&
      (std::isdigit(static_cast<unsigned char>(s.instance_var[0])) ||
       !std::all_of(s.instance_var.begin(), s.instance_var.end(),
                    [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; })))
    return r.fail("instance_var", "'" + s.instance_var + "' is not a variable's name (letters, digits, _)"),
           std::nullopt;
  if (const auto* env = o.if_contains("env")) {
    if (!env->is_object()) return r.fail("env", "must be a table of strings"), std::nullopt;
    for (const auto& [k, v] : env->get_object()) {
      if (v.is_string()) s.env[std::string(k)] = std::string(v.get_string());
      else if (v.is_int64()) s.env[std::string(k)] = std::to_string(v.get_int64());
      else return r.fail("env", "must be a table of strings", std::string(k)), std::nullopt;
    }
  }
  if (const auto* w = o.if_contains("workers")) {
    if (w->is_string() && w->get_string() == "auto") {
      a.workers_auto = true;
    } else {
      std::int64_t n = 0;
      if (!r.number("workers", 1, 1024, n)) return r.fail("workers", "must be 1 to 1024 or \"auto\""), std::nullopt;
      s.workers = static_cast<unsigned>(n);
    }
  } else {
    a.workers_auto = true;
  }
  if (const auto* shared = o.if_contains("shared_socket")) {
    if (!shared->is_bool()) return r.fail("shared_socket", "must be true or false"), std::nullopt;
    s.steer = !shared->get_bool();
  }
  std::vector<std::string> listen;
  if (!r.strings("listen", listen)) return std::nullopt;
  for (const auto& text : listen) {
    std::string bad;
    auto spec = parse_listen(text, bad);
    if (!spec) return r.fail("listen", bad, std::to_string(s.listen.size())), std::nullopt;
    s.listen.push_back(*spec);
  }
  std::string ready = "none", restart = "always", stop_signal = "SIGTERM", kill_mode = "group";
  if (!r.text("ready", ready) || !r.text("restart", restart) || !r.text("stop_signal", stop_signal) ||
      !r.text("kill_mode", kill_mode))
    return std::nullopt;
  if (kill_mode != "group" && kill_mode != "mixed") return r.fail("kill_mode", "must be group or mixed"), std::nullopt;
  s.kill_mixed = kill_mode == "mixed";
  if (ready != "none" && ready != "notify" && ready != "listen" && ready != "message")
    return r.fail("ready", "must be none, notify, listen or message"), std::nullopt;
  s.ready = ready == "notify"    ? ready_mode::notify
            : ready == "listen"  ? ready_mode::listen
            : ready == "message" ? ready_mode::message
                                 : ready_mode::none;
  if (s.ready == ready_mode::listen && s.listen.empty() && !s.node_cluster)
    return r.fail("ready", "listen needs a socket to watch: give listen too"), std::nullopt;
  if (s.ready == ready_mode::message && !s.node_cluster)
    return r.fail("ready", "message is a Node worker's process.send('ready'): it needs node_cluster"), std::nullopt;
  if (restart != "always" && restart != "on-failure" && restart != "never")
    return r.fail("restart", "must be always, on-failure or never"), std::nullopt;
  s.restart = restart == "never"        ? cluster::restart_policy::never
              : restart == "on-failure" ? cluster::restart_policy::on_failure
                                        : cluster::restart_policy::always;
  error_code ec;
  if (signal_spec(stop_signal).resolve(ec) < 0)
    return r.fail("stop_signal", "'" + stop_signal + "' is not a signal"), std::nullopt;
  s.stop_signal = stop_signal;
  std::int64_t kill_timeout = s.kill_timeout.count(), watchdog = 0, keep = a.log_keep,
               ready_timeout = s.ready_timeout.count();
  if (!r.number("kill_timeout", 0, 3600000, kill_timeout) || !r.number("watchdog", 0, 3600000, watchdog) ||
      !r.number("ready_timeout", 1, 3600000, ready_timeout) ||
      !r.number("log_keep", 0, 1000, keep) || !r.size("max_memory", s.max_memory) ||
      !r.size("log_max_size", a.log_max_size))
    return std::nullopt;
  std::optional<std::uint32_t> users_group;
  if (const auto* u = o.if_contains("uid")) {
    std::uint32_t id = 0;
    if (!id_of(*u, true, id, users_group)) return r.fail("uid", "must be a user's name or a number"), std::nullopt;
    s.uid = id;
  }
  if (const auto* g = o.if_contains("gid")) {
    std::uint32_t id = 0;
    std::optional<std::uint32_t> ignored;
    if (!id_of(*g, false, id, ignored)) return r.fail("gid", "must be a group's name or a number"), std::nullopt;
    s.gid = id;
  } else if (users_group) {
    s.gid = *users_group;  // a user's own group, not clutch's (root's) with another uid
  }
  // PM2's crash-loop settings: exits in a row before a slot is given up, the run that counts as stable, and a
  // fixed delay before each restart (instead of at once, then growing).
  std::int64_t max_restarts = s.backoff.limit, min_uptime = s.backoff.stable_uptime.count(), restart_delay = -1;
  if (!r.number("max_restarts", 1, 1000000, max_restarts) || !r.number("min_uptime", 0, 86400000, min_uptime) ||
      !r.number("restart_delay", 0, 86400000, restart_delay))
    return std::nullopt;
  s.backoff.limit = static_cast<unsigned>(max_restarts);
  s.backoff.stable_uptime = std::chrono::milliseconds(min_uptime);
  if (restart_delay >= 0) {
    s.backoff.first = std::chrono::milliseconds(restart_delay);
    s.backoff.factor = 1;
    s.backoff.first_at_once = restart_delay == 0;
  }
  s.kill_timeout = std::chrono::milliseconds(kill_timeout);
  s.watchdog = std::chrono::milliseconds(watchdog);
  s.ready_timeout = std::chrono::milliseconds(ready_timeout);
  a.log_keep = static_cast<unsigned>(keep);
  return a;
}

}  // namespace

std::optional<app_spec> app_from_json(const json::object& o, std::string& why, field_names names,
                                      std::vector<std::string>* field) {
  reader r{o, why, names, {}, {}};
  auto a = read_app(r);
  if (field) *field = a ? std::vector<std::string>{} : std::move(r.at);
  return a;
}

std::optional<config_file> load_config(const std::string& path, std::string& why) {
  const auto text = read_text(path, why);
  if (!text) return std::nullopt;
  toml::table doc;
  try {
    doc = toml::parse(*text, path);
  } catch (const toml::parse_error& e) {
    why = where(path, e.source()) + ": " + std::string(e.description());
    return std::nullopt;
  }
  config_file out;
  const auto folder = std::filesystem::absolute(path).parent_path();
  auto resolve = [&](json::object& o, std::string_view key) {
    if (auto* v = o.if_contains(key); v && v->is_string() && !v->get_string().empty()) {
      std::filesystem::path p(std::string(v->get_string()));
      if (key == "command" && p.string().find('/') == std::string::npos) return;  // found in PATH
      if (p.is_relative()) *v = (folder / p).lexically_normal().string();
    }
  };
  std::set<std::string> names;
  for (auto&& [key, node] : doc) {
    if (key.str() == "metrics_port") {
      auto port = node.value<std::int64_t>();
      if (!port || *port < 1 || *port > 65535) {
        why = where(path, key.source()) + ": metrics_port must be a port number (1-65535)";
        return std::nullopt;
      }
      out.metrics_port = static_cast<unsigned>(*port);
    } else if (key.str() == "app") {
      auto* apps = node.as_array();
      if (!apps || !apps->is_array_of_tables()) {
        why = where(path, key.source()) + ": apps are written [[app]] (an array of tables)";
        return std::nullopt;
      }
      for (auto&& item : *apps) {
        auto o = to_json(item).as_object();
        resolve(o, "cwd");
        if (!o.contains("cwd")) o["cwd"] = folder.string();
        resolve(o, "command");
        resolve(o, "out_file");
        resolve(o, "err_file");
        std::string bad;
        std::vector<std::string> field;
        auto app = app_from_json(o, bad, field_names::config, &field);
        const auto& table = *item.as_table();
        if (!app) {
          why = where(path, line_of(table, field)) + ": " + bad;
          return std::nullopt;
        }
        if (!names.insert(app->name).second) {
          why = where(path, line_of(table, {"name"})) + ": app '" + app->name + "' is defined twice";
          return std::nullopt;
        }
        out.apps.push_back(std::move(o));
      }
    } else {
      why = where(path, key.source()) + ": '" + std::string(key.str()) +
            "' is not a setting clutch knows (apps go in [[app]] tables)";
      return std::nullopt;
    }
  }
  if (out.apps.empty()) {
    why = path + ": no app in it (write one as [[app]] with name and command)";
    return std::nullopt;
  }
  return out;
}

}  // namespace clutch::supervisor
