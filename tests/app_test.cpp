// Master / agent / app workers: the master runs in this test process (or as a helper process where its exit code
// or its death is what is tested); the agent and app workers are this binary re-run as app-role (app_helpers.cpp).
#include <signal.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstring>
#include <boost/json/serialize.hpp>
#include <clutch/app.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "helpers.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::num;
using clutch_test::str;
using clutch_test::run_until;
using clutch_test::process_alive;
using clutch_test::self;
namespace asio = boost::asio;
namespace json = boost::json;
namespace app = clutch::app;

namespace {


// Waits up to 10 s for every pid to be gone.
bool all_gone(const std::vector<int>& pids) {
  for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end;) {
    if (std::none_of(pids.begin(), pids.end(), [](int p) { return process_alive(p); })) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

class AppFixture : public testing::Test {
 protected:
  asio::io_context io;
  std::unique_ptr<app::master> master;
  std::vector<json::object> reports;  // what the roles reported, in arrival order
  std::vector<std::string> events;    // "start agent", "agent ready", "start app", "exit app", …
  std::optional<clutch::error_code> started;
  app::ready_info info;

  app::settings settings(const std::string& agent_mode = "ok", const std::string& app_mode = "ok",
                         unsigned workers = 2) {
    return {.agent_program = self(),
            .agent_args = helper_args("app-role", {agent_mode}),
            .app_program = self(),
            .app_args = helper_args("app-role", {app_mode}),
            .workers = workers,
            .agent_start_timeout = 20s,
            .app_start_timeout = 20s,
            .agent_restart_delay = 200ms,
            .kill_timeout = 3s};
  }

  void make(app::settings s) {
    master = std::make_unique<app::master>(io, std::move(s));
    master->on_start([this](app::role r, int) { events.push_back("start " + std::string(app::to_string(r))); });
    master->on_exit([this](app::role r, int, const clutch::exit_status&) {
      events.push_back("exit " + std::string(app::to_string(r)));
    });
    master->messenger().on_agent([this](int) { events.push_back("agent ready"); });
    master->messenger().on("report", [this](const json::value& d, const app::sender&) {
      if (d.is_object()) reports.push_back(d.get_object());
    });
  }

  void start() {
    master->start([this](clutch::error_code ec, app::ready_info i) {
      started = ec;
      info = std::move(i);
    });
    ASSERT_TRUE(run_until(io, [&] { return started.has_value(); })) << "start-up did not complete";
    ASSERT_FALSE(*started) << started->message() << ": " << master->failure();
  }

  void stop() {
    if (!master) return;
    bool stopped = false;
    master->stop([&](clutch::error_code) { stopped = true; });
    EXPECT_TRUE(run_until(io, [&] { return stopped; }));
  }
  void TearDown() override { stop(); }

  std::vector<json::object> of_kind(const std::string& kind) const {
    std::vector<json::object> out;
    for (auto& r : reports)
      if (str(r, "kind") == kind) out.push_back(r);
    return out;
  }
  bool wait_reports(const std::string& kind, std::size_t n) {
    return run_until(io, [&] { return of_kind(kind).size() >= n; });
  }

  // Every role answers a request after everything it sent before: once each has answered, all its earlier
  // reports are here (one channel, in order), and a duplicate would have shown up.
  void barrier() {
    int answered = 0;
    master->messenger().request(app::destination::all(), "echo", 1, 10s,
                                [&](clutch::error_code, json::value) { ++answered; });
    ASSERT_TRUE(run_until(io, [&] { return answered == 1; }));
  }

  // Pids that got {kind: seen, data: tag}, sorted.
  std::vector<int> seen_by(const std::string& tag) const {
    std::vector<int> out;
    for (auto& r : of_kind("seen"))
      if (r.at("data") == json::value(tag)) out.push_back(num(r, "pid"));
    std::sort(out.begin(), out.end());
    return out;
  }

  const std::vector<int>& apps() const { return info.app_pids; }
  std::vector<int> everyone() const {
    auto all = info.app_pids;
    all.push_back(info.agent_pid);
    std::sort(all.begin(), all.end());
    return all;
  }
  void tell(int pid, json::object what) { master->messenger().send_to(pid, "do", std::move(what)); }
};

TEST_F(AppFixture, StartsAgentFirstAndReportsReady) {
  make(settings());
  start();
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[0], "start agent");
  EXPECT_EQ(events[1], "agent ready");  // the app workers are forked only now
  EXPECT_EQ(events[2], "start app");
  EXPECT_EQ(events[3], "start app");
  EXPECT_GT(info.agent_pid, 0);
  EXPECT_EQ(info.agent_pid, master->agent_pid());
  ASSERT_EQ(info.app_pids.size(), 2u);
  for (int pid : everyone()) EXPECT_TRUE(process_alive(pid));
  ASSERT_FALSE(info.listening.empty());
  EXPECT_NE(info.listening.front().port(), 0);
  EXPECT_EQ(info.url(), "http://127.0.0.1:" + std::to_string(info.listening.front().port()) + "/");
}

TEST_F(AppFixture, DefaultWorkerCountLeavesACpuForTheAgent) {
  auto s = settings();
  s.workers = 0;
  make(s);
  start();
  const unsigned cpus = std::thread::hardware_concurrency();
  EXPECT_EQ(info.app_pids.size(), cpus > 1 ? cpus - 1 : 1u);
}

// A failing start-up: exit code 1, a message naming who failed, nothing left running.
struct startup_failure {
  int code = -1;
  std::string err;
  std::vector<int> pids;
};
startup_failure run_failing_master(const std::string& agent_mode, const std::string& app_mode) {
  asio::io_context io;
  std::optional<startup_failure> out;
  clutch::options o;
  o.timeout = 60s;
  clutch::exec_file(io, self(), helper_args("app-master", {agent_mode, app_mode}), o,
                    [&](clutch::error_code, clutch::exec_result r) {
                      startup_failure f;
                      f.code = r.status.code.value_or(-1);
                      f.err = r.err;
                      std::istringstream lines(r.out);
                      for (std::string word, role; lines >> word >> role;) {
                        int pid = 0;
                        lines >> pid;
                        f.pids.push_back(pid);
                      }
                      out = f;
                    });
  io.run();
  return out.value_or(startup_failure{});
}

// The failure is reported once, with the last ten lines the role wrote to stderr; all of them also came through.
void expect_reported_with_last_lines(const std::string& err, const std::string& who) {
  const auto at = err.find("start-up failed: ");
  ASSERT_NE(at, std::string::npos) << err;
  EXPECT_EQ(err.find("start-up failed: ", at + 1), std::string::npos) << "reported once: " << err;
  const std::string report = err.substr(at);
  EXPECT_NE(report.find("; the last lines of its stderr:\n  | " + who + " start-up line 4\n"), std::string::npos)
      << report;
  EXPECT_NE(report.find("  | " + who + " start-up line 12\n  | fatal: cannot read config.json\n"), std::string::npos)
      << report;
  EXPECT_EQ(report.find(who + " start-up line 3\n"), std::string::npos) << "ten lines, not more: " << report;
  for (int k = 1; k <= 12; ++k)  // passed on as written, before the report
    EXPECT_NE(err.substr(0, at).find(who + " start-up line " + std::to_string(k) + "\n"), std::string::npos) << err;
}

TEST(AppStartup, FailingAgentStopsTheMasterWithCodeOne) {
  auto f = run_failing_master("exit-at-start", "ok");
  EXPECT_EQ(f.code, 1);
  EXPECT_NE(f.err.find("start-up failed: agent (pid "), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("exited with code 3 during start-up"), std::string::npos) << f.err;
  expect_reported_with_last_lines(f.err, "agent");
  ASSERT_EQ(f.pids.size(), 1u);  // no app worker was started
  EXPECT_TRUE(all_gone(f.pids));
}

TEST(AppStartup, FailingWorkerStopsTheMasterAndTheAgent) {
  auto f = run_failing_master("ok", "exit-at-start");
  EXPECT_EQ(f.code, 1);
  EXPECT_NE(f.err.find("start-up failed: app worker "), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("exited with code 4 during start-up"), std::string::npos) << f.err;
  expect_reported_with_last_lines(f.err, "app");
  EXPECT_GE(f.pids.size(), 2u);  // the agent and at least one worker
  EXPECT_TRUE(all_gone(f.pids));
}

TEST_F(AppFixture, AnAppWorkerThatCannotStartFailsTheStartAndSignalsNobody) {
  // A process of the test's own group: a sweep of "group 0" after the failed spawn would reach it, and the test.
  clutch::child sibling = clutch::spawn(io, "sleep", {"600"});
  auto s = settings();
  s.app_program = "/nonexistent/prog";
  make(s);
  master->start([this](clutch::error_code ec, app::ready_info) { started = ec; });
  ASSERT_TRUE(run_until(io, [&] { return started.has_value(); }));
  EXPECT_TRUE(*started);
  EXPECT_NE(master->failure().find("spawn failed at exec: No such file or directory"), std::string::npos)
      << master->failure();
  EXPECT_TRUE(clutch_test::process_alive(sibling.pid()));
  sibling.kill(SIGKILL);
  run_until(io, [&] { return sibling.exit().has_value(); });
}

TEST_F(AppFixture, AnAppWorkerThatDiesDuringStartFailsItAndIsNotForkedAgain) {
  auto s = settings("ok", "exit-at-start", 2);
  s.cluster.restart = clutch::cluster::restart_policy::always;
  make(s);
  master->start([this](clutch::error_code ec, app::ready_info) { started = ec; });
  ASSERT_TRUE(run_until(io, [&] { return started.has_value(); }));
  EXPECT_TRUE(*started);
  EXPECT_NE(master->failure().find("during start-up; the last lines of its stderr:"), std::string::npos)
      << master->failure();
  EXPECT_NE(master->failure().find("  | fatal: cannot read config.json"), std::string::npos) << master->failure();
  io.run_for(500ms);  // a re-fork would come at once
  EXPECT_EQ(std::count(events.begin(), events.end(), "start app"), 2) << "the two of the start, no replacement";
}

TEST_F(AppFixture, AgentNotReadyInTimeFailsStartUp) {
  auto s = settings("never-ready");
  s.agent_start_timeout = 300ms;
  make(s);
  master->start([this](clutch::error_code ec, app::ready_info) { started = ec; });
  ASSERT_TRUE(run_until(io, [&] { return started.has_value(); }));
  EXPECT_EQ(*started, clutch::errc::worker_failed);
  EXPECT_NE(master->failure().find("not ready within 300 ms"), std::string::npos) << master->failure();
  EXPECT_EQ(events.back(), "exit agent");
}

TEST_F(AppFixture, EachCallFromTheMasterReachesExactlyTheRightProcesses) {
  make(settings());
  start();
  auto& m = master->messenger();
  int done = 0;
  auto count = [&](clutch::error_code ec) { done += ec ? 100 : 1; };
  m.send_to_app("probe", "app", count);
  m.send_to_agent("probe", "agent", count);
  m.broadcast("probe", "all", count);
  m.send_random("probe", "random", count);
  m.send_to(apps()[1], "probe", "pid", count);
  ASSERT_TRUE(run_until(io, [&] { return done >= 5; }));
  EXPECT_EQ(done, 5);  // every token completed, none with an error
  barrier();
  auto sorted = apps();
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(seen_by("app"), sorted);
  EXPECT_EQ(seen_by("agent"), std::vector<int>{info.agent_pid});
  EXPECT_EQ(seen_by("all"), everyone());
  ASSERT_EQ(seen_by("random").size(), 1u);
  EXPECT_EQ(std::count(sorted.begin(), sorted.end(), seen_by("random")[0]), 1);
  EXPECT_EQ(seen_by("pid"), std::vector<int>{apps()[1]});
  // No parent forked this master: that one fails, and is counted.
  clutch::error_code parent_ec;
  m.send_to_parent("probe", "parent", [&](clutch::error_code ec) { parent_ec = ec; });
  ASSERT_TRUE(run_until(io, [&] { return !!parent_ec; }));
  EXPECT_EQ(parent_ec, clutch::errc::undeliverable);
  EXPECT_EQ(master->stats().undelivered, 1u);
}

TEST_F(AppFixture, EachCallFromAWorkerReachesExactlyTheRightProcesses) {
  make(settings());
  start();
  const int me = apps()[0], other = apps()[1];
  for (auto op : {"send_to_app", "send_to_agent", "broadcast", "send_random"})
    tell(me, {{"op", op}, {"action", "probe"}, {"data", op}});
  tell(me, {{"op", "send_to"}, {"pid", other}, {"action", "probe"}, {"data", "send_to"}});
  tell(me, {{"op", "send_to"}, {"pid", info.agent_pid}, {"action", "probe"}, {"data", "send_to agent"}});
  ASSERT_TRUE(wait_reports("done", 6));
  for (auto& d : of_kind("done")) EXPECT_EQ(str(d, "error"), "") << str(d, "op");
  barrier();
  auto sorted = apps();
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(seen_by("send_to_app"), sorted);
  EXPECT_EQ(seen_by("send_to_agent"), std::vector<int>{info.agent_pid});
  EXPECT_EQ(seen_by("broadcast"), everyone());
  EXPECT_EQ(seen_by("send_random").size(), 1u);
  EXPECT_EQ(seen_by("send_to"), std::vector<int>{other});
  EXPECT_EQ(seen_by("send_to agent"), std::vector<int>{info.agent_pid});
  for (auto& s : of_kind("seen")) EXPECT_EQ(num(s, "from"), me);
}

TEST_F(AppFixture, AMessageForAnUnknownPidFailsAndIsCounted) {
  make(settings());
  start();
  clutch::error_code ec;
  master->messenger().send_to(999999, "probe", "x", [&](clutch::error_code e) { ec = e; });
  ASSERT_TRUE(run_until(io, [&] { return !!ec; }));
  EXPECT_EQ(ec, clutch::errc::no_such_process);
  EXPECT_EQ(master->stats().undelivered, 1u);
}

TEST_F(AppFixture, MessagesSentBeforeTheRolesAreReadyAreDelivered) {
  make(settings());
  // Nothing is running yet: they wait at the master.
  master->messenger().send_to_app("probe", "early app");
  master->messenger().send_to_agent("probe", "early agent");
  master->messenger().send_random("probe", "early random");
  EXPECT_EQ(master->stats().queued, 4u);  // two app slots, the agent, one random
  start();
  barrier();
  auto sorted = apps();
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(seen_by("early app"), sorted);
  EXPECT_EQ(seen_by("early agent"), std::vector<int>{info.agent_pid});
  EXPECT_EQ(seen_by("early random").size(), 1u);
  EXPECT_EQ(master->stats().queued, 0u);
}

TEST_F(AppFixture, TheQueueForARoleIsBoundedAndOverflowIsCounted) {
  auto s = settings();
  s.queue_limit = 3;
  make(s);
  std::vector<clutch::error_code> results(5);
  int done = 0;
  for (int i = 0; i < 5; ++i)
    master->messenger().send_to_agent("probe", i, [&, i](clutch::error_code ec) {
      results[i] = ec;
      ++done;
    });
  ASSERT_TRUE(run_until(io, [&] { return done >= 2; }));
  EXPECT_EQ(results[3], clutch::errc::queue_full);
  EXPECT_EQ(results[4], clutch::errc::queue_full);
  start();
  ASSERT_TRUE(run_until(io, [&] { return done == 5; }));
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(results[i]) << i;
  EXPECT_EQ(master->stats().undelivered, 2u);
}

// The agent is a pool of one slot: restarts back off from agent_restart_delay, and a crash loop is given up, after
// which a message for the agent fails at once instead of waiting for an agent that will not come.
TEST_F(AppFixture, AnAgentThatKeepsDyingIsGivenUpAndMessagesForItFail) {
  auto s = settings();
  s.cluster.max_restarts = 2;
  s.cluster.stable_uptime = std::chrono::hours(1);
  make(std::move(s));
  start();
  int agent = info.agent_pid;
  for (int round = 1; round <= 2; ++round) {
    ::kill(agent, SIGKILL);
    ASSERT_TRUE(run_until(io, [&] { return master->agent_pid() != 0 && master->agent_pid() != agent; }))
        << "restart " << round;
    agent = master->agent_pid();
  }
  EXPECT_EQ(master->stats().agent_restarts, 2u);
  ::kill(agent, SIGKILL);  // the third exit in a row: given up
  std::optional<clutch::error_code> answer;
  ASSERT_TRUE(run_until(io, [&] { return master->agent_pid() == 0; }));
  master->messenger().request(app::destination::agent(), "echo", 1, 10s,
                              [&](clutch::error_code ec, json::value) { answer = ec; });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  EXPECT_EQ(*answer, clutch::make_error_code(clutch::errc::undeliverable)) << answer->message();
  // No fourth agent comes, after longer than its back-off would wait (300 ms).
  run_until(io, [] { return false; }, 2s);
  EXPECT_EQ(master->agent_pid(), 0);
  EXPECT_EQ(master->stats().agent_restarts, 2u);
  // The app workers still answer.
  bool echoed = false;
  master->messenger().request(app::destination::app(), "echo", 1, 10s,
                              [&](clutch::error_code ec, json::value) { echoed = !ec; });
  EXPECT_TRUE(run_until(io, [&] { return echoed; }));
}

TEST_F(AppFixture, AgentRestartLosesNoMessageInFlight) {
  const auto marker = std::filesystem::temp_directory_path() / ("clutch-app-" + std::to_string(::getpid()));
  std::filesystem::remove(marker);
  make(settings("die-after:300:" + marker.string()));
  start();
  const int first_agent = info.agent_pid;
  constexpr int n = 2000;
  tell(apps()[0], {{"op", "stream"}, {"count", n}});
  ASSERT_TRUE(wait_reports("streamed", 1)) << "queued " << master->stats().queued << " undelivered "
                                           << master->stats().undelivered << " forwarded "
                                           << master->stats().forwarded << " items " << of_kind("item").size()
                                           << " restarts " << master->stats().agent_restarts << " agent "
                                           << master->agent_pid();
  EXPECT_EQ(num(of_kind("streamed")[0], "errors"), 0);
  barrier();  // the new agent answers too: everything it reported is here
  std::filesystem::remove(marker);
  std::set<int> items, agents;
  for (auto& r : of_kind("item")) {
    items.insert(num(r, "i"));
    agents.insert(num(r, "pid"));
  }
  const int second_agent = master->agent_pid();
  EXPECT_NE(second_agent, first_agent);
  EXPECT_EQ(items.size(), static_cast<std::size_t>(n));  // each one reached an agent, the first or the new one
  // The new agent was handed what the first left unacknowledged. The first agent's own reports may be missing: they
  // were still in its write queue when it died (its 300 items can arrive in one read, reported and acknowledged
  // only after they are all handled), and then the new agent reports every item again.
  EXPECT_TRUE(agents.contains(second_agent));
  for (int pid : agents) EXPECT_TRUE(pid == first_agent || pid == second_agent) << pid;
  EXPECT_EQ(master->stats().agent_restarts, 1u);
  // The workers learned the new agent's pid.
  std::set<int> told;
  for (auto& r : of_kind("agent"))
    if (num(r, "agent") == second_agent) told.insert(num(r, "pid"));
  EXPECT_EQ(told.size(), 2u);
}

TEST_F(AppFixture, RequestsGetTheirRepliesOrTimeOut) {
  make(settings());
  start();
  auto& m = master->messenger();
  std::map<std::string, std::pair<clutch::error_code, json::value>> got;
  auto keep = [&](std::string name) {
    return [&got, name](clutch::error_code ec, json::value v) { got[name] = {ec, std::move(v)}; };
  };
  m.request(app::destination::agent(), "echo", json::object{{"x", 1}}, 10s, keep("agent"));
  m.request(app::destination::app(), "echo", "hi", 10s, keep("app"));
  m.request(app::destination::process(apps()[0]), "echo", 7, 10s, keep("pid"));
  m.request(app::destination::random(), "echo", 8, 10s, keep("random"));
  m.request(app::destination::agent(), "never", nullptr, 300ms, keep("never"));
  m.request(app::destination::agent(), "no-such-action", nullptr, 10s, keep("unknown"));
  ASSERT_TRUE(run_until(io, [&] { return got.size() == 6; }));
  EXPECT_FALSE(got["agent"].first);
  EXPECT_EQ(got["agent"].second, (json::object{{"x", 1}}));
  ASSERT_FALSE(got["app"].first);
  ASSERT_TRUE(got["app"].second.is_array());
  std::set<int> from;
  for (auto& r : got["app"].second.as_array()) {
    EXPECT_EQ(r.as_object().at("data"), "hi");
    from.insert(static_cast<int>(r.as_object().at("pid").as_int64()));
  }
  EXPECT_EQ(from, std::set<int>(apps().begin(), apps().end()));
  EXPECT_EQ(got["pid"].second, 7);
  EXPECT_EQ(got["random"].second, 8);
  EXPECT_EQ(got["never"].first, clutch::errc::timed_out);
  EXPECT_EQ(got["unknown"].first, clutch::errc::no_handler);

  // From a worker to the agent: over the direct channel.
  tell(apps()[0], {{"op", "request"}, {"to", "agent"}, {"action", "echo"}, {"data", "direct"}, {"ms", 10000}});
  ASSERT_TRUE(wait_reports("answer", 1));
  EXPECT_EQ(str(of_kind("answer")[0], "error"), "");
  EXPECT_EQ(of_kind("answer")[0].at("data"), "direct");
}

// Counts what the master forwards while one worker sends n messages to the agent.
class DirectChannel : public AppFixture {
 public:
  std::uint64_t forwarded_while_streaming(bool direct, int n) {
    auto s = settings("quiet");
    s.direct = direct;
    make(s);
    start();
    // Each app worker tells the master of the agent once it knows it; under a sanitizer those reports can still be
    // on their way here. They are start-up's traffic, not the stream's.
    EXPECT_TRUE(wait_reports("agent", 2));
    barrier();
    const auto before = master->stats().forwarded;
    tell(apps()[0], {{"op", "stream"}, {"count", n}});
    EXPECT_TRUE(wait_reports("streamed", 1));
    EXPECT_EQ(num(of_kind("streamed")[0], "errors"), 0);
    const auto after = master->stats().forwarded;
    std::optional<json::value> count;
    master->messenger().request(app::destination::agent(), "count", nullptr, 10s,
                                [&](clutch::error_code, json::value v) { count = v; });
    EXPECT_TRUE(run_until(io, [&] { return count.has_value(); }));
    EXPECT_EQ(*count, n);  // the agent got every one
    return after - before;
  }
};

TEST_F(DirectChannel, AgentWorkerTrafficDoesNotPassTheMaster) {
  // Only the "streamed" report passes the master.
  EXPECT_LE(forwarded_while_streaming(true, 1000), 2u);
}

TEST_F(DirectChannel, WithoutDirectChannelsTheMasterForwardsEach) {
  EXPECT_GE(forwarded_while_streaming(false, 1000), 1000u);
}

TEST_F(AppFixture, LeaderPublishesToFollowersAcrossAnAgentRestart) {
  make(settings());
  start();
  for (int pid : apps()) tell(pid, {{"op", "subscribe"}, {"topic", "config"}});
  tell(info.agent_pid, {{"op", "publish"}, {"topic", "config"}, {"value", 1}});
  ASSERT_TRUE(wait_reports("value", 2));
  for (auto& v : of_kind("value")) EXPECT_EQ(v.at("value"), 1);
  tell(apps()[0], {{"op", "call"}, {"name", "pid"}});
  ASSERT_TRUE(wait_reports("called", 1));
  EXPECT_EQ(of_kind("called")[0].at("data"), info.agent_pid);

  // A new agent: the followers subscribe again, and its first publish reaches both.
  ::kill(info.agent_pid, SIGKILL);
  ASSERT_TRUE(run_until(io, [&] { return master->agent_pid() != 0 && master->agent_pid() != info.agent_pid; }));
  ASSERT_TRUE(wait_reports("agent", 4));  // each worker heard of both agents
  barrier();
  reports.clear();
  tell(master->agent_pid(), {{"op", "publish"}, {"topic", "config"}, {"value", 2}});
  ASSERT_TRUE(wait_reports("value", 2));
  std::set<int> got;
  for (auto& v : of_kind("value")) {
    EXPECT_EQ(v.at("value"), 2);
    got.insert(num(v, "pid"));
  }
  EXPECT_EQ(got, std::set<int>(apps().begin(), apps().end()));
}

TEST_F(AppFixture, StopsAppWorkersFirstThenTheAgentAndTheirChildren) {
  make(settings());
  start();
  tell(apps()[0], {{"op", "spawn-child"}});
  ASSERT_TRUE(wait_reports("child", 1));
  const int grandchild = num(of_kind("child")[0], "child");
  ASSERT_TRUE(process_alive(grandchild));
  events.clear();
  bool stopped = false;
  master->stop([&](clutch::error_code ec) {
    EXPECT_FALSE(ec);
    stopped = true;
  });
  ASSERT_TRUE(run_until(io, [&] { return stopped; }));
  EXPECT_EQ(events, (std::vector<std::string>{"exit app", "exit app", "exit agent"}));
  auto all = everyone();
  all.push_back(grandchild);  // it ignores SIGTERM: only the escalation ends it
  for (int pid : all) EXPECT_FALSE(process_alive(pid)) << pid;
  master.reset();
}

// A master in a helper process, forked by this test with a channel: its send_to_parent comes here, and what this
// test sends it with "to" is routed on to the roles.
struct forked_master {
  asio::io_context io;
  clutch::forked_child m;
  std::vector<int> roles;                  // agent, then the app workers
  std::vector<json::object> from_master;   // every message, in order
  std::optional<clutch::exit_status> exit;

