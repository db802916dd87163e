// Cluster: a primary (this test process) and real worker processes (this binary re-run as cluster-worker, see
// cluster_helpers.cpp) sharing real listening sockets on 127.0.0.1.
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <clutch/cluster.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "helpers.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::run_until;
namespace asio = boost::asio;
namespace json = boost::json;
namespace cl = clutch::cluster;
using tcp = asio::ip::tcp;

namespace {

cl::settings worker_settings(const std::string& mode, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{mode, "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return {.args = helper_args("cluster-worker", args), .restart = cl::restart_policy::never};
}

// Sends one line on s and returns the answer without its newline, or "" on any failure.
std::string ask(tcp::socket& s, asio::streambuf& in) {
  clutch::error_code ec;
  asio::write(s, asio::buffer("hi\n", 3), ec);
  std::size_t n = ec ? 0 : asio::read_until(s, in, '\n', ec);
  if (ec) return {};
  std::string line(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + static_cast<long>(n) - 1);
  in.consume(n);
  return line;
}

// A connection to the server on 127.0.0.1; closed if the connect failed.
tcp::socket connect_to(asio::io_context& io, unsigned short port) {
  tcp::socket s(io);
  clutch::error_code ec;
  s.connect({asio::ip::address_v4::loopback(), port}, ec);
  if (ec) return tcp::socket(io);
  timeval limit{10, 0};  // a connection nobody serves fails the test instead of hanging it
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  return s;
}

// One line to the server on a fresh connection.
std::string ask_once(unsigned short port) {
  asio::io_context io;
  tcp::socket s = connect_to(io, port);
  asio::streambuf in;
  return s.is_open() ? ask(s, in) : std::string();
}

// Every event of every worker, as text in arrival order.
struct recorder {
  std::vector<std::string> log;
  std::map<int, std::vector<std::string>> by_worker;
  std::vector<tcp::endpoint> listening_at;
  std::vector<std::pair<int, clutch::exit_status>> exits;
  std::vector<std::pair<int, clutch::error_code>> errors;
  std::vector<json::value> messages;

  void attach(cl::primary& p) {
    p.on_fork([this](cl::worker& w) { note(w, "fork"); });
    p.on_online([this](cl::worker& w) { note(w, "online"); });
    p.on_listening([this](cl::worker& w, const tcp::endpoint& at) {
      note(w, "listening");
      listening_at.push_back(at);
    });
    p.on_disconnect([this](cl::worker& w) { note(w, "disconnect"); });
    p.on_exit([this](cl::worker& w, const clutch::exit_status& st) {
      note(w, "exit");
      exits.emplace_back(w.id(), st);
    });
    p.on_error([this](cl::worker& w, clutch::error_code ec) {
      note(w, "error");
      errors.emplace_back(w.id(), ec);
    });
    p.on_message([this](cl::worker&, const json::value& m, clutch::handle) { messages.push_back(m); });
  }
  void note(cl::worker& w, const std::string& what) {
    log.push_back(std::to_string(w.id()) + " " + what);
    by_worker[w.id()].push_back(what);
  }
  std::size_t count(const std::string& what) const {
    std::size_t n = 0;
    for (auto& [id, events] : by_worker) n += std::count(events.begin(), events.end(), what);
    return n;
  }
};

// A primary on the test's io_context, every event of it recorded in r.
class ClusterFixture {
 protected:
  cl::primary& start(cl::settings s) {
    primary_.emplace(io, std::move(s));
    r.attach(*primary_);
    return *primary_;
  }
  // start() with n serve workers under `policy` (their pids in `pids`), run until all of them listen.
  cl::primary& serve(cl::scheduling policy, int n, std::set<std::string>& pids) {
    auto s = worker_settings("serve");
    s.policy = policy;
    cl::primary& p = start(s);
    for (int i = 0; i < n; ++i) pids.insert(std::to_string(p.fork().process().pid()));
    run_until(io, [&] { return r.listening_at.size() == static_cast<std::size_t>(n); });
    return p;
  }

  asio::io_context io;
  recorder r;

 private:
  std::optional<cl::primary> primary_;  // after io and r: it goes first
};

std::string policy_name(cl::scheduling p) {
  switch (p) {
    case cl::scheduling::round_robin: return "RoundRobin";
    case cl::scheduling::shared: return "Shared";
    case cl::scheduling::reuseport: return "Reuseport";
  }
  return "?";
}

class Cluster : public ::testing::Test, public ClusterFixture {};
class Policies : public ::testing::TestWithParam<cl::scheduling>, public ClusterFixture {};

}  // namespace

namespace clutch::cluster {
void PrintTo(scheduling p, std::ostream* os) { *os << policy_name(p); }
}  // namespace clutch::cluster

TEST_F(Cluster, EventsComeInOrderWithIdsStatesAndMessages) {
  cl::primary& p = start(worker_settings("serve"));
  std::vector<cl::worker> ws{p.fork(), p.fork()};
  EXPECT_EQ(ws[0].id(), 1);
  EXPECT_EQ(ws[1].id(), 2);
  EXPECT_EQ(ws[0].state(), cl::worker_state::none);
  p.on_online([](cl::worker& w) { w.send("ping"); });
  ASSERT_TRUE(run_until(io, [&] { return r.count("listening") == 2 && r.messages.size() == 2; }));
  for (auto& w : ws) EXPECT_EQ(w.state(), cl::worker_state::listening);
  std::set<std::string> pongs;
  for (auto& m : r.messages) pongs.insert(std::string(m.as_string()));
  EXPECT_EQ(pongs, (std::set<std::string>{"pong 1", "pong 2"}));

  EXPECT_FALSE(ws[0].kill());  // SIGTERM, asked for
  ASSERT_TRUE(run_until(io, [&] { return r.count("exit") == 1; }));
  EXPECT_EQ(r.by_worker[1], (std::vector<std::string>{"fork", "online", "listening", "disconnect", "exit"}));
  EXPECT_EQ(r.exits[0].second.signal, SIGTERM);
  EXPECT_FALSE(r.exits[0].second.code);
  EXPECT_TRUE(ws[0].exited_after_disconnect());
  EXPECT_EQ(ws[0].state(), cl::worker_state::dead);
  EXPECT_EQ(p.workers().size(), 1u);
  // Nothing is reported twice, and the other worker is untouched.
  io.run_for(100ms);
  EXPECT_EQ(r.count("exit"), 1u);
  EXPECT_EQ(r.count("disconnect"), 1u);
  EXPECT_EQ(ws[1].state(), cl::worker_state::listening);
}

TEST_F(Cluster, ASigkilledWorkerGivesOneDisconnectAndOneExitAndWasNotAsked) {
  cl::primary& p = start(worker_settings("serve"));
  cl::worker w = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.count("listening") == 1; }));
  ASSERT_EQ(::kill(w.process().pid(), SIGKILL), 0);
  ASSERT_TRUE(run_until(io, [&] { return r.count("exit") == 1; }));
  io.run_for(100ms);
  EXPECT_EQ(r.by_worker[1], (std::vector<std::string>{"fork", "online", "listening", "disconnect", "exit"}));
  EXPECT_EQ(r.exits[0].second.signal, SIGKILL);
  EXPECT_FALSE(w.exited_after_disconnect());
  EXPECT_TRUE(p.workers().empty());  // restart: never
}

