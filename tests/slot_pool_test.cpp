// The slot pool alone, driven by a fake driver that only writes down what it was asked: crash loops, reloads
// that fail, scale and stop during a reload. No process is started; the cluster, the supervisor and the app
// tests drive the same pool with real ones.
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <algorithm>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cluster/slot_pool.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
using clutch::exit_status;
using clutch::cluster::restart_policy;
using namespace clutch::cluster::detail;

namespace {

// Writes down each call as a line: "start 0 3", "stop 1", "kill 1", "retired 0", "reload_done <message>",
// "stopped".
struct fake_driver : slot_driver {
  std::vector<std::string> calls;
  void start(std::size_t slot, int id) override { calls.push_back(fmt("start", slot, id)); }
  bool stop(int id) override {
    calls.push_back("stop " + std::to_string(id));
    return !later.contains(id);
  }
  std::set<int> later;  // stop() returns false for these: the driver asks later (kill_at_deadline())
  void kill(int id) override { calls.push_back("kill " + std::to_string(id)); }
  void retired(std::size_t slot) override { calls.push_back("retired " + std::to_string(slot)); }
  void reload_done(clutch::error_code ec) override {
    calls.push_back("reload_done " + (ec ? ec.message() : std::string("ok")));
  }
  void stopped() override { calls.push_back("stopped"); }

  static std::string fmt(const char* what, std::size_t slot, int id) {
    return std::string(what) + " " + std::to_string(slot) + " " + std::to_string(id);
  }
  // The calls since the last look.
  std::vector<std::string> take() { return std::exchange(calls, {}); }
};

using lines = std::vector<std::string>;

const exit_status crashed{.code = 1};
const exit_status clean{.code = 0};

// Runs the io_context until pred() holds (bounded: a test that waits longer fails instead of hanging).
bool run_until(asio::io_context& io, const std::function<bool()>& pred, std::chrono::seconds bound = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(10ms);
  }
  return pred();
}


pool_settings quick() {
  pool_settings s;
  s.backoff = {.first = 1ms, .factor = 1.0, .max = 1ms, .stable_uptime = 1h, .limit = 3};
  s.ready_timeout = 0ms;
  s.kill_timeout = 1h;
  return s;
}

struct SlotPool : ::testing::Test {
  asio::io_context io;
  fake_driver d;
};

TEST_F(SlotPool, StartsAWorkerPerSlotAndRestartsACrashedOneInItsOwnSlot) {
  slot_pool pool(io, d, quick());
  EXPECT_EQ(pool.add_slot(), 0u);
  EXPECT_EQ(pool.add_slot(), 1u);
  EXPECT_EQ(d.take(), (lines{"start 0 1", "start 1 2"}));
  EXPECT_EQ(pool.state(0), slot_state::starting);
  pool.ready(1);
  EXPECT_EQ(pool.state(0), slot_state::ready);
  EXPECT_FALSE(pool.all_ready());
  pool.ready(2);
  EXPECT_TRUE(pool.all_ready());

  // The first crash after a start is restarted at once, in the same slot, as a new id.
  EXPECT_EQ(pool.exited(2, crashed), exit_outcome::restarting);
  EXPECT_EQ(d.take(), (lines{"start 1 3"}));
  EXPECT_EQ(pool.current(1), 3);
  EXPECT_EQ(pool.restarts(1), 1u);
  EXPECT_EQ(pool.restarts(0), 0u);
  EXPECT_EQ(pool.state(1), slot_state::starting);
  // An id the pool no longer knows changes nothing.
  EXPECT_EQ(pool.exited(2, crashed), exit_outcome::none);
  EXPECT_TRUE(d.take().empty());
}

TEST_F(SlotPool, ACrashLoopIsGivenUpAfterTheLimitAndTheOtherSlotsGoOn) {
  slot_pool pool(io, d, quick());  // limit: 3 exits in a row
  pool.add_slot();
  pool.add_slot();
  d.take();
  int id = 1;
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(pool.exited(id, crashed), exit_outcome::restarting) << "round " << round;
    // After the first, each restart waits for its back-off.
    ASSERT_TRUE(run_until(io, [&] { return pool.current(0) != 0; }));
    id = pool.current(0);
  }
  EXPECT_EQ(d.take(), (lines{"start 0 3", "start 0 4", "start 0 5"}));
  EXPECT_EQ(pool.exited(id, crashed), exit_outcome::given_up);
  EXPECT_EQ(d.take(), (lines{"retired 0"}));
  EXPECT_EQ(pool.state(0), slot_state::errored);
  EXPECT_EQ(pool.current(0), 0);
  io.restart();
  io.poll();
  EXPECT_TRUE(d.take().empty()) << "nothing more starts in a slot given up";
  // The other slot is not touched, and counts as done for all_ready.
  EXPECT_EQ(pool.current(1), 2);
  pool.ready(2);
  EXPECT_TRUE(pool.all_ready());
}

