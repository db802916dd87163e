// What the daemon lets one observe of its apps, end to end against a real daemon in a CLUTCH_HOME of the test's
// own: `clutch logs` of every app (prefixes, stderr, -f, --timestamps), the usage of a worker's whole process
// tree, and the numbers of /api/status, /metrics and --json (integers as integers, never an exponent).
#include <signal.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/json.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "helpers.hpp"
#include "os/proc_stat.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

using clutch_test::temp_dir;
using clutch_test::eventually;
using clutch_test::free_port;


struct result {
  int code = -1;
  std::string out, err;
};

// A daemon home of the test's own, as in daemon_test.cpp. Whatever the test leaves running goes with it: the
// daemon, and the process groups of the workers it was told about (their children are not the daemon's).
struct daemon_home {
  temp_dir dir;
  std::vector<pid_t> groups;

  clutch::options env() const {
    clutch::options o;
    o.env = clutch::environment::add({{"CLUTCH_HOME", dir.path}});
    return o;
  }
  result cli(std::vector<std::string> args) {
    auto o = env();
    o.timeout = 60s;
    auto r = clutch::spawn_sync(clutch_test::clutch_binary(), args, o);
    return {r.status.code.value_or(-1), r.out, r.err};
  }
  result start(const std::string& name, const std::string& shell, std::vector<std::string> opts = {}) {
    std::vector<std::string> a{"start", "--name", name};
    if (std::find(opts.begin(), opts.end(), "--workers") == opts.end()) a.insert(a.end(), {"--workers", "1"});
    a.insert(a.end(), opts.begin(), opts.end());
    a.insert(a.end(), {"--", "sh", "-c", shell});
    return cli(a);
  }
  json::value parsed(const std::string& text) {
    json::error_code ec;
    auto v = json::parse(text, ec);
    return ec ? json::value() : v;
  }
  // The first process of app in `clutch ls --json`, or an empty object.
  json::object process(const std::string& app) {
    const auto ls = parsed(cli({"ls", "--json"}).out);
    if (ls.is_array())
      for (const auto& a : ls.as_array())
        if (a.at("name").as_string() == app && !a.at("processes").as_array().empty())
          return a.at("processes").as_array()[0].as_object();
    return {};
  }
  // The worker's pid once it runs, remembered for the clean-up; 0 if it never did.
  pid_t worker(const std::string& app) {
    pid_t pid = 0;
    for (auto end = std::chrono::steady_clock::now() + 30s; pid == 0 && std::chrono::steady_clock::now() < end;) {
      pid = static_cast<pid_t>(clutch_test::num(process(app), "pid"));
      if (pid == 0) std::this_thread::sleep_for(20ms);
    }
    if (pid) groups.push_back(pid);  // every worker leads its own process group
    return pid;
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
      if (clutch_test::process_alive(pid)) ::kill(pid, SIGKILL);
    }
    for (pid_t g : groups)
      for (pid_t p : clutch_test::processes_in_group(g)) ::kill(p, SIGKILL);
  }
};


bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}


// JSON text with its strings taken out, so that only numbers (and punctuation, true, false, null) are left.
std::string without_strings(const std::string& json_text) {
  static const std::regex string_re(R"("(?:[^"\\]|\\.)*")");
  return std::regex_replace(json_text, string_re, "\"\"");
}

// Where a number in the text has an exponent ("" if none does).
std::string exponent_in(const std::string& json_text) {
  static const std::regex exp_re(R"([0-9.][eE][+-]?[0-9])");
  const auto bare = without_strings(json_text);
  std::smatch m;
  if (!std::regex_search(bare, m, exp_re)) return "";
  return bare.substr(static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, m.position(0) - 40)), 80);
}

bool is_integer(const json::value& v) { return v.is_int64() || v.is_uint64(); }

// ---- clutch logs ------------------------------------------------------------------------------------------------

