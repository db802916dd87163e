// One operation, every completion token: callbacks, use_awaitable, deferred, use_future.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <thread>

namespace asio = boost::asio;

TEST(Tokens, CallbackGetsTheChildBack) {
  asio::io_context io;
  std::string out;
  clutch::child c = clutch::exec(io, "echo cb", {}, [&](clutch::error_code ec, clutch::exec_result r) {
    EXPECT_FALSE(ec);
    out = r.out;
  });
  EXPECT_GT(c.pid(), 0);
  io.run();
  EXPECT_EQ(out, "cb\n");
}

TEST(Tokens, UseAwaitableReturnsTheResultAndThrowsOnFailure) {
  asio::io_context io;
  std::string out;
  bool threw = false;
  std::optional<int> code;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    clutch::exec_result r = co_await clutch::exec(io, "echo aw", asio::use_awaitable);
    out = r.out;
    const std::vector<std::string> no_args;
    try {
      co_await clutch::exec_file(io, "clutch-no-such-program-anywhere", no_args, asio::use_awaitable);
    } catch (const clutch::system_error& e) {
      threw = e.code() == std::errc::no_such_file_or_directory;
    }
    std::vector<std::string> args;
    args.push_back("-c");
    args.push_back("exit 5");
    clutch::child c = clutch::spawn(io, "sh", args);
    auto st = co_await c.async_wait(asio::use_awaitable);
    code = st.code;
  }, asio::detached);
  io.run();
  EXPECT_EQ(out, "aw\n");
  EXPECT_TRUE(threw);
  EXPECT_EQ(code, 5);
}

TEST(Tokens, DeferredStartsNothingUntilAwaitedButTheCommandRunsAlready) {
  asio::io_context io;
  std::string out;
  auto op = clutch::exec(io, "echo deferred", {}, asio::deferred);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto [ec, r] = co_await std::move(op)(asio::as_tuple(asio::use_awaitable));
    out = ec ? ec.message() : r.out;
  }, asio::detached);
  io.run();
  EXPECT_EQ(out, "deferred\n");
}

TEST(Tokens, UseFutureFromAnotherThread) {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread runner([&] { io.run(); });
  std::future<clutch::exec_result> f =
      asio::post(io, asio::use_future([&] { return clutch::exec(io, "echo fut", {}, asio::use_future); })).get();
  EXPECT_EQ(f.get().out, "fut\n");
  std::future<clutch::exec_result> bad = asio::post(io, asio::use_future([&] {
    return clutch::exec(io, "true", {.cwd = "/clutch/none"}, asio::use_future);
  })).get();
  EXPECT_THROW(bad.get(), clutch::system_error);
  work.reset();
  runner.join();
}
