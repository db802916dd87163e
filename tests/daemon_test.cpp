// The daemon and its CLI, end to end: the real `clutch` binary starting a real daemon (in a CLUTCH_HOME of the
// test's own), real workers (Node and shell), real log files and HTTP. And the pieces under it: log files,
// line splitting, config files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "helpers.hpp"
#include "supervisor/config.hpp"
#include "supervisor/logs.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
namespace sv = clutch::supervisor;

namespace {

using clutch_test::temp_dir;
using clutch_test::eventually;
using clutch_test::free_port;

// ---- the pieces ------------------------------------------------------------------------------------------------


std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(LogFile, RotatesBetweenWholeLinesAndKeepsN) {
  temp_dir d;
  const auto path = d.path + "/a.log";
  sv::log_file f(path, 100, 2);
  ASSERT_FALSE(f.open());
  for (int i = 0; i < 40; ++i) {  // 40 lines of 10 bytes, in batches of 1 and 3: 10 per file
    f.append("[1] ", "line" + std::to_string(i % 10));
    if (i % 4 == 0 || i % 4 == 3) {
      ASSERT_FALSE(f.flush());
    }
  }
  ASSERT_FALSE(f.flush());
  // The newest 10 in the file, the 20 before in .1 and .2; older ones went with the rotation past keep.
  EXPECT_EQ(read_lines(path).size(), 10u);
  EXPECT_EQ(read_lines(path + ".1").size(), 10u);
  EXPECT_EQ(read_lines(path + ".2").size(), 10u);
  EXPECT_FALSE(fs::exists(path + ".3"));
  for (const auto& p : {path, path + ".1", path + ".2"}) EXPECT_LE(fs::file_size(p), 100u) << p;
}

TEST(LineSplitter, CutsLinesAcrossChunksAndKeepsTheUnfinishedOne) {
  sv::line_splitter s;
  std::vector<std::string> lines;
  auto add = [&](std::string_view l) { lines.emplace_back(l); };
  s.feed("one\ntw", add);
  s.feed("o\r\nthr", add);
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two"}));
  s.finish(add);
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "thr"}));
  lines.clear();
  s.feed(std::string(sv::line_splitter::max_line * 2 + 5, 'x'), add);  // no newline at all: cut, never unbounded
  EXPECT_EQ(lines.size(), 2u);
}

TEST(TailFile, GivesTheLastLines) {
  temp_dir d;
  const auto path = d.path + "/t.log";
  {
    std::ofstream out(path);
    for (int i = 1; i <= 100000; ++i) out << "line " << i << '\n';
  }
  auto last = sv::tail_file(path, 3);
  ASSERT_EQ(last.size(), 3u);
  EXPECT_EQ(last[0], "line 99998");
  EXPECT_EQ(last[2], "line 100000");
  EXPECT_EQ(sv::tail_file(path, 200000).size(), 100000u);
  EXPECT_TRUE(sv::tail_file(d.path + "/missing", 5).empty());
}

TEST(DateText, WritesPm2sLogDateFormat) {
  ::setenv("TZ", "CET-1", 1);  // this test's process only
  ::tzset();
  const std::chrono::system_clock::time_point t{std::chrono::milliseconds(1796648645067)};  // 13:04:05.067 UTC
  EXPECT_EQ(sv::date_text("YYYY-MM-DD HH:mm:ss.SSS Z", t), "2026-12-07 14:04:05.067 +01:00");
  EXPECT_EQ(sv::date_text("D/M/YY h:m:s A ZZ", t), "7/12/26 2:4:5 PM +0100");
  EXPECT_EQ(sv::date_text("[at] hh a X x", t), "at 02 pm 1796648645 1796648645067");
  EXPECT_EQ(sv::date_text("", t), "");
}