TEST(Observe, LogsWithoutANameShowEveryAppsLinesWithTheirPrefixesStderrToo) {
  daemon_home h;
  ASSERT_EQ(h.start("alpha", "echo alpha says hi; echo alpha complains >&2; exec sleep 600").code, 0);
  ASSERT_EQ(h.start("beta", "echo beta says hi; exec sleep 600", {"--workers", "2"}).code, 0);
  h.worker("alpha");
  h.worker("beta");
  result r;
  ASSERT_TRUE(eventually([&] {
    r = h.cli({"logs", "-n", "10"});
    return has(r.out, "alpha[1] | alpha says hi") && has(r.out, "alpha[1] err | alpha complains") &&
           has(r.out, "beta[1] | beta says hi") && has(r.out, "beta[2] | beta says hi");
  })) << r.out << r.err;
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.err, "") << "every line on stdout, for a pipe to grep";
  for (const auto& line : lines_of(r.out))
    EXPECT_TRUE(std::regex_match(line, std::regex(R"((alpha|beta)\[[12]\]( err)? \| .*)"))) << line;

  // With --timestamps, the files' lines carry the time this daemon read them.
  r = h.cli({"logs", "-n", "10", "--timestamps"});
  EXPECT_EQ(r.code, 0);
  for (const auto& line : lines_of(r.out))
    EXPECT_TRUE(std::regex_match(line, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (alpha|beta)\[[12]\]( err)? \| .*)")))
        << line;

  // One app: as before, the file's lines, stderr's on stderr.
  r = h.cli({"logs", "alpha"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(has(r.out, "[1] alpha says hi")) << r.out;
  EXPECT_TRUE(has(r.err, "[1] alpha complains")) << r.err;
  EXPECT_FALSE(has(r.out + r.err, "alpha[1]")) << r.out << r.err;
  EXPECT_FALSE(has(r.out + r.err, "beta")) << r.out << r.err;
}

TEST(Observe, FollowingEveryAppSeesTheNewLinesOfEachWithTheTimeTheyWereRead) {
  daemon_home h;
  const std::string ticker = "i=0; while :; do i=$((i+1)); echo $0 tick $i; echo $0 oops $i >&2; sleep 0.2; done";
  ASSERT_EQ(h.cli({"start", "--name", "alpha", "--workers", "1", "--", "sh", "-c", ticker, "alpha"}).code, 0);
  h.worker("alpha");

  asio::io_context io;
  auto o = h.env();
  o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::pipe};
  std::string followed, followed_err;
  auto follower = clutch::spawn(io, clutch_test::clutch_binary(), {"logs", "-f", "-n", "0", "--timestamps"}, o);
  follower.on_data(clutch::child::out, [&](std::string_view d) { followed += d; });
  follower.on_data(clutch::child::err, [&](std::string_view d) { followed_err += d; });
  ASSERT_TRUE(clutch_test::run_until(io, [&] { return has(followed, "alpha[1] | alpha tick"); }))
      << followed << followed_err;
  // An app started after the follower began is followed too.
  ASSERT_EQ(h.cli({"start", "--name", "beta", "--workers", "1", "--", "sh", "-c", ticker, "beta"}).code, 0);
  h.worker("beta");
  EXPECT_TRUE(clutch_test::run_until(io, [&] {
    return has(followed, "beta[1] | beta tick") && has(followed, "beta[1] err | beta oops") &&
           has(followed, "alpha[1] err | alpha oops");
  })) << followed << followed_err;
  follower.kill(SIGTERM);
  bool ended = false;
  follower.async_wait([&](clutch::error_code, clutch::exit_status) { ended = true; });
  EXPECT_TRUE(clutch_test::run_until(io, [&] { return ended; }));

  const std::regex stamped(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (alpha|beta)\[1\]( err)? \| \1 (tick|oops) \d+)");
  const auto lines = lines_of(followed);
  ASSERT_GE(lines.size(), 4u);
  for (std::size_t i = 0; i + 1 < lines.size(); ++i)  // the last may have been cut by the kill
    EXPECT_TRUE(std::regex_match(lines[i], stamped)) << lines[i];
  EXPECT_EQ(followed_err, "");
}

// ---- usage of a process tree, and numbers -------------------------------------------------------------------

// A worker that is only a shell; the memory is its child's.
std::string shell_with_hog(int megabytes) {
  return "'" + clutch_test::self() + "' --helper hog " + std::to_string(megabytes) + " & wait";
}

TEST(Observe, AWorkersMemoryIsItsWholeTreesAndNumbersHaveNoExponent) {
  daemon_home h;
  const auto port = free_port();
  ASSERT_EQ(h.start("tree", shell_with_hog(64), {"--metrics-port", std::to_string(port)}).code, 0);
  const pid_t shell = h.worker("tree");
  ASSERT_GT(shell, 0);
  constexpr std::uint64_t held = 64u << 20;
  json::object p;
  ASSERT_TRUE(eventually([&] {
    p = h.process("tree");
    return clutch_test::num(p, "memory") > static_cast<std::int64_t>(held);
  })) << json::serialize(p);
  const auto own = clutch::os::read_proc_stat(shell);
  ASSERT_TRUE(own);
  EXPECT_LT(own->rss_pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)), held / 4)
      << "the shell itself is small: the memory shown is its child's";

  // /api/status: integers as integers, and no number with an exponent, cpu_seconds (a double) included.
  const auto [code, status] = clutch_test::http_request(port, "/api/status");
  ASSERT_EQ(code, 200);
  EXPECT_EQ(exponent_in(status), "") << status;
  const auto v = json::parse(status);
  const auto& app = v.at("apps").as_array()[0].as_object();
  EXPECT_TRUE(is_integer(app.at("workers")));
  EXPECT_TRUE(is_integer(app.at("restarts")));
  EXPECT_TRUE(is_integer(v.at("supervisor").at("memory")));
  for (const auto& pv : app.at("processes").as_array()) {
    const auto& proc = pv.as_object();
    for (const char* k : {"id", "pid", "slot", "cpu", "memory", "restarts", "uptime"})
      EXPECT_TRUE(is_integer(proc.at(k))) << k << ": " << json::serialize(proc.at(k));
    EXPECT_GT(proc.at("memory").to_number<double>(), static_cast<double>(held));
  }
  EXPECT_TRUE(std::regex_search(status, std::regex(R"("cpu_seconds":[0-9]+(\.[0-9]+)?[,}])"))) << status;

  // /metrics: every sample a plain decimal, the memory in whole bytes.
  const auto [mcode, metrics] = clutch_test::http_request(port, "/metrics");
  ASSERT_EQ(mcode, 200);
  const std::regex sample(R"([a-z_]+(\{[^}]*\})? -?[0-9]+(\.[0-9]+)?)");
  for (const auto& line : lines_of(metrics))
    if (!line.empty() && line[0] != '#') {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
    }
  std::smatch m;
  const std::regex memory(R"(clutch_process_resident_memory_bytes\{app="tree",[^}]*\} ([0-9]+)\n)");
  const bool found = std::regex_search(metrics, m, memory);
  EXPECT_TRUE(found) << metrics;
  if (found) {
    EXPECT_GT(std::stoull(m[1].str()), held);
  }

  // The CLI's JSON and its table.
  for (const auto& args : {std::vector<std::string>{"ls", "--json"}, {"status", "tree", "--json"}}) {
    const auto r = h.cli(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(exponent_in(r.out), "") << r.out;
    EXPECT_TRUE(has(r.out, "\"cpu_seconds\":")) << r.out;
  }
  const auto table = h.cli({"ls"});
  EXPECT_FALSE(std::regex_search(table.out, std::regex(R"([0-9][eE][+-]?[0-9])"))) << table.out;
  EXPECT_TRUE(has(table.out, "tree")) << table.out;
}