TEST_F(SlotPool, TheRestartPolicyAndAWorkerLetGoRetireTheSlot) {
  auto s = quick();
  s.restart = restart_policy::on_failure;
  slot_pool pool(io, d, s);
  pool.add_slot();
  pool.add_slot();
  pool.add_slot();
  d.take();
  EXPECT_EQ(pool.exited(1, clean), exit_outcome::retired);
  EXPECT_EQ(pool.state(0), slot_state::exited);
  EXPECT_EQ(pool.exited(2, crashed), exit_outcome::restarting);
  pool.let_go(3);  // it leaves by itself (disconnect_self), or the user killed it
  EXPECT_EQ(pool.state(2), slot_state::stopping);
  EXPECT_EQ(pool.exited(3, crashed), exit_outcome::retired);
  EXPECT_EQ(d.take(), (lines{"retired 0", "start 1 4", "retired 2"}));
}

TEST_F(SlotPool, AReloadReplacesOneSlotAtATimeAndTouchesAnOldWorkerOnlyOnceItsReplacementIsReady) {
  slot_pool pool(io, d, quick());
  pool.add_slot();
  pool.add_slot();
  pool.ready(1);
  pool.ready(2);
  d.take();
  ASSERT_TRUE(pool.reload());
  EXPECT_FALSE(pool.reload()) << "one reload at a time";
  EXPECT_EQ(d.take(), (lines{"start 0 3"}));
  EXPECT_EQ(pool.incoming(0), 3);
  EXPECT_EQ(pool.current(0), 1);
  pool.ready(3);
  EXPECT_EQ(d.take(), (lines{"stop 1"}));
  EXPECT_EQ(pool.current(0), 3);
  EXPECT_EQ(pool.exited(1, clean), exit_outcome::none) << "a replaced worker's exit is not its slot's";
  EXPECT_EQ(d.take(), (lines{"start 1 4"}));
  pool.ready(4);
  EXPECT_EQ(d.take(), (lines{"stop 2"}));
  pool.exited(2, clean);
  EXPECT_EQ(d.take(), (lines{"reload_done ok"}));
  EXPECT_FALSE(pool.reloading());
  EXPECT_EQ(pool.current(1), 4);
  EXPECT_EQ(pool.restarts(0), 0u) << "a reload is not a restart";
}

TEST_F(SlotPool, AReplacementThatExitsBeforeItIsReadyFailsTheReloadAndTheOldWorkersStay) {
  slot_pool pool(io, d, quick());
  pool.add_slot();
  pool.add_slot();
  pool.ready(1);
  pool.ready(2);
  ASSERT_TRUE(pool.reload());
  d.take();
  EXPECT_EQ(pool.exited(3, crashed), exit_outcome::none) << "it is not restarted";
  EXPECT_EQ(d.take(), (lines{"reload_done " + make_error_code(clutch::errc::worker_failed).message()}));
  EXPECT_EQ(pool.current(0), 1);
  EXPECT_EQ(pool.current(1), 2);
  EXPECT_EQ(pool.incoming(0), 0);
  EXPECT_EQ(pool.state(0), slot_state::ready);
  io.restart();
  io.poll();
  EXPECT_TRUE(d.take().empty());
  EXPECT_TRUE(pool.reload()) << "the next reload may begin";
}