TEST(Config, AFileOfAppsIsReadAndABrokenOneSaysWhereAndWhy) {
  temp_dir d;
  const auto write = [&](const std::string& text) {
    std::ofstream(d.path + "/apps.toml") << text;
    return d.path + "/apps.toml";
  };
  std::string why;
  auto ok = sv::load_config(write("metrics_port = 9999\n[[app]]\nname = \"web\"\ncommand = \"./server\"\n"
                                  "workers = \"auto\"\nlisten = [\"8080\"]\nenv = { A = \"1\" }\n"
                                  "[[app]]\nname = \"jobs\"\ncommand = \"node\"\nargs = [\"jobs.js\"]\nworkers = 2\n"),
                            why);
  ASSERT_TRUE(ok) << why;
  EXPECT_EQ(ok->metrics_port, 9999u);
  ASSERT_EQ(ok->apps.size(), 2u);
  EXPECT_EQ(ok->apps[0].at("command").as_string(), d.path + "/server");  // relative to the file
  EXPECT_EQ(ok->apps[1].at("command").as_string(), "node");                // from PATH
  EXPECT_EQ(ok->apps[0].at("cwd").as_string(), d.path);

  struct bad {
    std::string text, says;
  };
  for (const auto& b : std::vector<bad>{
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nworkers = \n", "apps.toml:4"},
           {"[[app]]\nname = \"x\"\ncomand = \"y\"\n", "comand"},
           {"[[app]]\nname = \"x\"\n", "command is missing"},
           {"[[app]]\nname = \"all\"\ncommand = \"y\"\n", "not a name"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nworkers = 0\n", "workers"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nlisten = [\"nope\"]\n", "nope"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nmax_memory = \"lots\"\n", "max_memory"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nstop_signal = \"SIGNOPE\"\n", "SIGNOPE"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\nmerge_logs = 1\n", "merge_logs"},
           {"[[app]]\nname = \"x\"\ncommand = \"y\"\n[[app]]\nname = \"x\"\ncommand = \"z\"\n", "twice"},
           {"title = \"x\"\n", "title"},
           {"", "no app"},
       }) {
    why.clear();
    EXPECT_FALSE(sv::load_config(write(b.text), why)) << b.text;
    EXPECT_NE(why.find(b.says), std::string::npos) << why;
  }
  why.clear();
  EXPECT_FALSE(sv::load_config(d.path + "/none.toml", why));
  EXPECT_EQ(why, "cannot open " + d.path + "/none.toml: No such file or directory");
}

// The line of the key at fault, not of its [[app]]: in a long file, the table's line says little.
TEST(Config, AnErrorInAnAppPointsAtTheLineOfItsKey) {
  temp_dir d;
  const auto path = d.path + "/apps.toml";
  const std::string head =
      "metrics_port = 9100\n"          // 1
      "\n"                             // 2
      "[[app]]\n"                      // 3
      "name = \"web\"\n"               // 4
      "command = \"./server\"\n"       // 5
      "\n"                             // 6
      "[[app]]\n"                      // 7
      "name = \"jobs\"\n"              // 8
      "command = \"node\"\n"           // 9
      "args = [\"jobs.js\"]\n";        // 10
  struct bad {
    std::string tail;  // from line 11
    int line;
    std::string says;
  };
  for (const auto& b : std::vector<bad>{
           {"workers = 2\nmax_memory = \"lots\"\n", 12, "max_memory"},
           {"workers = 2\nmax_memroy = \"1G\"\n", 12, "max_memroy"},
           {"workers = 2\n\nkill_timeout = -1\n", 13, "kill_timeout"},
           {"listen = [\n  \"8080\",\n  \"nope\",\n]\n", 13, "nope"},
           {"args2 = 1\n", 11, "args2"},
           {"workers = 2\n[app.env]\nA = \"1\"\nB = 1.5\n", 14, "env"},
           {"[[app]]\nname = \"web\"\ncommand = \"x\"\n", 12, "twice"},
           {"[[app]]\ncommand = \"x\"\n", 11, "name is missing"},  // no key to point at: its table
       }) {
    std::ofstream(path) << head << b.tail;
    std::string why;
    EXPECT_FALSE(sv::load_config(path, why)) << b.tail;
    EXPECT_EQ(why.rfind(path + ":" + std::to_string(b.line) + ": ", 0), 0u) << b.tail << why;
    EXPECT_NE(why.find(b.says), std::string::npos) << why;
  }
}

TEST(Config, AutoWorkersShareTheCpusOneFewerForAnAgent) {
  EXPECT_EQ(sv::auto_workers(8, 1, false), 8u);
  EXPECT_EQ(sv::auto_workers(8, 2, false), 4u);
  EXPECT_EQ(sv::auto_workers(8, 2, true), 3u);
  EXPECT_EQ(sv::auto_workers(2, 4, true), 1u);  // never none
}

// ---- the daemon, end to end -------------------------------------------------------------------------------------

struct result {
  int code = -1;
  std::string out, err;
};

// A daemon home of the test's own; whatever the test leaves running is ended with it.
struct daemon_home {
  temp_dir dir;
  result cli(std::vector<std::string> args, std::optional<uid_t> as = {}) {
    clutch::options o;
    o.env = clutch::environment::add({{"CLUTCH_HOME", dir.path}});
    o.timeout = 60s;
    std::string binary = clutch_test::clutch_binary();
    if (as) {
      o.uid = *as;
      o.gid = *as;
      o.cwd = "/";
      // Another uid may not enter the build tree (a checkout in a private home): it runs a copy in our folder,
      // which the caller has opened to it.
      binary = dir.path + "/clutch-copy";
      if (!fs::exists(binary)) fs::copy_file(clutch_test::clutch_binary(), binary);
      ::chmod(binary.c_str(), 0755);
    }
    auto r = clutch::spawn_sync(binary, args, o);
    return {r.status.code.value_or(-1), r.out, r.err};
  }
  json::value ls() {
    auto r = cli({"ls", "--json"});
    json::error_code ec;
    auto v = json::parse(r.out, ec);
    return ec ? json::value() : v;
  }
  json::object status(const std::string& app) {
    auto r = cli({"status", app, "--json"});
    json::error_code ec;
    auto v = json::parse(r.out, ec);
    return !ec && v.is_object() ? v.as_object() : json::object{};
  }
  int daemon_pid() {
    std::ifstream in(dir.path + "/daemon.pid");
    int pid = 0;
    in >> pid;
    return pid;
  }
  ~daemon_home() {
    const int pid = daemon_pid();
    if (pid > 0 && clutch_test::process_alive(pid)) {
      cli({"kill"});
      if (clutch_test::process_alive(pid)) ::kill(pid, SIGKILL);  // its workers die with it (death signal)
    }
  }
};

// Every process of an app with its state, from `clutch ls --json`.
std::vector<std::pair<int, std::string>> processes(const json::value& ls, const std::string& app) {
  std::vector<std::pair<int, std::string>> out;
  if (!ls.is_array()) return out;
  for (const auto& a : ls.as_array())
    if (a.at("name").as_string() == app)
      for (const auto& p : a.at("processes").as_array())
        out.emplace_back(static_cast<int>(p.at("pid").to_number<double>()), std::string(p.at("state").as_string()));
  return out;
}

bool ready_count(daemon_home& h, const std::string& app, std::size_t n) {
  auto ps = processes(h.ls(), app);
  return ps.size() == n && std::all_of(ps.begin(), ps.end(), [](auto& p) { return p.second == "ready"; });
}


using clutch_test::http_request;

unsigned short port_of(const json::object& status) {
  const auto& listen = status.at("listen").as_array();
  if (listen.empty()) return 0;
  const std::string at(listen[0].as_string());
  return static_cast<unsigned short>(std::stoi(at.substr(at.rfind(':') + 1)));
}


const std::vector<std::string> node_app = {"node", CLUTCH_FIXTURES "/listen_fds.js"};

std::vector<std::string> start_args(std::vector<std::string> opts, const std::vector<std::string>& program) {
  std::vector<std::string> a{"start"};
  a.insert(a.end(), opts.begin(), opts.end());
  a.push_back("--");
  a.insert(a.end(), program.begin(), program.end());
  return a;
}

TEST(Daemon, StartLsReloadLogsStopAndKill) {
  daemon_home h;
  auto r = h.cli(start_args({"--name", "web", "--workers", "2", "--listen", "127.0.0.1:0"}, node_app));
  ASSERT_EQ(r.code, 0) << r.err;
  const int daemon = h.daemon_pid();
  ASSERT_GT(daemon, 0);
  // The control socket is its owner's alone.
  struct stat st {};
  ASSERT_EQ(::stat((h.dir.path + "/clutch.sock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  ASSERT_TRUE(eventually([&] { return ready_count(h, "web", 2); })) << json::serialize(h.ls());
  const auto port = port_of(h.status("web"));
  ASSERT_NE(port, 0);
  std::set<std::string> served;
  ASSERT_TRUE(eventually([&] {
    served.insert(http_request(port).second.substr(0, http_request(port).second.find(' ', 5)));
    return served.size() >= 2;
  })) << "both workers answer";
  auto table = h.cli({"ls"});
  EXPECT_NE(table.out.find("web"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("ready"), std::string::npos) << table.out;

  // logs -f, kept open while the app reloads: the new workers' first lines reach it.
  asio::io_context io;
  clutch::options o;
  o.env = clutch::environment::add({{"CLUTCH_HOME", h.dir.path}});
  o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::pipe};
  std::string followed;
  auto follower = clutch::spawn(io, clutch_test::clutch_binary(), {"logs", "web", "-f", "-n", "10"}, o);
  follower.on_data(clutch::child::out, [&](std::string_view d) { followed += d; });
  ASSERT_TRUE(clutch_test::run_until(io, [&] { return followed.find("listening on 1") != std::string::npos; }))
      << followed;  // the last lines first: both workers said so
  const auto before = processes(h.ls(), "web");
  followed.clear();
  r = h.cli({"reload", "web"});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(clutch_test::run_until(io, [&] {
    std::size_t n = 0;
    for (auto at = followed.find("listening on 1"); at != std::string::npos; at = followed.find("listening", at + 1))
      ++n;
    return n >= 2;
  })) << followed;
  follower.kill(SIGTERM);
  const auto after = processes(h.ls(), "web");
  ASSERT_EQ(after.size(), 2u);
  for (auto& [pid, state] : after)
    for (auto& [old, s] : before) EXPECT_NE(pid, old) << "every worker was replaced";
  EXPECT_NE(http_request(port).second, "");

  r = h.cli({"stop", "web"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(processes(h.ls(), "web").empty());
  for (auto& [pid, state] : after) EXPECT_FALSE(clutch_test::process_alive(pid));
  EXPECT_EQ(h.status("web").at("state").as_string(), "stopped");

  r = h.cli({"kill"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(clutch_test::process_alive(daemon));
  EXPECT_FALSE(fs::exists(h.dir.path + "/clutch.sock"));
}

TEST(Daemon, ScaleRestartAndDeleteWorkOnTheRunningApp) {
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "s", "--workers", "1"}, {"sleep", "600"})).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "s", 1); }));
  ASSERT_EQ(h.cli({"scale", "s", "3"}).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "s", 3); })) << json::serialize(h.ls());
  const auto three = processes(h.ls(), "s");
  ASSERT_EQ(h.cli({"scale", "s", "1"}).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "s", 1); })) << json::serialize(h.ls());
  EXPECT_EQ(processes(h.ls(), "s")[0].first, three[0].first) << "scaling down keeps the first worker";
  ASSERT_TRUE(eventually([&] { return !clutch_test::process_alive(three[2].first); }));

  ASSERT_EQ(h.cli({"restart", "s"}).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "s", 1); }));
  EXPECT_NE(processes(h.ls(), "s")[0].first, three[0].first);
  EXPECT_FALSE(clutch_test::process_alive(three[0].first));

  ASSERT_EQ(h.cli({"delete", "s"}).code, 0);
  EXPECT_TRUE(h.ls().as_array().empty());
}