TEST_P(Policies, PortZeroInFourWorkersIsOneRealPortThatEveryWorkerServes) {
  std::set<std::string> pids;
  serve(GetParam(), 4, pids);
  ASSERT_EQ(r.listening_at.size(), 4u);
  const unsigned short port = r.listening_at[0].port();
  EXPECT_NE(port, 0);
  for (auto& at : r.listening_at) EXPECT_EQ(at.port(), port);

  // Connections from a thread, while the primary's io_context runs here (round-robin needs it).
  std::set<std::string> seen;
  std::atomic<bool> done = false;
  std::thread client([&] {
    std::set<std::string> got;
    for (int i = 0; i < 3000 && got.size() < 4; ++i) {
      std::string who = ask_once(port);
      if (!who.empty()) got.insert(who);
    }
    seen = got;
    done = true;
  });
  run_until(io, [&] { return done.load(); }, 90s);
  client.join();
  EXPECT_EQ(seen, pids);
}

TEST_P(Policies, TwoListensOnPortZeroInAWorkerAreTwoServersEachSharedByTheWorkers) {
  // As Node's: the first listen(0) of every worker shares one port, the second another, so that an HTTP server
  // and an admin server on port 0 never take each other's connections.
  auto s = worker_settings("serve-two");
  s.policy = GetParam();
  cl::primary& p = start(s);
  std::map<int, std::vector<unsigned short>> ports;  // by worker id, in the order of its calls
  p.on_listening([&](cl::worker& w, const tcp::endpoint& at) { ports[w.id()].push_back(at.port()); });
  std::set<std::string> pids;
  for (int i = 0; i < 2; ++i) pids.insert(std::to_string(p.fork().process().pid()));
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 4; }));
  ASSERT_EQ(ports.size(), 2u);
  const auto& a = ports.begin()->second;
  const auto& b = ports.rbegin()->second;
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_NE(a[0], a[1]) << "two servers, two ports";
  EXPECT_EQ(a, b) << "the Nth listen(0) of each worker shares the Nth port";
  // Each port is served by both workers.
  for (const auto port : a) {
    std::set<std::string> seen;
    std::atomic<bool> done = false;
    std::thread client([&] {
      for (int i = 0; i < 3000 && seen.size() < 2; ++i) {
        std::string who = ask_once(port);
        if (!who.empty()) seen.insert(who);
      }
      done = true;
    });
    run_until(io, [&] { return done.load(); }, 90s);
    client.join();
    EXPECT_EQ(seen, pids) << "port " << port;
  }
}

