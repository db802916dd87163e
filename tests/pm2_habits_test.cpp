// PM2's habits, kept: an app's environment is its starter's, the app table survives the daemon (save, resurrect,
// a crash's successor), and `clutch startup` gives systemd a unit that brings it all back at boot. Real daemons,
// real Node workers (tests/fixtures/node_server.js), real requests.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "clutch/child_process.hpp"
#include "clutch_run.hpp"
#include "helpers.hpp"
#include "node_server.hpp"
#include "supervisor/notify.hpp"

namespace {

using namespace std::chrono_literals;
using clutch_test::free_port;
using clutch_test::run_until;
using clutch_test::temp_dir;
using namespace clutch_test::node_server;

// As under PM2, an app starts from the environment of the `clutch start` that started it, not the daemon's, and
// keeps it until restart or reload --update-env gives it the caller's again.
TEST(NodeCluster, AnAppStartsFromItsStartersEnvironmentAndUpdateEnvTakesItAgain) {
  clutch_test::clutch_home cli;
  const std::string port = std::to_string(free_port());
  ASSERT_EQ(cli({"start", "--name", "first", "--", "sleep", "600"}, {{"GREETING", "daemon"}}).status.code, 0);
  auto r = cli({"start", server_js, "-i", "1"}, {{"PORT", port}, {"GREETING", "hello"}});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto greeting = [&] {
    std::string g;
    clutch_test::eventually([&] { return !(g = get(static_cast<unsigned short>(std::stoi(port))).greeting).empty(); });
    return g;
  };
  EXPECT_EQ(greeting(), "hello");
  ASSERT_EQ(cli({"restart", "node_server"}, {{"GREETING", "ignored"}}).status.code, 0);
  EXPECT_EQ(greeting(), "hello");
  ASSERT_EQ(cli({"restart", "node_server", "--update-env"}, {{"PORT", port}, {"GREETING", "bye"}}).status.code, 0);
  EXPECT_EQ(greeting(), "bye");
  ASSERT_EQ(cli({"reload", "node_server", "--update-env"}, {{"PORT", port}, {"GREETING", "again"}}).status.code, 0);
  EXPECT_EQ(greeting(), "again");
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}

// An app table as `ls` shows it: name → {state, workers running}.
std::map<std::string, std::pair<std::string, std::size_t>> table_of(const clutch_test::clutch_home& cli) {
  std::map<std::string, std::pair<std::string, std::size_t>> out;
  auto r = cli({"ls", "--json"});
  boost::json::error_code ec;
  auto v = boost::json::parse(r.out, ec);
  if (ec || !v.is_array()) return out;
  for (const auto& a : v.as_array()) {
    const auto& o = a.as_object();
    std::size_t workers = 0;
    if (const auto* ps = o.if_contains("processes"))
      for (const auto& p : ps->as_array()) workers += clutch_test::str(p.as_object(), "role") == "worker";
    out[clutch_test::str(o, "name")] = {clutch_test::str(o, "state"), workers};
  }
  return out;
}

// Two apps, one scaled to 3 workers and one stopped: what each test below expects back.
void define_apps(const clutch_test::clutch_home& cli, const std::string& port) {
  ASSERT_EQ(cli({"start", server_js, "-i", "2"}, {{"PORT", port}, {"GREETING", "kept"}}).status.code, 0);
  ASSERT_EQ(cli({"scale", "node_server", "3"}).status.code, 0);
  ASSERT_EQ(cli({"start", "--name", "idle", "--", "sleep", "600"}).status.code, 0);
  ASSERT_EQ(cli({"stop", "idle"}).status.code, 0);
}

void expect_apps_back(const clutch_test::clutch_home& cli, const std::string& port) {
  ASSERT_TRUE(clutch_test::eventually([&] { return table_of(cli)["node_server"].second == 3; })) << cli({"ls"}).out;
  auto t = table_of(cli);
  EXPECT_EQ(t["node_server"].first, "running");
  EXPECT_EQ(t["idle"].first, "stopped");
  auto seen = answers_from(static_cast<unsigned short>(std::stoi(port)), 3);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(get(static_cast<unsigned short>(std::stoi(port))).greeting, "kept") << "its environment came back too";
}

int daemon_pid(const clutch_test::clutch_home& cli) {
  int pid = 0;
  std::ifstream(cli.home.path + "/daemon.pid") >> pid;
  return pid;
}

// kill -9 of the daemon: its workers go with it (they die with their parent), and the next daemon, started as
// systemd's Restart=always would, brings every app back as it was, and says so.
TEST(Pm2Habits, AKilledDaemonsSuccessorBringsEveryAppBackAsItWas) {
  clutch_test::clutch_home cli;
  const std::string port = std::to_string(free_port());
  define_apps(cli, port);
  const int old = daemon_pid(cli);
  ASSERT_GT(old, 1);
  ASSERT_EQ(::kill(old, SIGKILL), 0);
  ASSERT_TRUE(clutch_test::eventually([&] { return !clutch_test::process_alive(old); }));
  ASSERT_TRUE(clutch_test::eventually([&] { return get(static_cast<unsigned short>(std::stoi(port))).pid == 0; }));

  boost::asio::io_context io;
  clutch::options o;
  o.env = clutch::environment::add({{"CLUTCH_HOME", cli.home.path}});
  o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::pipe};
  std::string log;
  auto daemon = clutch::spawn(io, clutch_test::clutch_binary(), {"daemon"}, o);
  daemon.on_data(clutch::child::err, [&](std::string_view d) { log += d; });
  std::optional<clutch::exit_status> ended;
  daemon.async_wait([&](clutch::error_code, clutch::exit_status st) { ended = st; });
  ASSERT_TRUE(run_until(io, [&] { return log.find("restored 2 apps") != std::string::npos; })) << log;
  EXPECT_NE(log.find("pid " + std::to_string(old) + ") ended without stopping its apps"), std::string::npos) << log;
  expect_apps_back(cli, port);
  EXPECT_EQ(cli({"kill"}).status.code, 0);
  ASSERT_TRUE(run_until(io, [&] { return ended.has_value(); }));
  // A clean end leaves nothing to restore: the daemon after it starts empty.
  auto r = cli({"start", "--name", "again", "--", "sleep", "600"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_EQ(table_of(cli).size(), 1u);
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}

TEST(Pm2Habits, SaveThenResurrectRestoresTheAppsAsSaved) {
  clutch_test::clutch_home cli;
  const std::string port = std::to_string(free_port());
  define_apps(cli, port);
  auto r = cli({"save"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("saved 2 apps"), std::string::npos) << r.out;
  struct stat st {};
  ASSERT_EQ(::stat((cli.home.path + "/dump.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "it holds the apps' environments";
  ASSERT_EQ(cli({"kill"}).status.code, 0);
  r = cli({"resurrect"});  // the daemon starts, then restores
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("restored node_server"), std::string::npos) << r.out;
  expect_apps_back(cli, port);
  EXPECT_EQ(cli({"kill"}).status.code, 0);
  clutch_test::clutch_home empty;
  r = empty({"resurrect"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("nothing was saved"), std::string::npos) << r.err;
  EXPECT_EQ(empty({"kill"}).status.code, 0);
}

// The unit runs `clutch daemon --resurrect` under systemd's Type=notify: the daemon says READY=1 once it takes
// requests.
TEST(Pm2Habits, StartupGivesASystemdUnitAndTheDaemonSpeaksItsProtocol) {
  clutch_test::clutch_home cli;
  auto r = cli({"startup"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  const std::string& exe = clutch_test::clutch_binary();
  for (const std::string& line : std::vector<std::string>{"Type=notify", "Restart=always", "ExecStop=" + exe + " kill",
                                                          "ExecStart=" + exe + " daemon --resurrect",
                                                          "Environment=CLUTCH_HOME=", "WantedBy=multi-user.target"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  temp_dir units;
  r = cli({"startup", "--install", "--unit-dir", units.path});
  ASSERT_EQ(r.status.code, 0) << r.err;
  std::size_t files = 0;
  for (const auto& f : std::filesystem::directory_iterator(units.path)) {
    ++files;
    std::ifstream in(f.path());
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_NE(text.str().find("ExecStart=" + exe + " daemon --resurrect"), std::string::npos) << text.str();
  }
  EXPECT_EQ(files, 1u);

  boost::asio::io_context io;
  clutch::supervisor::notify_socket notify(io);
  bool ready = false;
  notify.on_message([&](pid_t, const clutch::supervisor::notify_message& m) { ready = ready || m.ready; });
  clutch::options o;
  o.env = clutch::environment::add({{"CLUTCH_HOME", cli.home.path}, {"NOTIFY_SOCKET", notify.address()}});
  o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ignore};
  auto daemon = clutch::spawn(io, clutch_test::clutch_binary(), {"daemon", "--resurrect"}, o);
  std::optional<clutch::exit_status> ended;
  daemon.async_wait([&](clutch::error_code, clutch::exit_status st) { ended = st; });
  ASSERT_TRUE(run_until(io, [&] { return ready; }));
  EXPECT_EQ(cli({"kill"}).status.code, 0);
  ASSERT_TRUE(run_until(io, [&] { return ended.has_value(); }));
  EXPECT_EQ(ended->code, 0);
}

// PM2's ecosystem file, read as is (node evaluates it): both apps run with its settings and env_production, and
// the fields clutch does not support are named once each.
TEST(Pm2Habits, AnEcosystemFileStartsAsIsWithItsEnv) {
  clutch_test::clutch_home cli;
  const auto api = free_port(), worker = free_port();
  const std::map<std::string, std::string> ports{{"API_PORT", std::to_string(api)}, {"WORKER_PORT", std::to_string(worker)}};
  clutch::environment::map env(ports.begin(), ports.end());
  auto r = cli({"start", CLUTCH_FIXTURES "/ecosystem.config.js", "--env", "production"}, env);
  ASSERT_EQ(r.status.code, 0) << r.err;
  for (const std::string field : {"watch", "cron_restart"}) {
    const auto at = r.err.find(field + " is not supported");
    EXPECT_NE(at, std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(field + " is not supported", at + 1), std::string::npos) << "said once";
  }
  EXPECT_EQ(r.err.find("max_memory_restart"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("log_date_format"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("time is not"), std::string::npos) << r.err;
  auto from_api = answers_from(api, 2);
  EXPECT_EQ(from_api.size(), 2u);
  EXPECT_EQ(get(api).greeting, "production");
  clutch_test::node_server::answer w;
  ASSERT_TRUE(clutch_test::eventually([&] { return (w = get(worker)).pid != 0; }));
  EXPECT_EQ(w.instance, "0") << "instance_var INSTANCE_ID";
  EXPECT_EQ(w.greeting, "-");
  auto status = cli({"status", "worker", "--json"});
  EXPECT_NE(status.out.find("--max-old-space-size=128"), std::string::npos) << status.out;
  // log_date_format ('YYYY-MM-DD HH:mm Z') and time: true, before each line of the files.
  auto first_line = [&](const std::string& app) {
    std::string line;
    std::ifstream in(cli.home.path + "/logs/" + app + ".out.log");
    std::getline(in, line);
    return line;
  };
  EXPECT_TRUE(std::regex_search(first_line("api"),
                                std::regex(R"(^\d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d: \[\d+\] listening)")))
      << first_line("api");
  EXPECT_TRUE(std::regex_search(first_line("worker"), std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d: \[\d+\] )")))
      << first_line("worker");
  // wait_ready: its reload waits for process.send('ready').
  r = cli({"reload", "worker"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  // PM2's startOrReload of the same file: both reloaded with what it says now.
  r = cli({"reload", CLUTCH_FIXTURES "/ecosystem.config.js", "--env", "production"}, env);
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("reloaded api"), std::string::npos) << r.out;
  auto t = table_of(cli);
  EXPECT_EQ(t["api"].second, 2u);
  EXPECT_EQ(t["worker"].second, 1u);
  EXPECT_EQ(cli({"kill"}).status.code, 0);
  // A file node cannot evaluate is a clear error, and nothing starts.
  temp_dir d;
  std::ofstream(d.path + "/ecosystem.config.js") << "module.exports = {apps: [ {name: 'x', script: 'a.js'} ";
  r = cli({"start", d.path + "/ecosystem.config.js"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("ecosystem.config.js"), std::string::npos) << r.err;
}

}  // namespace