TEST(Daemon, TheUnixSocketFileOfAnAppGoesWithItAndOnlyThatOne) {
  daemon_home h;
  const std::string path = h.dir.path + "/u.sock";
  ASSERT_EQ(h.cli(start_args({"--name", "u", "--workers", "1", "--listen", "unix:" + path}, {"sleep", "600"})).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "u", 1); })) << json::serialize(h.ls());
  EXPECT_TRUE(fs::exists(path));
  ASSERT_EQ(h.cli({"delete", "u"}).code, 0);
  EXPECT_FALSE(fs::exists(path)) << "the daemon leaves the socket file of a deleted app behind";

  // Again, and now someone else's file stands at that path when the daemon ends: not the daemon's to remove.
  ASSERT_EQ(h.cli(start_args({"--name", "u", "--workers", "1", "--listen", "unix:" + path}, {"sleep", "600"})).code, 0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "u", 1); })) << json::serialize(h.ls());
  fs::remove(path);
  std::ofstream(path) << "not a socket of clutch's\n";
  const int daemon = h.daemon_pid();
  ASSERT_EQ(h.cli({"kill"}).code, 0);
  ASSERT_TRUE(eventually([&] { return !clutch_test::process_alive(daemon); }));
  EXPECT_TRUE(fs::exists(path)) << "the daemon removed a file it did not make";
}