TEST_P(Policies, AReloadUnderLoadReplacesEveryWorkerAndNoRequestFails) {
  std::set<std::string> old_pids;
  cl::primary& p = serve(GetParam(), 2, old_pids);
  ASSERT_EQ(r.listening_at.size(), 2u);
  const unsigned short port = r.listening_at[0].port();

  // Two clients: fresh connections, and one kept-alive connection that reconnects when told "bye".
  std::atomic<bool> stop = false;
  std::atomic<int> answered = 0, failed = 0;
  std::set<std::string> seen;
  std::mutex seen_mutex;
  auto note = [&](const std::string& who) {
    if (who.empty()) return ++failed, void();
    ++answered;
    std::lock_guard lock(seen_mutex);
    seen.insert(who.substr(0, who.find(' ')));
  };
  std::atomic<int> finished = 0;
  std::thread fresh([&] {
    while (!stop) note(ask_once(port));
    ++finished;
  });
  std::thread kept([&] {
    asio::io_context cio;
    while (!stop) {
      tcp::socket sock = connect_to(cio, port);
      asio::streambuf in;
      for (std::string line; !stop;) {
        note(line = sock.is_open() ? ask(sock, in) : "");
        if (line.empty() || line.ends_with(" bye")) break;
      }
    }
    ++finished;
  });
  ASSERT_TRUE(run_until(io, [&] { return answered > 50; }));
  std::optional<clutch::error_code> result;
  p.reload([&](clutch::error_code ec) { result = ec; });
  run_until(io, [&] { return result.has_value(); }, 60s);
  const int before = answered;
  run_until(io, [&] { return answered > before + 50; });
  stop = true;
  run_until(io, [&] { return finished == 2; });  // the primary keeps serving (round-robin) until both are done
  fresh.join();
  kept.join();

  ASSERT_TRUE(result);
  EXPECT_FALSE(*result) << result->message();
  EXPECT_EQ(failed, 0) << "of " << answered << " requests";
  EXPECT_EQ(r.count("exit"), 2u);
  std::set<std::string> now;
  for (auto& w : p.workers()) now.insert(std::to_string(w.process().pid()));
  EXPECT_EQ(now.size(), 2u);
  for (auto& pid : now) EXPECT_FALSE(old_pids.count(pid)) << "an old worker is still there";
  for (auto& pid : now) EXPECT_TRUE(seen.count(pid)) << "a new worker never answered";
}

