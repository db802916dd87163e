// The same fixtures under PM2 (installed by the test from tests/fixtures/npm_apps' lock file, as the bench's is)
// and under clutch, where the issue says a PM2 user changes nothing: what the app sees and does must be the same.
// The PM2 daemon runs in a home of its own (PM2_HOME) and is ended by `pm2 kill` (RAII), as clutch's is.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "clutch/child_process.hpp"
#include "clutch_run.hpp"
#include "helpers.hpp"
#include "node_server.hpp"
#include "npm_apps.hpp"

namespace {

using namespace std::chrono_literals;
using clutch_test::free_port;
using clutch_test::temp_dir;
using namespace clutch_test::node_server;

// What a PM2 user's app sees and does under a supervisor, from the outside.
struct behaviour {
  std::map<std::string, std::string> api;  // instance → "greeting worker" (cluster.isWorker)
  std::string worker_instance;             // the `worker` app's INSTANCE_ID (instance_var)
  std::string replaced_instance;           // api's instance 1 after a SIGKILL: its replacement's
  bool operator==(const behaviour&) const = default;
};
std::ostream& operator<<(std::ostream& o, const behaviour& b) {
  for (const auto& [i, what] : b.api) o << "api " << i << ": " << what << "; ";
  return o << "worker instance " << b.worker_instance << "; replaced instance " << b.replaced_instance;
}

// Asks the apps of tests/fixtures/ecosystem.config.js, started with --env production on these ports.
behaviour observe(unsigned short api, unsigned short worker) {
  behaviour b;
  int pid1 = 0;
  for (auto end = std::chrono::steady_clock::now() + 20s; b.api.size() < 2 && std::chrono::steady_clock::now() < end;)
    if (auto a = get(api); a.pid) {
      b.api[a.instance] = a.greeting + (a.worker ? " worker" : " not-a-worker");
      if (a.instance == "1") pid1 = a.pid;
    }
  for (auto end = std::chrono::steady_clock::now() + 20s; b.worker_instance.empty() && std::chrono::steady_clock::now() < end;)
    b.worker_instance = get(worker).instance;
  if (clutch_test::signal_ours(pid1, SIGKILL)) {  // a worker of the supervisor this test started
    for (auto end = std::chrono::steady_clock::now() + 20s;
         b.replaced_instance.empty() && std::chrono::steady_clock::now() < end;)
      if (auto a = get(api); a.pid && a.pid != pid1 && a.instance == "1") b.replaced_instance = a.instance;
  }
  return b;
}

struct pm2_home {
  temp_dir home;
  std::string bin;
  clutch::sync_result operator()(std::vector<std::string> args, clutch::environment::map env = {}) const {
    clutch::options o;
    env["PM2_HOME"] = home.path;
    o.env = clutch::environment::add(std::move(env));
    o.cwd = CLUTCH_FIXTURES;
    o.timeout = 60s;
    args.insert(args.begin(), bin);
    return clutch::spawn_sync("node", args, o);
  }
  ~pm2_home() {
    if (!bin.empty()) (*this)({"kill"});
  }
};

}  // namespace

TEST(Pm2Side, TheEcosystemFileBehavesUnderClutchAsUnderPm2) {
  std::string why;
  const auto dir = clutch_test::npm_apps(why);
  ASSERT_FALSE(dir.empty()) << why;
  auto env_for = [](unsigned short api, unsigned short worker) {
    return clutch::environment::map{{"API_PORT", std::to_string(api)}, {"WORKER_PORT", std::to_string(worker)}};
  };
  behaviour under_pm2, under_clutch;
  {
    pm2_home pm2;
    pm2.bin = dir + "/node_modules/pm2/bin/pm2";
    const auto api = free_port(), worker = free_port();
    auto r = pm2({"start", "ecosystem.config.js", "--env", "production"}, env_for(api, worker));
    ASSERT_EQ(r.status.code, 0) << r.out << r.err;
    under_pm2 = observe(api, worker);
  }
  {
    clutch_test::clutch_home clutch;
    const auto api = free_port(), worker = free_port();
    auto r = clutch({"start", CLUTCH_FIXTURES "/ecosystem.config.js", "--env", "production"}, env_for(api, worker));
    ASSERT_EQ(r.status.code, 0) << r.err;
    under_clutch = observe(api, worker);
    EXPECT_EQ(clutch({"kill"}).status.code, 0);
  }
  // What PM2 gives, checked, so that two empty observations are not "the same".
  const behaviour expected{{{"0", "production worker"}, {"1", "production worker"}}, "0", "1"};
  EXPECT_EQ(under_pm2, expected);
  EXPECT_EQ(under_clutch, under_pm2);
}