TEST(Daemon, BadRequestsGetAClearMessageAndChangeNothing) {
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "a", "--workers", "1"}, {"sleep", "600"})).code, 0);
  struct bad {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  for (const auto& b : std::vector<bad>{
           {{"stop", "nope"}, 1, "no app named 'nope' (known: a)"},
           {{"logs", "nope"}, 1, "no app named"},
           {start_args({"--name", "a"}, {"sleep", "1"}), 1, "already running"},
           {start_args({"--name", "b", "--workers", "many"}, {"sleep", "1"}), 2, "--workers 'many'"},
           {start_args({"--name", "b", "--listen", "nope"}, {"sleep", "1"}), 2, "nope"},
           {start_args({"--name", "b", "--env", "X"}, {"sleep", "1"}), 2, "KEY=VALUE"},
           {{"start"}, 2, "TOML file"},
           {{"scale", "a", "0"}, 2, "workers"},
           {{"frobnicate"}, 2, "frobnicate"},
       }) {
    auto r = h.cli(b.args);
    EXPECT_EQ(r.code, b.code) << b.args[0] << ' ' << r.err;
    EXPECT_NE(r.err.find(b.says), std::string::npos) << r.err;
  }
  // A broken file: where and why, and nothing started.
  std::ofstream(h.dir.path + "/broken.toml") << "[[app]]\nname = \"c\"\ncommand = [oops\n";
  auto r = h.cli({"start", h.dir.path + "/broken.toml"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("broken.toml:3"), std::string::npos) << r.err;
  ASSERT_TRUE(ready_count(h, "a", 1)) << "the running app is untouched";
  EXPECT_EQ(h.ls().as_array().size(), 1u);
}

TEST(Daemon, WithoutADaemonLsIsEmptyAndTheOtherCommandsSaySo) {
  daemon_home h;
  auto r = h.cli({"ls", "--json"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "[]\n");
  r = h.cli({"reload", "web"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("no daemon is running"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(h.dir.path + "/daemon.pid")) << "only start launches a daemon";
  EXPECT_EQ(h.cli({"kill"}).code, 0);
}

TEST(Daemon, APeerWithAnotherUidIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "a", "--workers", "1"}, {"sleep", "600"})).code, 0);
  // Past the file modes (which already keep others out), to reach the daemon's own check of the peer's uid.
  ::chmod(h.dir.path.c_str(), 0755);
  ::chmod((h.dir.path + "/clutch.sock").c_str(), 0666);
  auto r = h.cli({"stop", "a"}, 65534);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("refused: uid 65534"), std::string::npos) << r.err;
  EXPECT_TRUE(ready_count(h, "a", 1)) << "nothing was stopped";
}