TEST(Observe, AWorkersCpuCountsItsChildrenAndNeverDropsWhenOneExits) {
  daemon_home h;
  const std::string stop = h.dir.path + "/stop", done = h.dir.path + "/done";
  // The shell only waits; its child burns a CPU until told to stop.
  ASSERT_EQ(h.start("burn", "(while [ ! -e " + stop + " ]; do :; done); touch " + done + "; exec sleep 600").code, 0);
  ASSERT_GT(h.worker("burn"), 0);
  double before = 0;
  json::object p;
  ASSERT_TRUE(eventually([&] {
    p = h.process("burn");
    before = p.contains("cpu_seconds") ? p.at("cpu_seconds").to_number<double>() : 0;
    return before >= 0.3;
  })) << json::serialize(p);
  std::ofstream(stop).put('\n');
  ASSERT_TRUE(eventually([&] { return fs::exists(done); }));
  // Looks after the child is gone (each more than the meter's table life apart): its time stays in the worker's,
  // and the CPU % between a look before and one after is never negative.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(150ms);
    p = h.process("burn");
    ASSERT_FALSE(p.empty());
    EXPECT_GE(p.at("cpu_seconds").to_number<double>(), before) << json::serialize(p);
    EXPECT_GE(p.at("cpu").to_number<double>(), 0) << json::serialize(p);
  }
}

}  // namespace