TEST_F(SlotPool, AReplacementNotReadyInTimeIsKilledAndTheReloadFails) {
  auto s = quick();
  s.ready_timeout = 20ms;
  slot_pool pool(io, d, s);
  pool.add_slot();
  pool.ready(1);
  d.take();
  ASSERT_TRUE(pool.reload());
  EXPECT_EQ(d.take(), (lines{"start 0 2"}));
  ASSERT_TRUE(run_until(io, [&] { return !pool.reloading(); }));
  EXPECT_EQ(d.take(), (lines{"kill 2", "reload_done " + make_error_code(clutch::errc::timed_out).message()}));
  EXPECT_EQ(pool.exited(2, exit_status{.signal = 9}), exit_outcome::none);
  EXPECT_EQ(pool.current(0), 1);
  EXPECT_TRUE(d.take().empty()) << "the killed replacement is not restarted, the old worker not touched";
}

TEST_F(SlotPool, ScaleDuringAReloadStopsTheRemovedSlotsAndTheReloadGoesOnWithTheRest) {
  slot_pool pool(io, d, quick());
  for (int i = 0; i < 3; ++i) pool.add_slot();
  for (int id = 1; id <= 3; ++id) pool.ready(id);
  d.take();
  ASSERT_TRUE(pool.reload());
  EXPECT_EQ(d.take(), (lines{"start 0 4"}));
  pool.ready(4);
  pool.exited(1, clean);
  EXPECT_EQ(d.take(), (lines{"stop 1", "start 1 5"}));
  // Down to one while slot 1's replacement loads: it and slot 1's and 2's workers are asked to stop.
  pool.scale(1);
  EXPECT_EQ(d.take(), (lines{"stop 5", "stop 2", "stop 3"}));
  EXPECT_EQ(pool.wanted(), 1u);
  EXPECT_EQ(pool.state(1), slot_state::stopping);
  // A removed slot's replacement ending does not fail the reload: the one slot left is replaced, so it is done.
  pool.exited(5, exit_status{.signal = 15});
  EXPECT_EQ(d.take(), (lines{"reload_done ok"}));
  pool.exited(2, clean);
  pool.exited(3, clean);
  EXPECT_EQ(d.take(), (lines{"retired 1", "retired 2"}));
  EXPECT_EQ(pool.state(1), slot_state::exited);

  // Up again during the next reload: the removed slots come back with new workers at once.
  ASSERT_TRUE(pool.reload());
  EXPECT_EQ(d.take(), (lines{"start 0 6"}));
  pool.scale(3);
  EXPECT_EQ(d.take(), (lines{"start 1 7", "start 2 8"}));
  EXPECT_EQ(pool.wanted(), 3u);
  EXPECT_EQ(pool.restarts(1), 0u);
  pool.ready(6);
  pool.exited(4, clean);
  EXPECT_EQ(d.take(), (lines{"stop 4", "reload_done ok"}));
  EXPECT_EQ(pool.current(0), 6);
}

TEST_F(SlotPool, AStopDuringAReloadEndsItStopsEveryWorkerAndRestartsNone) {
  slot_pool pool(io, d, quick());
  pool.add_slot();
  pool.add_slot();
  pool.ready(1);
  pool.ready(2);
  ASSERT_TRUE(pool.reload());
  d.take();
  pool.stop();
  EXPECT_EQ(d.take(), (lines{"reload_done " + make_error_code(boost::asio::error::operation_aborted).message(),
                             "stop 1", "stop 2", "stop 3"}));
  EXPECT_FALSE(pool.reload()) << "no reload while stopping";
  EXPECT_EQ(pool.exited(2, crashed), exit_outcome::retired);
  EXPECT_EQ(pool.exited(3, crashed), exit_outcome::none);
  EXPECT_EQ(d.take(), (lines{"retired 1"}));
  EXPECT_EQ(pool.exited(1, clean), exit_outcome::retired);
  EXPECT_EQ(d.take(), (lines{"retired 0", "stopped"}));
  io.restart();
  io.poll();
  EXPECT_TRUE(d.take().empty());
  // Afterwards it is usable again, as Node's cluster forks after disconnect().
  EXPECT_EQ(pool.add_slot(), 2u);
  EXPECT_EQ(d.take(), (lines{"start 2 4"}));
}

TEST_F(SlotPool, AStopEndsAPendingRestartAndIsDoneAtOnceWithoutWorkers) {
  slot_pool pool(io, d, quick());
  pool.add_slot();
  pool.exited(1, crashed);  // restarted at once
  pool.exited(2, crashed);  // now waits for its back-off
  d.take();
  EXPECT_EQ(pool.current(0), 0);
  EXPECT_EQ(pool.state(0), slot_state::starting);
  pool.stop();
  EXPECT_EQ(d.take(), (lines{"stopped"}));
  io.restart();
  io.run_for(20ms);
  EXPECT_TRUE(d.take().empty()) << "the restart that waited does not come";
}