TEST(Daemon, TheLastLinesOfACrashedWorkerAreShownWithItsExit) {
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "c", "--workers", "1", "--restart", "never"},
                             {"sh", "-c", "echo starting; echo 'out of cheese' >&2; exit 3"}))
                .code,
            0);
  json::object st;
  ASSERT_TRUE(eventually([&] {
    st = h.status("c");
    return st.contains("events") && !st.at("events").as_array().empty() && st.at("state").as_string() == "stopped";
  })) << json::serialize(st);
  const auto& ev = st.at("events").as_array()[0].as_object();
  EXPECT_EQ(ev.at("how").as_string(), "exited with code 3");
  const auto lines = json::serialize(ev.at("last_lines"));
  EXPECT_NE(lines.find("starting"), std::string::npos) << lines;
  EXPECT_NE(lines.find("out of cheese"), std::string::npos) << lines;
  auto text = h.cli({"status", "c"});
  EXPECT_NE(text.out.find("| out of cheese"), std::string::npos) << text.out;
}

TEST(Daemon, MetricsAndStatusAreServedOnLocalhost) {
  daemon_home h;
  const auto port = free_port();
  ASSERT_EQ(h.cli(start_args({"--name", "m", "--workers", "2", "--metrics-port", std::to_string(port)},
                             {"sleep", "600"}))
                .code,
            0);
  ASSERT_TRUE(eventually([&] { return http_request(port, "/ready").first == 200; }));
  auto [code, metrics] = http_request(port, "/metrics");
  EXPECT_EQ(code, 200);
  EXPECT_NE(metrics.find("# TYPE clutch_process_resident_memory_bytes gauge"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("clutch_process_up{app=\"m\",role=\"worker\",id=\"1\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("clutch_process_restarts_total{app=\"m\",role=\"worker\",id=\"2\""), std::string::npos);
  EXPECT_NE(metrics.find("\nclutch_supervisor_resident_memory_bytes "), std::string::npos) << metrics;
  auto [scode, status] = http_request(port, "/api/status");
  EXPECT_EQ(scode, 200);
  const auto v = json::parse(status);
  const auto& procs = v.at("apps").as_array()[0].at("processes").as_array();
  ASSERT_EQ(procs.size(), 2u);
  for (const auto& p : procs) {
    EXPECT_GT(p.at("memory").to_number<double>(), 0);
    EXPECT_TRUE(clutch_test::process_alive(static_cast<int>(p.at("pid").to_number<double>())));
    for (const char* k : {"cpu", "restarts", "uptime", "state"}) EXPECT_TRUE(p.as_object().contains(k)) << k;
  }
  ASSERT_EQ(h.cli({"stop", "m"}).code, 0);
  EXPECT_EQ(http_request(port, "/ready").first, 503);
  EXPECT_EQ(http_request(port, "/nope").first, 404);
}

TEST(Daemon, ATomlFileStartsEveryAppItDefines) {
  daemon_home h;
  std::ofstream(h.dir.path + "/apps.toml") << "[[app]]\nname = \"one\"\ncommand = \"sleep\"\nargs = [\"600\"]\n"
                                              "workers = \"auto\"\n"
                                              "[[app]]\nname = \"two\"\ncommand = \"sleep\"\nargs = [\"600\"]\n"
                                              "workers = \"auto\"\nagent = \"exec sleep 600\"\n";
  auto r = h.cli({"start", h.dir.path + "/apps.toml"});
  ASSERT_EQ(r.code, 0) << r.err;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  const auto one = sv::auto_workers(cpus, 2, false), two = sv::auto_workers(cpus, 2, true);
  EXPECT_TRUE(eventually([&] { return ready_count(h, "one", one) && ready_count(h, "two", two + 1); }))
      << json::serialize(h.ls());
}

// Lines from `[id] ` prefixed files, in order: the numbers a writer printed.
std::vector<long> numbers_in(const std::vector<std::string>& files) {
  std::vector<long> out;
  for (const auto& f : files)
    for (const auto& line : read_lines(f)) {
      const auto sp = line.find("] ");
      if (sp != std::string::npos) out.push_back(std::stol(line.substr(sp + 2)));
    }
  return out;
}

TEST(DaemonLogs, RotationUnderAFastWriterLosesNoLine) {
  daemon_home h;
  const long count = 200000;  // about 1.3 MB: some twenty rotations at 64K
  ASSERT_EQ(h.cli(start_args({"--name", "fast", "--workers", "1", "--restart", "never", "--log-max-size", "64K",
                              "--log-keep", "1000"},
                             {"seq", "1", std::to_string(count)}))
                .code,
            0);
  ASSERT_TRUE(eventually([&] { return h.status("fast").at("state").as_string() == "stopped"; }));
  const auto log = h.dir.path + "/logs/fast.out.log";
  std::vector<std::string> files;
  for (int k = 1000; k >= 1; --k)
    if (fs::exists(log + "." + std::to_string(k))) files.push_back(log + "." + std::to_string(k));
  files.push_back(log);
  EXPECT_GE(files.size(), 15u) << "it did rotate";
  for (const auto& f : files) EXPECT_LE(fs::file_size(f), 64u * 1024) << f;
  const auto got = numbers_in(files);
  ASSERT_EQ(got.size(), static_cast<std::size_t>(count));
  for (long i = 0; i < count; ++i)
    if (got[i] != i + 1) FAIL() << "line " << i + 1 << " is " << got[i];
}

// PM2's log_date_format and merge_logs = false: each line begins with the date as the format writes it, and each
// instance has its own files (NAME.out-0.log, NAME.out-1.log), kept by its replacement; `logs` shows their lines.
TEST(DaemonLogs, Pm2sLogDateFormatAndAFilePerInstance) {
  daemon_home h;
  const auto file = h.dir.path + "/apps.toml";
  std::ofstream(file) << "[[app]]\nname = \"dated\"\ncommand = \"sh\"\nworkers = 2\n"
                         "args = [\"-c\", \"echo hello from $NODE_APP_INSTANCE; echo oops >&2; exec sleep 30\"]\n"
                         "instance_var = \"NODE_APP_INSTANCE\"\n"
                         "log_date_format = \"[day] YYYY-MM-DD\"\nmerge_logs = false\n";
  ASSERT_EQ(h.cli({"start", file}).code, 0);
  const auto logs = h.dir.path + "/logs/";
  ASSERT_TRUE(eventually([&] {
    return read_lines(logs + "dated.out-0.log").size() == 1 && read_lines(logs + "dated.out-1.log").size() == 1 &&
           read_lines(logs + "dated.err-1.log").size() == 1;
  }));
  char today[16];
  const time_t now = ::time(nullptr);
  tm local{};
  ::localtime_r(&now, &local);
  std::strftime(today, sizeof today, "%Y-%m-%d", &local);
  for (const char* n : {"0", "1"}) {
    const auto line = read_lines(logs + "dated.out-" + n + ".log").at(0);
    EXPECT_EQ(line.rfind(std::string("day ") + today + ": [", 0), 0u) << line;
    EXPECT_NE(line.find(std::string("] hello from ") + n), std::string::npos) << line;
  }
  EXPECT_TRUE(read_lines(logs + "dated.out.log").empty());  // merged nowhere
  const auto r = h.cli({"logs", "dated", "-n", "10"});
  EXPECT_NE(r.out.find("hello from 0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hello from 1"), std::string::npos) << r.out;
  // A replacement in instance 1 writes on in instance 1's file.
  const auto pids = h.status("dated").at("processes").as_array();
  ASSERT_EQ(pids.size(), 2u);
  for (const auto& p : pids)
    if (p.at("slot").as_int64() == 1) {
      EXPECT_TRUE(clutch_test::signal_ours(p.at("pid").as_int64(), SIGKILL));
    }
  EXPECT_TRUE(eventually([&] { return read_lines(logs + "dated.out-1.log").size() == 2; }));
  EXPECT_EQ(read_lines(logs + "dated.out-0.log").size(), 1u);
  EXPECT_EQ(h.cli({"delete", "dated"}).code, 0);
}

TEST(DaemonLogs, Usr1ReopensTheFilesAfterTheyWereMoved) {
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "slow", "--workers", "1", "--restart", "never"},
                             {"sh", "-c", "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo $i; sleep 0.01; done"}))
                .code,
            0);
  const auto log = h.dir.path + "/logs/slow.out.log";
  ASSERT_TRUE(eventually([&] { return read_lines(log).size() >= 20; }));
  fs::rename(log, log + ".moved");  // as logrotate does, then it signals
  ASSERT_EQ(::kill(h.daemon_pid(), SIGUSR1), 0);
  ASSERT_TRUE(eventually([&] { return h.status("slow").at("state").as_string() == "stopped"; }));
  const auto moved = numbers_in({log + ".moved"}), fresh = numbers_in({log});
  EXPECT_FALSE(fresh.empty()) << "the daemon writes to a new file";
  const auto all = numbers_in({log + ".moved", log});
  ASSERT_EQ(all.size(), 300u);
  for (long i = 0; i < 300; ++i) EXPECT_EQ(all[i], i + 1);
}

