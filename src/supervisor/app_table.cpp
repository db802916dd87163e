// The app table's file: {"version": 1, "envs": [{…}], "apps": [{"app": {…}, "env": index | null, "running": bool,
// "pids": […]}]}.
#include "supervisor/app_table.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <cerrno>
#include <fstream>
#include <map>
#include <sstream>

#include "os/file.hpp"

namespace clutch::supervisor {

namespace json = boost::json;

namespace {
error_code errno_code(int e) { return {e, boost::system::system_category()}; }
}  // namespace

error_code write_table(const std::string& path, const std::vector<table_entry>& apps) {
  // Each environment once ("envs"), apps naming theirs by index: the apps of one `clutch start FILE` share one.
  // And an entry at a time: a table of 100 apps is never held whole as JSON values.
  std::map<const environment::map*, std::size_t> index;
  std::string envs;
  for (const auto& a : apps) {
    if (!a.env || index.contains(a.env.get())) continue;
    json::object env;
    for (const auto& [k, v] : *a.env) env[k] = v;
    if (!index.empty()) envs += ',';
    envs += json::serialize(env);
    index.emplace(a.env.get(), index.size());
  }
  std::string text = "{\"version\":1,\"envs\":[" + envs + "],\"apps\":[";
  for (std::size_t i = 0; i < apps.size(); ++i) {
    const auto& a = apps[i];
    json::object e{{"app", a.source}, {"running", a.running}, {"pids", json::value_from(a.pids)}};
    if (a.env) e["env"] = index.at(a.env.get());
    else e["env"] = nullptr;
    if (i > 0) text += ',';
    text += json::serialize(e);
  }
  text += "]}\n";
  // Whole or not at all, and on the disk before it counts: whoever reads it, a daemon after a crash included,
  // sees the old table or the new one.
  if (const int e = os::replace_file(path, text, 0600, true)) return errno_code(e);
  return {};
}

std::optional<std::vector<table_entry>> read_table(const std::string& path, std::string& why) {
  std::ifstream in(path);
  if (!in) return std::vector<table_entry>{};
  std::stringstream text;
  text << in.rdbuf();
  json::error_code ec;
  const auto doc = json::parse(text.str(), ec);
  const auto* top = doc.if_object();
  const auto* apps = top ? top->if_contains("apps") : nullptr;
  if (ec || !apps || !apps->is_array()) {
    why = path + ": not an app table clutch wrote";
    return std::nullopt;
  }
  std::vector<std::shared_ptr<const environment::map>> envs;
  if (const auto* list = top->if_contains("envs"); list && list->is_array())
    for (const auto& env : list->get_array()) {
      environment::map vars;
      if (env.is_object())
        for (const auto& [k, val] : env.get_object())
          if (val.is_string()) vars[std::string(k)] = std::string(val.get_string());
      envs.push_back(std::make_shared<const environment::map>(std::move(vars)));
    }
  std::vector<table_entry> out;
  for (const auto& v : apps->get_array()) {
    const auto* o = v.if_object();
    const auto* app = o ? o->if_contains("app") : nullptr;
    if (!app || !app->is_object()) {
      why = path + ": an entry without its app";
      return std::nullopt;
    }
    table_entry e;
    e.source = app->get_object();
    if (const auto* env = o->if_contains("env"); env && env->is_int64()) {
      if (env->get_int64() < 0 || static_cast<std::size_t>(env->get_int64()) >= envs.size()) {
        why = path + ": an app names an environment the file does not hold";
        return std::nullopt;
      }
      e.env = envs[static_cast<std::size_t>(env->get_int64())];
    }
    if (const auto* pids = o->if_contains("pids"); pids && pids->is_array())
      for (const auto& p : pids->get_array())
        if (p.is_int64() && p.get_int64() > 1 && p.get_int64() < (1LL << 31)) e.pids.push_back(static_cast<int>(p.get_int64()));
    const auto* running = o->if_contains("running");
    e.running = running && running->is_bool() && running->get_bool();
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace clutch::supervisor
