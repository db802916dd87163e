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

// systemd's LISTEN_PID: the child names itself, whatever the parent's environment says.
TEST(Sync, PidVariableIsTheChildsOwnPid) {
  ::setenv("LISTEN_PID", "1", 1);
  auto r = clutch::spawn_sync("/bin/sh", {"-c", "echo $LISTEN_PID $$"}, {.pid_variable = "LISTEN_PID"});
  ::unsetenv("LISTEN_PID");
  ASSERT_GT(r.pid, 0);
  EXPECT_EQ(r.out, std::to_string(r.pid) + " " + std::to_string(r.pid) + "\n");
  // Also over a variable given in env: the child's pid wins.
  auto added = clutch::spawn_sync("/bin/sh", {"-c", "echo $LISTEN_PID"},
                                  {.env = clutch::environment::add({{"LISTEN_PID", "7"}}), .pid_variable = "LISTEN_PID"});
  EXPECT_EQ(added.out, std::to_string(added.pid) + "\n");
}

TEST(Sync, APidVariableWithEqualsIsRefused) {
  auto r = clutch::spawn_sync("/bin/true", {}, {.pid_variable = "A=B"});
  EXPECT_EQ(r.error, std::errc::invalid_argument);
}