// The variable's value in a live process's environment, or "" (PM2 users check their reloads by it).
std::string env_of(int pid, const std::string& name) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  for (std::string kv; std::getline(in, kv, '\0');)
    if (kv.rfind(name + "=", 0) == 0) return kv.substr(name.size() + 1);
  return {};
}

TEST(Daemon, StartingAFileLeavesRunningAppsAloneAndReloadingItAppliesItsNewSettings) {
  daemon_home h;
  const auto file = h.dir.path + "/apps.toml";
  std::ofstream(file) << "[[app]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"600\"]\nworkers = 1\n"
                         "env = { LEVEL = \"1\" }\n";
  auto r = h.cli({"start", file});
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_TRUE(eventually([&] { return ready_count(h, "a", 1); }));
  const auto first = processes(h.ls(), "a");
  EXPECT_EQ(env_of(first[0].first, "LEVEL"), "1");

  // Again: nothing to start, and it says so per app.
  r = h.cli({"start", file});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("a is running already; left alone"), std::string::npos) << r.out;
  EXPECT_EQ(processes(h.ls(), "a"), first);

  // Edited: a new setting and one more worker for a, and a new app b.
  std::ofstream(file) << "[[app]]\nname = \"a\"\ncommand = \"sleep\"\nargs = [\"600\"]\nworkers = 2\n"
                         "env = { LEVEL = \"2\" }\n"
                         "[[app]]\nname = \"b\"\ncommand = \"sleep\"\nargs = [\"600\"]\nworkers = 1\n";
  r = h.cli({"reload", file});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("reloaded a"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("started b"), std::string::npos) << r.out;
  ASSERT_TRUE(eventually([&] { return ready_count(h, "a", 2) && ready_count(h, "b", 1); })) << json::serialize(h.ls());
  for (const auto& [pid, state] : processes(h.ls(), "a")) {
    EXPECT_NE(pid, first[0].first) << "the old worker was replaced";
    EXPECT_EQ(env_of(pid, "LEVEL"), "2");
  }
}

