// `bench/run spawn`: time per call of clutch's spawning functions, side by side in one run with Node 20's and with
// a plain posix_spawn + waitpid loop (the floor: what starting a program costs on this machine at all).
//
//   spawn_bench [--iterations N] [--rounds R]     the whole table (runs node itself)
//   spawn_bench --parent-mb MB                    internal: exec_file latency from a parent holding MB of touched memory
//
// Every figure is the median over R rounds of N sequential calls; ratios are what to read, since the machine is
// shared and absolute times drift.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <clutch/child_process.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

extern char** environ;
namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;

namespace {

int iterations = 200;
int rounds = 5;

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

// ms per call of `one`, which must complete one call synchronously (running an io_context if it needs one).
double per_call(const std::function<void()>& one) {
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = clock_type::now();
    for (int i = 0; i < iterations; ++i) one();
    times.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count() / iterations);
  }
  return median(times);
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "spawn_bench: %s failed\n", what);
    std::exit(1);
  }
}

void floor_once() {
  pid_t pid;
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  check(::posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) == 0, "posix_spawn");
  int status;
  check(::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "waitpid");
}

asio::io_context io;
const std::vector<std::string> no_args;
const std::vector<std::string> hello{"hello"};

void clutch_exec_once() {
  bool ok = false;
  clutch::exec(io, "true", [&](clutch::error_code ec, clutch::exec_result r) { ok = !ec && r.status.ok(); });
  io.run();
  io.restart();
  check(ok, "clutch exec");
}

void clutch_exec_file_once() {
  bool ok = false;
  clutch::exec_file(io, "/bin/true", no_args, [&](clutch::error_code ec, clutch::exec_result r) {
    ok = !ec && r.status.ok();
  });
  io.run();
  io.restart();
  check(ok, "clutch exec_file");
}

void clutch_spawn_echo_once() {
  std::string text;
  clutch::child c = clutch::spawn(io, "echo", hello);
  c.on_data(clutch::child::out, [&](std::string_view s) { text += s; });
  bool ok = false;
  c.async_wait([&](clutch::error_code ec, clutch::exit_status st) { ok = !ec && st.ok(); });
  io.run();
  io.restart();
  check(ok && text == "hello\n", "clutch spawn echo");
}

void clutch_spawn_sync_once() { check(clutch::spawn_sync("/bin/true", no_args).status.ok(), "clutch spawn_sync"); }