INSTANTIATE_TEST_SUITE_P(Cluster, Policies,
                         ::testing::Values(cl::scheduling::reuseport, cl::scheduling::shared,
                                           cl::scheduling::round_robin),
                         [](const auto& info) { return policy_name(info.param); });

TEST_F(Cluster, GracefulDisconnectWaitsForAnOpenConnectionToFinish) {
  cl::primary& p = start(worker_settings("serve"));
  cl::worker w = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 1; }));

  tcp::socket client = connect_to(io, r.listening_at[0].port());
  asio::streambuf in;
  EXPECT_EQ(ask(client, in), std::to_string(w.process().pid()));

  w.disconnect();
  ASSERT_TRUE(run_until(io, [&] { return r.count("disconnect") == 1; }));
  // The worker has closed its listener and its channel, but the open connection still gets its answer.
  EXPECT_EQ(r.count("exit"), 0u);
  EXPECT_EQ(ask(client, in), std::to_string(w.process().pid()) + " bye");
  ASSERT_TRUE(run_until(io, [&] { return r.count("exit") == 1; }));
  EXPECT_EQ(r.exits[0].second.code, 0);
  EXPECT_TRUE(w.exited_after_disconnect());
}

TEST_F(Cluster, AWorkerStuckOnStopIsKilledWithItsGroupAtTheDeadline) {
  auto s = worker_settings("stuck-on-stop");
  s.kill_timeout = 300ms;
  cl::primary& p = start(s);
  cl::worker w = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 1; }));
  const pid_t pid = w.process().pid();
  EXPECT_EQ(::getpgid(pid), pid);  // its own process group
  w.disconnect();
  ASSERT_TRUE(run_until(io, [&] { return r.count("exit") == 1; }));
  EXPECT_EQ(r.exits[0].second.signal, SIGKILL);
  EXPECT_TRUE(w.exited_after_disconnect());
}

TEST_F(Cluster, AWorkerThatCrashesAfterAStableRunIsReplacedInItsSlot) {
  auto s = worker_settings("serve");
  s.restart = cl::restart_policy::always;
  s.stable_uptime = 0ms;
  cl::primary& p = start(s);
  cl::worker first = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 1; }));
  first.send("crash");
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 2; }));
  EXPECT_EQ(r.exits.at(0).second.code, 3);
  auto now = p.workers();
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].id(), 2);
  EXPECT_EQ(now[0].slot(), first.slot());
  EXPECT_EQ(r.listening_at[1].port(), r.listening_at[0].port());
  EXPECT_EQ(ask_once(r.listening_at[1].port()), std::to_string(now[0].process().pid()));
}

TEST_F(Cluster, AWorkerThatCannotStartIsAFailedStartOfItsSlotAndSignalsNobody) {
  // A process of the test's own group: a sweep of "group 0" after a failed spawn would reach it, and the test.
  clutch::child sibling = clutch::spawn(io, "sleep", {"600"});
  auto s = worker_settings("serve");
  s.program = "/nonexistent/prog";
  s.restart = cl::restart_policy::always;
  s.restart_delay = 20ms;
  s.max_restarts = 3;
  cl::primary& p = start(s);
  cl::worker w = p.fork();
  EXPECT_EQ(w.process().pid(), 0) << "it has no process";
  ASSERT_TRUE(run_until(io, [&] {
    return std::any_of(r.errors.begin(), r.errors.end(), [](auto& e) { return e.second == clutch::errc::crash_loop; });
  }));
  ASSERT_FALSE(r.errors.empty());
  EXPECT_EQ(clutch::spawn_stage_of(r.errors.front().second), "exec") << r.errors.front().second.message();
  EXPECT_NE(r.errors.front().second.message().find("spawn failed at exec: No such file or directory"),
            std::string::npos);
  EXPECT_TRUE(p.workers().empty());
  EXPECT_TRUE(clutch_test::process_alive(sibling.pid()));
  sibling.kill(SIGKILL);
  run_until(io, [&] { return sibling.exit().has_value(); });
}

