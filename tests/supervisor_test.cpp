// The supervisor's pieces, each with real processes: the NOTIFY_SOCKET server, and the systemd socket-passing
// variables a worker gets.
#include <boost/asio/io_context.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "helpers.hpp"
#include "supervisor/notify.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::run_until;
using clutch_test::self;
namespace asio = boost::asio;
namespace sv = clutch::supervisor;

namespace {

TEST(NotifyParse, ReadsTheKnownKeysAndKeepsEveryField) {
  auto m = sv::parse_notify("READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\nnot a field\n=x\nX_CUSTOM=y");
  EXPECT_TRUE(m.ready);
  EXPECT_TRUE(m.watchdog);
  EXPECT_FALSE(m.stopping);
  EXPECT_EQ(m.status, "serving 3 clients");
  EXPECT_EQ(m.fields.at("X_CUSTOM"), "y");
  EXPECT_EQ(m.fields.size(), 4u);
  EXPECT_FALSE(sv::parse_notify("READY=0").ready);
  EXPECT_TRUE(sv::parse_notify("").fields.empty());
}

struct received {
  pid_t from;
  sv::notify_message m;
};

// Each child's datagram comes with its own pid, from the kernel.
TEST(NotifySocket, TellsWhichChildSentWhat) {
  asio::io_context io;
  sv::notify_socket n(io);
  ASSERT_EQ(n.address().front(), '@');
  std::vector<received> got;
  n.on_message([&](pid_t from, const sv::notify_message& m) { got.push_back({from, m}); });
  clutch::options o{.env = clutch::environment::add({{"NOTIFY_SOCKET", n.address()}})};
  std::vector<clutch::child> children;
  std::vector<pid_t> pids;
  for (auto text : {"READY=1\nSTATUS=first", "WATCHDOG=1"}) {
    children.push_back(clutch::spawn(io, self(), helper_args("notify-send", {text}), o));
    pids.push_back(children.back().pid());
  }
  ASSERT_TRUE(run_until(io, [&] { return got.size() == 2; }));
  for (auto& r : got) {
    if (r.from == pids[0]) {
      EXPECT_TRUE(r.m.ready);
      EXPECT_EQ(r.m.status, "first");
    } else {
      EXPECT_EQ(r.from, pids[1]);
      EXPECT_TRUE(r.m.watchdog);
      EXPECT_FALSE(r.m.ready);
    }
  }
}

TEST(NotifySocket, APathAddressIsRemovedWithTheSocket) {
  asio::io_context io;
  const auto path = std::filesystem::temp_directory_path() / ("clutch-notify-test-" + std::to_string(::getpid()));
  {
    sv::notify_socket n(io, path.string());
    EXPECT_EQ(n.address(), path.string());
    EXPECT_TRUE(std::filesystem::exists(path));
    bool ready = false;
    n.on_message([&](pid_t, const sv::notify_message& m) { ready = m.ready; });
    auto c = clutch::spawn(io, self(), helper_args("notify-send", {"READY=1"}),
                           {.env = clutch::environment::add({{"NOTIFY_SOCKET", n.address()}})});
    ASSERT_TRUE(run_until(io, [&] { return ready; }));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

// systemd's own client, where the machine has it: it waits on a barrier descriptor that we must close.
TEST(NotifySocket, SystemdNotifyIsUnderstood) {
  if (!std::filesystem::exists("/usr/bin/systemd-notify")) GTEST_SKIP() << "no systemd-notify here";
  asio::io_context io;
  sv::notify_socket n(io);
  std::optional<sv::notify_message> got;
  n.on_message([&](pid_t, const sv::notify_message& m) {
    if (m.ready) got = m;
  });
  std::optional<clutch::exit_status> done;
  auto c = clutch::spawn(io, "/usr/bin/systemd-notify", {"--ready", "--status=up and running"},
                         {.env = clutch::environment::add({{"NOTIFY_SOCKET", n.address()}}), .timeout = 20s});
  c.async_wait([&](clutch::error_code, clutch::exit_status st) { done = st; });
  ASSERT_TRUE(run_until(io, [&] { return got.has_value() && done.has_value(); }));
  EXPECT_EQ(got->status, "up and running");
  EXPECT_EQ(done->code, 0);
}

}  // namespace
