// spawn_sync, exec_sync, exec_file_sync: no io_context, same limits.
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdlib>

#include "helpers.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::self;

TEST(Sync, CapturesOutputAndStatus) {
  auto r = clutch::exec_sync("echo hi; echo there >&2; exit 7");
  EXPECT_FALSE(r.error);
  EXPECT_GT(r.pid, 0);
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.err, "there\n");
  EXPECT_EQ(r.status.code, 7);
}

TEST(Sync, InputIsFedToStdin) {
  auto r = clutch::spawn_sync(self(), helper_args("count-stdin"), {.input = std::string(300000, 'z')});
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.out, "300000\n");
  auto cat = clutch::exec_file_sync("cat", {}, {.input = "hello"});
  EXPECT_EQ(cat.out, "hello");
}

TEST(Sync, TimeoutReturnsEarlyWithATimedOutError) {
  auto start = std::chrono::steady_clock::now();
  auto r = clutch::spawn_sync("sleep", {"30"}, {.timeout = 200ms});
  EXPECT_EQ(r.error, std::errc::timed_out);
  EXPECT_EQ(r.status.signal, SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST(Sync, OutputOverMaxBufferGivesEnobufsAndWhatWasRead) {
  auto r = clutch::spawn_sync(self(), helper_args("write", {"5000"}), {.max_buffer = 4096});
  EXPECT_EQ(r.error, std::errc::no_buffer_space);
  EXPECT_EQ(r.out, std::string(4096, 'x'));
}

TEST(Sync, MissingProgramIsAnErrorNotAThrow) {
  clutch::sync_result r;
  EXPECT_NO_THROW(r = clutch::exec_file_sync("clutch-no-such-program-anywhere", {}));
  EXPECT_EQ(r.error, std::errc::no_such_file_or_directory);
  EXPECT_EQ(r.pid, 0);
}

TEST(Sync, AStdioListShorterThanThreeGetsPipesForTheRest) {
  auto r = clutch::exec_file_sync("cat", {}, {.stdio = {}, .input = "padded"});
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.out, "padded");
}

TEST(Sync, ReturnsWhenTheChildIsDoneEvenIfAGrandchildHoldsStdinUnread) {
  // The shell exits without reading; the background sleep inherited stdin and never reads it either. The write
  // of the input is abandoned once the result is in, instead of keeping the call alive until the sleep ends: so
  // the sleep is still there when the call returns.
  auto r = clutch::exec_sync("sleep 30 >/dev/null 2>&1 & echo $!", {.input = std::string(1 << 20, 'i')});
  EXPECT_FALSE(r.error);
  EXPECT_EQ(r.status.code, 0);
  pid_t sleeper = std::atoi(r.out.c_str());
  ASSERT_GT(sleeper, 0);
  EXPECT_TRUE(clutch_test::process_alive(sleeper));
  ::kill(sleeper, SIGKILL);
}