  forked_master() {
    m = clutch::fork(io, self(), helper_args("app-master", {"ok", "ok"}), clutch::options{});
    m.on_message([this](const json::value& msg, clutch::handle) {
      const auto& o = msg.as_object();
      from_master.push_back(o);
      if (str(o, "action") != "ready") return;
      const auto& d = o.at("data").as_object();
      roles.push_back(num(d, "agent"));
      for (auto& p : d.at("apps").as_array()) roles.push_back(static_cast<int>(p.as_int64()));
    });
    m.on_exit([this](const clutch::exit_status& st) { exit = st; });
  }
  bool ready() { return run_until(io, [&] { return !roles.empty(); }); }
  std::vector<json::object> with_action(const std::string& a) const {
    std::vector<json::object> out;
    for (auto& o : from_master)
      if (str(o, "action") == a) out.push_back(o);
    return out;
  }
};

TEST(AppMaster, SendToParentReachesTheMastersParentOnce) {
  forked_master f;
  ASSERT_TRUE(f.ready());
  const int worker = f.roles[1];
  f.m.send(json::object{{"to", worker}, {"action", "do"},
                        {"data", {{"op", "send_to_parent"}, {"action", "probe"}, {"data", "up"}}}});
  f.m.send(json::object{{"to", "agent"}, {"action", "do"},
                        {"data", {{"op", "send_to_parent"}, {"action", "probe"}, {"data", "from the agent"}}}});
  ASSERT_TRUE(run_until(f.io, [&] { return f.with_action("probe").size() >= 2; }));
  // Then a round trip behind them: a duplicate would have come by now.
  f.m.send(json::object{{"to", worker}, {"action", "do"},
                        {"data", {{"op", "send_to_parent"}, {"action", "last"}, {"data", nullptr}}}});
  ASSERT_TRUE(run_until(f.io, [&] { return !f.with_action("last").empty(); }));
  auto probes = f.with_action("probe");
  ASSERT_EQ(probes.size(), 2u);
  std::sort(probes.begin(), probes.end(), [](auto& a, auto& b) { return str(a, "role") < str(b, "role"); });
  EXPECT_EQ(str(probes[0], "role"), "agent");
  EXPECT_EQ(num(probes[0], "from"), f.roles[0]);
  EXPECT_EQ(probes[0].at("data"), "from the agent");
  EXPECT_EQ(str(probes[1], "role"), "app");
  EXPECT_EQ(num(probes[1], "from"), worker);
  EXPECT_EQ(probes[1].at("data"), "up");
  f.m.kill(SIGKILL);
}

TEST(AppMaster, SigkillOfTheMasterLeavesNothingBehind) {
  forked_master f;
  ASSERT_TRUE(f.ready());
  // The agent and each worker start a child that ignores SIGTERM.
  f.m.send(json::object{{"to", "all"}, {"action", "do"}, {"data", {{"op", "spawn-child"}}}});
  ASSERT_TRUE(run_until(f.io, [&] { return f.with_action("child").size() == 3; }));
  auto pids = f.roles;
  for (auto& c : f.with_action("child")) pids.push_back(static_cast<int>(c.at("data").as_int64()));
  ASSERT_EQ(pids.size(), 6u);
  for (int pid : pids) ASSERT_TRUE(process_alive(pid));
  f.m.kill(SIGKILL);
  EXPECT_TRUE(all_gone(pids));
}

class AppMasterSignal : public testing::TestWithParam<int> {};

TEST_P(AppMasterSignal, StopsInOrderAndExitsZero) {
  forked_master f;
  ASSERT_TRUE(f.ready());
  const auto pids = f.roles;
  f.m.kill(GetParam());
  ASSERT_TRUE(run_until(f.io, [&] { return f.exit.has_value(); }));
  EXPECT_EQ(f.exit->code, 0);
  EXPECT_TRUE(all_gone(pids));
}

INSTANTIATE_TEST_SUITE_P(App, AppMasterSignal, testing::Values(SIGTERM, SIGINT, SIGQUIT),
                         [](const testing::TestParamInfo<int>& i) { return std::string(sigabbrev_np(i.param)); });

TEST_F(AppFixture, ADeadWorkersMessagesGoToItsReplacement) {
  make(settings());
  start();
  const int dead = apps()[0];
  // The handler outlives this test body (the stop in TearDown reports exits too): it owns what it uses.
  auto delivered = std::make_shared<bool>(false);
  master->on_exit([this, dead, delivered](app::role, int pid, const clutch::exit_status&) {
    if (pid != dead) return;
    // Sent as the worker's exit is reported: its replacement cannot be ready yet, so this waits for it.
    master->messenger().send_to_app("probe", "while restarting", [delivered](clutch::error_code ec) {
      EXPECT_FALSE(ec);
      *delivered = true;
    });
    EXPECT_GE(master->stats().queued, 1u);
  });
  ::kill(dead, SIGKILL);
  ASSERT_TRUE(run_until(io, [&] { return *delivered; }));
  barrier();
  const auto got = seen_by("while restarting");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(std::count(got.begin(), got.end(), dead), 0);
  EXPECT_EQ(std::count(got.begin(), got.end(), apps()[1]), 1);
}

}  // namespace