TEST_F(Cluster, AWorkerThatLeavesByItselfExitsZeroAndIsNotACrash) {
  auto s = worker_settings("serve");
  s.restart = cl::restart_policy::always;
  cl::primary& p = start(s);
  cl::worker w = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 1; }));
  w.send(json::string("leave"));  // the worker calls cluster::disconnect_self()
  ASSERT_TRUE(run_until(io, [&] { return r.exits.size() == 1; }));
  EXPECT_EQ(r.exits[0].second.code, 0);
  EXPECT_TRUE(w.exited_after_disconnect());
  io.run_for(300ms);
  EXPECT_TRUE(p.workers().empty()) << "no restart: it was no crash";
  EXPECT_TRUE(r.errors.empty());
}

TEST_F(Cluster, AWorkerWhoseChannelThePrimaryClosedExitsZeroInsteadOfBeingKilled) {
  cl::primary& p = start(worker_settings("serve"));
  cl::worker w = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 1; }));
  w.process().channel().disconnect();
  ASSERT_TRUE(run_until(io, [&] { return r.exits.size() == 1; }));
  EXPECT_EQ(r.exits[0].second.code, 0) << "signal " << r.exits[0].second.signal.value_or(0);
  EXPECT_FALSE(r.exits[0].second.signal.has_value());
}

TEST_F(Cluster, CrashesInARowBackOffAndEndInTheCrashLoopLimit) {
  auto s = worker_settings("crash-at-start");
  s.restart = cl::restart_policy::on_failure;
  s.restart_delay = 50ms;
  s.max_restarts = 3;
  cl::primary& p = start(s);
  std::vector<std::chrono::steady_clock::time_point> forks, exits;
  p.on_fork([&](cl::worker&) { forks.push_back(std::chrono::steady_clock::now()); });
  p.on_exit([&](cl::worker&, const clutch::exit_status&) { exits.push_back(std::chrono::steady_clock::now()); });
  p.fork();
  ASSERT_TRUE(run_until(io, [&] { return !r.errors.empty(); }));
  io.run_for(200ms);
  // One start and three restarts, then the slot is given up, with an event that says why.
  std::string log;
  for (auto& line : r.log) log += line + "; ";
  for (auto& [id, ec] : r.errors) log += std::to_string(id) + ": " + ec.message() + "; ";
  ASSERT_EQ(forks.size(), 4u) << log;
  ASSERT_EQ(exits.size(), 4u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].first, 4);
  EXPECT_EQ(r.errors[0].second, clutch::errc::crash_loop);
  for (auto& [id, st] : r.exits) EXPECT_EQ(st.code, 1);
  // The first restart is immediate; then 50 ms, then 75 ms at least (only lower bounds: the machine may be slow).
  EXPECT_GE(forks[2] - exits[1], 50ms);
  EXPECT_GE(forks[3] - exits[2], 75ms);
  EXPECT_TRUE(p.workers().empty());
}

TEST_F(Cluster, AReloadWhoseNewWorkerNeverBecomesReadyKeepsTheOldWorkers) {
  const auto marker = std::filesystem::temp_directory_path() / ("clutch-never-ready-" + std::to_string(::getpid()));
  std::filesystem::remove(marker);
  auto s = worker_settings("serve", {marker.string()});
  // Long enough for the crashing worker below to start and die before it under ASan on a loaded machine (with
  // 500 ms, CI once saw the crash come after the timeout: timed_out instead of worker_failed).
  s.ready_timeout = 3s;
  cl::primary& p = start(s);
  std::vector<cl::worker> old{p.fork(), p.fork()};
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 2; }));
  std::ofstream(marker) << "wait\n";

  std::optional<clutch::error_code> first, second;
  p.reload([&](clutch::error_code ec) { first = ec; });
  p.reload([&](clutch::error_code ec) { second = ec; });
  ASSERT_TRUE(run_until(io, [&] { return first && second && r.count("exit") == 1; }));
  EXPECT_EQ(*second, clutch::errc::reload_in_progress);
  EXPECT_EQ(*first, clutch::errc::timed_out);
  EXPECT_EQ(r.exits.at(0).first, 3);  // the new worker, killed; the old ones stay and serve
  auto now = p.workers();
  ASSERT_EQ(now.size(), 2u);
  EXPECT_EQ(now[0].id(), 1);
  EXPECT_EQ(now[1].id(), 2);
  const std::string who = ask_once(r.listening_at[0].port());
  EXPECT_TRUE(who == std::to_string(old[0].process().pid()) || who == std::to_string(old[1].process().pid())) << who;

  // A new worker that dies before it is ready fails the reload the same way.
  std::ofstream(marker) << "crash\n";
  std::optional<clutch::error_code> third;
  p.reload([&](clutch::error_code ec) { third = ec; });
  ASSERT_TRUE(run_until(io, [&] { return third.has_value(); }));
  EXPECT_EQ(*third, clutch::errc::worker_failed);
  EXPECT_EQ(p.workers().size(), 2u);
  std::filesystem::remove(marker);
}