// Spawns per second with two exec_file calls outstanding at all times, from one thread and one io_context.
double clutch_throughput(int in_flight) {
  std::vector<double> rates;
  for (int r = 0; r < rounds; ++r) {
    int started = 0, done = 0;
    std::function<void()> next = [&] {
      if (started == iterations) return;
      ++started;
      clutch::exec_file(io, "/bin/true", no_args, [&](clutch::error_code ec, clutch::exec_result res) {
        check(!ec && res.status.ok(), "clutch throughput");
        ++done;
        next();
      });
    };
    auto t0 = clock_type::now();
    for (int i = 0; i < in_flight; ++i) next();
    io.run();
    io.restart();
    check(done == iterations, "clutch throughput count");
    rates.push_back(iterations / std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  return median(rates);
}

boost::json::object run_json(const std::string& file, const std::vector<std::string>& args) {
  auto r = clutch::exec_file_sync(file, args, {.max_buffer = 1 << 20});
  if (r.error || !r.status.ok()) {
    std::fprintf(stderr, "spawn_bench: %s failed: %s %s\n", file.c_str(), r.error.message().c_str(), r.err.c_str());
    std::exit(1);
  }
  return boost::json::parse(r.out).as_object();
}

double num(const boost::json::object& o, const char* key) { return o.at(key).to_number<double>(); }

std::string self_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

void row(const char* name, double ms, double node_ms, double floor_ms) {
  std::printf("%-44s %8.3f ms", name, ms);
  if (node_ms > 0) std::printf("   %5.2fx Node", ms / node_ms);
  if (floor_ms > 0) std::printf("   %5.2fx floor", ms / floor_ms);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int parent_mb = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--iterations")) iterations = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--parent-mb")) parent_mb = std::atoi(argv[i + 1]);
  }

  if (parent_mb > 0) {
    // Touch every page, so that the memory is really mapped, as a big server's heap would be.
    std::vector<char> ballast(static_cast<std::size_t>(parent_mb) << 20);
    for (std::size_t i = 0; i < ballast.size(); i += 4096) ballast[i] = 1;
    double ms = per_call(clutch_exec_file_once);
    std::printf("{\"execFile\": %.6f, \"ballast\": %d}\n", ms, ballast[ballast.size() - 1]);
    return 0;
  }

  const std::string it = std::to_string(iterations), ro = std::to_string(rounds);
  std::string node_version = clutch::exec_sync("node --version").out;
  if (!node_version.empty() && node_version.back() == '\n') node_version.pop_back();
  std::printf("spawn benchmark: %d calls x %d rounds, median round; node %s\n\n", iterations, rounds,
              node_version.c_str());

  auto node = run_json("node", {"bench/spawn.js", it, ro});
  // The variants take turns, one round each, so that a slow patch of the machine hits them all alike.
  const std::vector<void (*)()> variants = {floor_once, clutch_exec_once, clutch_exec_file_once,
                                            clutch_spawn_echo_once, clutch_spawn_sync_once};
  std::vector<std::vector<double>> times(variants.size());
  const int all_rounds = rounds;
  rounds = 1;
  for (int r = 0; r < all_rounds; ++r) {
    for (std::size_t v = 0; v < variants.size(); ++v) times[v].push_back(per_call(variants[v]));
  }
  rounds = all_rounds;
  double floor_ms = median(times[0]);
  double c_exec = median(times[1]);
  double c_exec_file = median(times[2]);
  double c_spawn = median(times[3]);
  double c_sync = median(times[4]);
  double c_tp = clutch_throughput(2);

  std::printf("%-44s %8s\n", "time per call (sequential)", "");
  row("floor: posix_spawn + waitpid /bin/true", floor_ms, 0, 0);
  row("clutch exec(\"true\")", c_exec, num(node, "exec"), floor_ms);
  row("Node   exec('true')", num(node, "exec"), 0, floor_ms);
  row("clutch exec_file(\"/bin/true\")", c_exec_file, num(node, "execFile"), floor_ms);
  row("Node   execFile('/bin/true')", num(node, "execFile"), 0, floor_ms);
  row("clutch spawn(\"echo\", {\"hello\"}) + capture", c_spawn, num(node, "spawnEcho"), floor_ms);
  row("Node   spawn('echo', ['hello']) + capture", num(node, "spawnEcho"), 0, floor_ms);
  row("clutch spawn_sync(\"/bin/true\")", c_sync, num(node, "spawnSync"), floor_ms);
  row("Node   spawnSync('/bin/true')", num(node, "spawnSync"), 0, floor_ms);

  double n_tp = num(node, "throughput2");
  std::printf("\n%-44s\n", "spawns per second, two exec_file calls in flight from one process");
  std::printf("%-44s %8.0f /s   %5.2fx Node\n", "clutch", c_tp, c_tp / n_tp);
  std::printf("%-44s %8.0f /s\n", "Node", n_tp);

  // Parent size: each figure from a fresh process holding that much touched memory.
  const std::string self = self_path();
  std::printf("\n%-44s\n", "exec_file('/bin/true') from a parent holding N MiB of touched memory");
  // Alternating fresh processes, three of each size; each reports its median round.
  std::vector<double> small_ms, big_ms;
  for (int r = 0; r < 3; ++r) {
    small_ms.push_back(num(run_json(self, {"--parent-mb", "16", "--iterations", it, "--rounds", ro}), "execFile"));
    big_ms.push_back(num(run_json(self, {"--parent-mb", "2048", "--iterations", it, "--rounds", ro}), "execFile"));
  }
  boost::json::object small, big;
  small["execFile"] = median(small_ms);
  big["execFile"] = median(big_ms);
  // Node forks: its cost grows with the parent, so fewer calls keep this part short.
  const std::string node_it = std::to_string(std::max(10, iterations / 4));
  auto node_small = run_json("node", {"bench/spawn.js", node_it, "3", "16"});
  auto node_big = run_json("node", {"bench/spawn.js", node_it, "3", "2048"});
  row("clutch, 16 MiB parent", num(small, "execFile"), 0, 0);
  std::printf("%-44s %8.3f ms   %5.2fx the 16 MiB parent\n", "clutch, 2 GiB parent", num(big, "execFile"),
              num(big, "execFile") / num(small, "execFile"));
  row("Node, 16 MiB parent", num(node_small, "execFile"), 0, 0);
  std::printf("%-44s %8.3f ms   %5.2fx the 16 MiB parent\n", "Node, 2 GiB parent", num(node_big, "execFile"),
              num(node_big, "execFile") / num(node_small, "execFile"));
  return 0;
}