TEST_F(SlotPool, AWorkerAskedToStopIsKilledAtTheDeadlineAndOnlyIfStillThere) {
  auto s = quick();
  s.kill_timeout = 20ms;
  slot_pool pool(io, d, s);
  pool.add_slot();
  pool.add_slot();
  d.take();
  pool.stop_worker(1);
  pool.stop_worker(1);
  pool.stop_worker(2);
  EXPECT_EQ(d.take(), (lines{"stop 1", "stop 2"})) << "asked once";
  pool.exited(2, clean);
  EXPECT_EQ(d.take(), (lines{"retired 1"}));
  ASSERT_TRUE(run_until(io, [&] { return !d.calls.empty(); }));
  EXPECT_EQ(d.take(), (lines{"kill 1"}));
  io.restart();
  io.run_for(50ms);
  EXPECT_TRUE(d.take().empty()) << "the worker that exited in time is not killed";
  pool.stop_worker(99);
  EXPECT_TRUE(d.take().empty()) << "an unknown id is never a target";
}

}  // namespace

namespace {

// A driver that times readiness itself (ready_timeout 0, as the supervisor's engine) reports a replacement that is
// late; the pool also tells it which slot a reload replaces next, for steering.
TEST_F(SlotPool, ADriverThatTimesReadinessFailsAReloadThroughNotReady) {
  slot_pool pool(io, d, quick());
  for (int i = 0; i < 3; ++i) pool.add_slot();
  for (int id = 1; id <= 3; ++id) pool.ready(id);
  d.take();
  EXPECT_EQ(pool.next_in_reload(), std::nullopt);
  ASSERT_TRUE(pool.reload());
  EXPECT_EQ(d.take(), (lines{"start 0 4"}));
  EXPECT_EQ(pool.next_in_reload(), 1u);
  pool.not_ready(1);  // not a replacement: nothing
  EXPECT_TRUE(d.take().empty());
  io.restart();
  io.run_for(20ms);
  EXPECT_TRUE(pool.reloading()) << "ready_timeout 0: the pool itself never times a replacement out";
  pool.not_ready(4);
  EXPECT_EQ(d.take(), (lines{"kill 4", "reload_done " + make_error_code(clutch::errc::timed_out).message()}));
  EXPECT_EQ(pool.next_in_reload(), std::nullopt);
  EXPECT_EQ(pool.current(0), 1);
  EXPECT_FALSE(pool.retired(0));
}

}  // namespace

namespace {

// A driver that asks later (a drain first, an agent after the workers) starts the deadline itself; a watchdog's
// kill_at_deadline kills without making the exit an asked-for one.
TEST_F(SlotPool, TheKillDeadlineCountsFromWhenTheDriverAsksAndAWatchdogKillStillRestarts) {
  auto s = quick();
  s.kill_timeout = 20ms;
  slot_pool pool(io, d, s);
  pool.add_slot();
  pool.add_slot();
  d.take();
  d.later.insert(1);
  pool.stop_worker(1);
  EXPECT_EQ(d.take(), (lines{"stop 1"}));
  io.restart();
  io.run_for(60ms);
  EXPECT_TRUE(d.take().empty()) << "no deadline before the driver has asked";
  pool.kill_at_deadline(1);
  ASSERT_TRUE(run_until(io, [&] { return !d.calls.empty(); }));
  EXPECT_EQ(d.take(), (lines{"kill 1"}));
  EXPECT_EQ(pool.exited(1, exit_status{.signal = 9}), exit_outcome::retired);
  EXPECT_EQ(d.take(), (lines{"retired 0"}));

  pool.kill_at_deadline(2);  // the watchdog's: SIGABRT sent, SIGKILL at the deadline
  ASSERT_TRUE(run_until(io, [&] { return !d.calls.empty(); }));
  EXPECT_EQ(d.take(), (lines{"kill 2"}));
  EXPECT_EQ(pool.exited(2, exit_status{.signal = 9}), exit_outcome::restarting) << "a crash, not a stop";
  EXPECT_EQ(d.take(), (lines{"start 1 3"}));
}

}  // namespace