TEST(Daemon, AnAddressHeldByAnotherAppOrProcessIsRefusedByName) {
  daemon_home h;
  const auto port = std::to_string(free_port());
  ASSERT_EQ(h.cli(start_args({"--name", "first", "--workers", "1", "--listen", "127.0.0.1:" + port}, {"sleep", "600"})).code,
            0);
  // Without this check the second app's sockets would join the first's SO_REUSEPORT group and take its clients.
  auto r = h.cli(start_args({"--name", "second", "--listen", port}, {"sleep", "600"}));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(port + " is already used by app 'first'"), std::string::npos) << r.err;
  EXPECT_TRUE(processes(h.ls(), "second").empty());

  asio::io_context io;
  asio::ip::tcp::acceptor taken(io, {asio::ip::address_v4::loopback(), 0});  // someone else's, no SO_REUSEPORT
  const auto other = std::to_string(taken.local_endpoint().port());
  r = h.cli(start_args({"--name", "third", "--listen", "127.0.0.1:" + other}, {"sleep", "600"}));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("127.0.0.1:" + other + ": Address already in use"), std::string::npos) << r.err;
  EXPECT_TRUE(eventually([&] { return ready_count(h, "first", 1); })) << "the first app runs on";
}

TEST(Daemon, AnAppRunsAsTheUserItNames) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start processes as another user";
  daemon_home h;
  ASSERT_EQ(h.cli(start_args({"--name", "n", "--workers", "1", "--uid", "nobody", "--cwd", "/"}, {"sleep", "600"})).code,
            0);
  ASSERT_TRUE(eventually([&] { return ready_count(h, "n", 1); }));
  const int pid = processes(h.ls(), "n").front().first;
  struct stat st {};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(pid)).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u) << "the user's own group";
  auto bad = h.cli(start_args({"--name", "m", "--uid", "no-such-user-here"}, {"sleep", "600"}));
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--uid"), std::string::npos) << bad.err;
}

}  // namespace