TEST_F(Cluster, AddressInUseReachesTheWorkerAndThePrimaryKeepsRunning) {
  tcp::acceptor taken(io, {asio::ip::address_v4::loopback(), 0});  // no SO_REUSEPORT: nobody can join it
  const auto port = std::to_string(taken.local_endpoint().port());
  for (auto policy : {cl::scheduling::reuseport, cl::scheduling::shared, cl::scheduling::round_robin}) {
    cl::settings s{.args = helper_args("cluster-worker", {"serve", port}), .policy = policy,
                   .restart = cl::restart_policy::never};
    r = {};
    cl::worker w = start(s).fork();
    ASSERT_TRUE(run_until(io, [&] { return !r.messages.empty(); })) << policy_name(policy);
    EXPECT_EQ(r.messages[0].at("listen_error").as_int64(), EADDRINUSE) << policy_name(policy);
    EXPECT_EQ(w.state(), cl::worker_state::online);
    EXPECT_TRUE(r.exits.empty());
  }
}

TEST_F(Cluster, AnExclusiveListenGivesEachWorkerAPortOfItsOwn) {
  cl::primary& p = start(worker_settings("exclusive"));
  cl::worker a = p.fork(), b = p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 2; }));
  EXPECT_NE(r.listening_at[0].port(), r.listening_at[1].port());
  std::set<std::string> got{ask_once(r.listening_at[0].port()), ask_once(r.listening_at[1].port())};
  EXPECT_EQ(got, (std::set<std::string>{std::to_string(a.process().pid()), std::to_string(b.process().pid())}));
}

TEST_F(Cluster, WhenThePrimaryIsSigkilledEveryWorkerGoes) {
  clutch::options o;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::inherit};
  clutch::child primary = clutch::spawn(io, clutch_test::self(), helper_args("cluster-primary", {"3"}), o);
  std::string out;
  primary.on_data(clutch::child::out, [&](std::string_view chunk) { out += chunk; });
  ASSERT_TRUE(run_until(io, [&] { return out.find('\n') != std::string::npos; }));
  std::vector<pid_t> workers;
  std::istringstream in(out);
  for (pid_t pid; in >> pid;) workers.push_back(pid);
  ASSERT_EQ(workers.size(), 3u);
  for (pid_t pid : workers) EXPECT_TRUE(clutch_test::process_alive(pid));

  primary.kill(SIGKILL);
  EXPECT_TRUE(run_until(io, [&] {
    return std::none_of(workers.begin(), workers.end(), [](pid_t pid) { return clutch_test::process_alive(pid); });
  }));
}

TEST_F(Cluster, GracefulStopOfThePrimaryDisconnectsEveryWorkerAndRestartsNone) {
  auto s = worker_settings("serve");
  s.restart = cl::restart_policy::always;
  cl::primary& p = start(s);
  for (int i = 0; i < 3; ++i) p.fork();
  ASSERT_TRUE(run_until(io, [&] { return r.listening_at.size() == 3; }));
  std::optional<clutch::error_code> stopped;
  p.disconnect([&](clutch::error_code ec) { stopped = ec; });
  ASSERT_TRUE(run_until(io, [&] { return stopped.has_value(); }));
  EXPECT_FALSE(*stopped);
  EXPECT_EQ(r.count("exit"), 3u);
  EXPECT_EQ(r.count("fork"), 3u);
  for (auto& [id, st] : r.exits) EXPECT_EQ(st.code, 0);
  EXPECT_TRUE(p.workers().empty());
}
