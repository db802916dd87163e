// The supervisor's pieces, each with real processes: the NOTIFY_SOCKET server, and the systemd socket-passing
// variables a worker gets.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "clutch_run.hpp"
#include "helpers.hpp"
#include "supervisor/engine.hpp"
#include "supervisor/listen.hpp"
#include "supervisor/notify.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::clutch_run;
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

namespace {

TEST(ListenSpec, ParsesPortsAddressesAndUnixPaths) {
  std::string why;
  auto any = sv::parse_listen("8080", why);
  ASSERT_TRUE(any) << why;
  EXPECT_EQ(any->tcp, asio::ip::tcp::endpoint(asio::ip::address_v4::any(), 8080));
  auto local = sv::parse_listen("http=127.0.0.1:0", why);
  ASSERT_TRUE(local) << why;
  EXPECT_EQ(local->name, "http");
  EXPECT_EQ(local->tcp.address().to_string(), "127.0.0.1");
  auto v6 = sv::parse_listen("[::1]:80", why);
  ASSERT_TRUE(v6) << why;
  EXPECT_TRUE(v6->tcp.address().is_v6());
  auto unix_path = sv::parse_listen("unix:/run/app.sock", why);
  ASSERT_TRUE(unix_path) << why;
  EXPECT_TRUE(unix_path->unix_socket);
  EXPECT_EQ(unix_path->path, "/run/app.sock");
  for (auto bad : {"", "http", "70000", "-1", "80x", "unix:", "1.2.3:80", "abc:80", "=80", "a:b=80"}) {
    why.clear();
    EXPECT_FALSE(sv::parse_listen(bad, why)) << bad;
    EXPECT_NE(why.find('\''), std::string::npos) << bad;  // the message quotes what was given
  }
}

// An unmodified Node program serves on the sockets it inherits, TCP and Unix, as under systemd.
TEST(ListenFds, ANodeProgramServesOnTheSocketsItInherits) {
  const auto path = std::filesystem::temp_directory_path() / ("clutch-listen-" + std::to_string(::getpid()));
  std::string why;
  clutch::error_code ec;
  std::vector<sv::listener> ls;
  ls.push_back(sv::open_listener(*sv::parse_listen("web=127.0.0.1:0", why), ec));
  ASSERT_FALSE(ec) << ec.message();
  ls.push_back(sv::open_listener(*sv::parse_listen("unix:" + path.string(), why), ec));
  ASSERT_FALSE(ec) << ec.message();
  const auto port = ls[0].bound.port();
  ASSERT_NE(port, 0);

  asio::io_context io;
  clutch::options o;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::inherit};
  sv::pass_listeners(o, ls);
  auto node = clutch::spawn(io, "node", {CLUTCH_FIXTURES "/listen_fds.js"}, o);
  std::string out;
  node.on_data(clutch::child::out, [&](std::string_view d) { out += d; });
  ASSERT_TRUE(run_until(io, [&] { return out.find("listening on 2") != std::string::npos; })) << out;

  auto get = [](auto& sock) {
    asio::write(sock, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")));
    std::string reply;
    clutch::error_code e;
    asio::read(sock, asio::dynamic_buffer(reply), e);
    return reply;
  };
  asio::io_context client;
  asio::ip::tcp::socket tcp(client);
  tcp.connect({asio::ip::address_v4::loopback(), port});
  const std::string pid = std::to_string(node.pid());
  EXPECT_NE(get(tcp).find("node " + pid + " web fd 3"), std::string::npos);
  asio::local::stream_protocol::socket local(client);
  local.connect({path.string()});
  EXPECT_NE(get(local).find("node " + pid + " listen1 fd 4"), std::string::npos);
  node.kill(SIGTERM);
  std::optional<clutch::exit_status> st;
  node.async_wait([&](clutch::error_code, clutch::exit_status s) { st = s; });
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); }));
  std::filesystem::remove(path);
}

}  // namespace

// ---- `clutch run`, end to end: the real binary, real workers, real connections ----

namespace {


// One request on a fresh connection; the body, or "" on any failure.
std::string http_get(unsigned short port) {
  auto [code, body] = clutch_test::http_request(port);
  return code == 200 ? body : std::string();
}

// Both programs know nothing of clutch beyond systemd's LISTEN_FDS: Node's server.listen({fd: 3}), and a small C
// program's accept() loop on fd 3 (tests/fixtures/listen_fd_serve.c).
std::vector<std::string> program(const std::string& which) {
  if (which == "node") return {"node", CLUTCH_FIXTURES "/listen_fds.js"};
  return {CLUTCH_C_SERVER};
}

class ClutchRun : public testing::TestWithParam<std::string> {
 protected:
  std::vector<std::string> args(std::vector<std::string> opts, std::vector<std::string> extra = {}) {
    std::vector<std::string> a{"run"};
    a.insert(a.end(), opts.begin(), opts.end());
    a.push_back("--");
    for (auto& p : program(GetParam())) a.push_back(p);
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }
};

TEST_P(ClutchRun, BothWorkersServeTheSharedPortAndACrashedOneIsReplaced) {
  clutch_run c(args({"--workers", "2", "--listen", "127.0.0.1:0"}));
  ASSERT_TRUE(c.wait_for(") started", 2)) << c.err;
  const auto port = c.port();
  ASSERT_NE(port, 0) << c.err;
  // Until both have answered: a worker that is still starting (slowly, under a sanitizer) takes none at first.
  std::set<std::string> who;
  for (auto end = std::chrono::steady_clock::now() + 20s; who.size() < 2 && std::chrono::steady_clock::now() < end;) {
    const auto body = http_get(port);
    ASSERT_FALSE(body.empty()) << c.err;
    who.insert(body.substr(0, body.find(' ', body.find(' ') + 1)));
  }
  EXPECT_EQ(who.size(), 2u) << "one worker took every connection";

  const int victim = c.started()[0];
  ::kill(victim, SIGKILL);
  ASSERT_TRUE(c.wait_for(") started", 3)) << c.err;
  EXPECT_NE(c.err.find("(pid " + std::to_string(victim) + ") killed by SIGKILL"), std::string::npos);
  EXPECT_FALSE(http_get(port).empty());
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

TEST_P(ClutchRun, AReloadUnderARequestLoopFailsNoRequest) {
  clutch_run c(args({"--workers", "2", "--listen", "127.0.0.1:0"}));
  ASSERT_TRUE(c.wait_for(") started", 2)) << c.err;
  const auto port = c.port();
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread client([&] {
    while (!done) (http_get(port).empty() ? failed : ok)++;
  });
  run_until(c.io, [&] { return ok > 50; });
  ::kill(c.proc.pid(), SIGHUP);
  const bool reloaded = c.wait_for("reload done");
  const int before = ok;
  run_until(c.io, [&] { return ok > before + 50; });
  done = true;
  client.join();
  ASSERT_TRUE(reloaded) << c.err;
  EXPECT_EQ(failed, 0) << ok << " requests served";
  EXPECT_EQ(c.started().size(), 4u);  // two new workers
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

// --ready listen: Node waits in epoll, the plain server blocks in accept(); clutch sees either, without a word
// from the program, and a reload waits for it.
TEST_P(ClutchRun, ReadyListenSeesEachWorkerWaitForConnections) {
  clutch_run c(args({"--workers", "2", "--listen", "127.0.0.1:0", "--ready", "listen"}));
  ASSERT_TRUE(c.wait_for(") ready", 2)) << c.err;
  ::kill(c.proc.pid(), SIGHUP);
  ASSERT_TRUE(c.wait_for("reload done")) << c.err;
  EXPECT_EQ(c.started().size(), 4u);
  EXPECT_FALSE(http_get(c.port()).empty());
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

INSTANTIATE_TEST_SUITE_P(Programs, ClutchRun, testing::Values("node", "c"));

TEST(ClutchRunReady, ListenIsNeverMetByAProgramThatDoesNotAccept) {
  clutch_run c({"run", "--workers", "1", "--listen", "127.0.0.1:0", "--ready", "listen", "--ready-timeout", "300",
                "--", "sleep", "600"});
  ASSERT_TRUE(c.wait_for("not ready within 300 ms")) << c.err;
  EXPECT_EQ(c.err.find(") ready"), std::string::npos) << c.err;
  auto r = clutch::spawn_sync(clutch_test::clutch_binary(), {"run", "--ready", "listen", "--", "true"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("give listen too"), std::string::npos) << r.err;
}

// During a reload, once worker 1's replacement is ready, worker 1 is still alive and accepting (it ignores its
// stop signal, SIGWINCH, until SIGKILL at --kill-timeout). Steered (the default), no new connection reaches it;
// with --shared-socket it takes its share, which is why steering is the default.
class ClutchRunSteering : public testing::TestWithParam<bool> {};

TEST_P(ClutchRunSteering, AfterItsReplacementIsReadyTheOldWorkerGetsNoNewConnection) {
  const bool steered = GetParam();
  std::vector<std::string> a{"run", "--workers", "2", "--listen", "127.0.0.1:0", "--stop-signal", "SIGWINCH",
                             "--kill-timeout", "4000"};
  if (!steered) a.push_back("--shared-socket");
  a.insert(a.end(), {"--", self(), "--helper", "listen-fd-serve"});
  clutch_run c(a);
  ASSERT_TRUE(c.wait_for(") started", 2)) << c.err;
  const auto port = c.port();
  std::set<std::string> who;
  for (auto end = std::chrono::steady_clock::now() + 20s; who.size() < 2 && std::chrono::steady_clock::now() < end;)
    who.insert(http_get(port));
  ASSERT_EQ(who.size(), 2u) << c.err;
  const std::string first = std::to_string(c.started()[0]) + "\n";

  ::kill(c.proc.pid(), SIGHUP);
  ASSERT_TRUE(c.wait_for(") started", 3)) << c.err;
  const std::string replacement = std::to_string(c.started()[2]) + "\n";
  // The replacement is ready (--ready none: once it runs) and answers.
  bool answered = false;
  for (auto end = std::chrono::steady_clock::now() + 20s; !answered && std::chrono::steady_clock::now() < end;)
    answered = http_get(port) == replacement;
  ASSERT_TRUE(answered) << c.err;
  int from_first = 0, served = 0;
  for (int i = 0; i < 60; ++i) {
    const auto body = http_get(port);
    served += !body.empty();
    from_first += body == first;
  }
  ASSERT_TRUE(clutch_test::process_alive(c.started()[0])) << "worker 1 was meant to outlive the requests";
  EXPECT_EQ(served, 60);
  if (steered) EXPECT_EQ(from_first, 0);
  else EXPECT_GT(from_first, 0) << "a shared socket gives the old worker its share";
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

INSTANTIATE_TEST_SUITE_P(Modes, ClutchRunSteering, testing::Bool(),
                         [](const testing::TestParamInfo<bool>& i) { return i.param ? "Steered" : "Shared"; });

TEST(ClutchRunStop, SigtermEndsEveryTreeEvenAGrandchildThatIgnoresIt) {
  clutch_run c({"run", "--workers", "2", "--listen", "127.0.0.1:0", "--kill-timeout", "300", "--", self(), "--helper",
                "listen-fd-serve", "--grandchild"});
  ASSERT_TRUE(run_until(c.io, [&] {
    // stdout and clutch's stderr arrive in either order
    return clutch_test::whole_lines_with(c.out, "grandchild ") == 2 && c.started().size() == 2;
  })) << c.err;
  std::vector<int> pids = c.started();
  for (auto at = c.out.find("grandchild "); at != std::string::npos; at = c.out.find("grandchild ", at + 1))
    pids.push_back(std::stoi(c.out.substr(at + 11)));
  ASSERT_EQ(pids.size(), 4u);
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
  EXPECT_EQ(c.exit->code, 0) << c.err;  // the workers stopped cleanly on SIGTERM
  for (int pid : pids) EXPECT_FALSE(clutch_test::process_alive(pid)) << pid;
}

// kill_mode = "mixed": the stop signal reaches the main process only, which stops its child itself (here with
// SIGUSR1); "group" (the default) signals the child too.
TEST(ClutchRunStop, KillModeMixedSignalsTheMainProcessOnly) {
  const std::string script =
      "child() { trap 'echo child got TERM; exit 0' TERM; trap 'echo child told by main; exit 0' USR1; "
      "echo child up; while :; do sleep 0.05; done; }; child & c=$!; "
      "trap 'echo main got TERM; sleep 0.3; kill -USR1 $c; wait $c; exit 0' TERM; echo up; while :; do sleep 0.05; done";
  for (const std::string mode : {"mixed", "group"}) {
    clutch_run c({"run", "--workers", "1", "--kill-mode", mode, "--", "/bin/sh", "-c", script});
    // Both have set their traps.
    ASSERT_TRUE(run_until(c.io, [&] { return c.out.find("\nup\n") != std::string::npos || c.out.starts_with("up\n"); }));
    ASSERT_TRUE(run_until(c.io, [&] { return c.out.find("child up") != std::string::npos; })) << c.err;
    ::kill(c.proc.pid(), SIGTERM);
    ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
    EXPECT_NE(c.out.find("main got TERM"), std::string::npos) << c.out;
    if (mode == "mixed") {
      EXPECT_NE(c.out.find("child told by main"), std::string::npos) << c.out;
      EXPECT_EQ(c.out.find("child got TERM"), std::string::npos) << c.out;
    } else {
      EXPECT_NE(c.out.find("child got TERM"), std::string::npos) << c.out;
    }
  }
}

TEST(ClutchRunStop, TheUnixSocketFileItMadeIsRemovedAndOnlyThatOne) {
  char tmpl[] = "/tmp/clutch-u-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/app.sock";
  {
    clutch_run c({"run", "--workers", "1", "--listen", "unix:" + path, "--", "sleep", "600"});
    ASSERT_TRUE(c.wait_for(") started")) << c.err;
    EXPECT_TRUE(std::filesystem::exists(path));
    ::kill(c.proc.pid(), SIGTERM);
    ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
    EXPECT_FALSE(std::filesystem::exists(path)) << "clutch run leaves its socket file behind";
  }
  {
    clutch_run c({"run", "--workers", "1", "--listen", "unix:" + path, "--", "sleep", "600"});
    ASSERT_TRUE(c.wait_for(") started")) << c.err;
    // Someone else's file at that path now: not clutch's to remove.
    std::filesystem::remove(path);
    std::ofstream(path) << "not a socket of clutch's\n";
    ::kill(c.proc.pid(), SIGTERM);
    ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
    EXPECT_TRUE(std::filesystem::exists(path)) << "clutch removed a file it did not make";
  }
  std::filesystem::remove_all(dir);
}

TEST(ClutchRunCluster, AClusterProgramRunByClutchIsAPrimaryOfItsOwn) {
  // clutch run numbers its workers with CLUTCH_WORKER_ID, the cluster's own variable; without a channel to a
  // primary, the program is a primary and forks its own workers.
  clutch_run c({"run", "--workers", "1", "--", self(), "--helper", "cluster-primary", "2"});
  ASSERT_TRUE(run_until(c.io, [&] {
    int pids = 0;
    std::istringstream words(c.out);
    for (int p; words >> p;) ++pids;
    return pids == 2;
  })) << c.out << c.err;
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
}

TEST(ClutchRunStop, TheExitCodeSaysHowTheWorkersEnded) {
  // A worker that is killed by the stop signal: 128 + SIGTERM, as a shell reports it.
  clutch_run c({"run", "--workers", "1", "--", "sleep", "600"});
  ASSERT_TRUE(c.wait_for(") started")) << c.err;
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
  EXPECT_EQ(c.exit->code, 128 + SIGTERM);
  // One that exits by itself with a code, never restarted: with no worker left, clutch ends with that code.
  clutch_run d({"run", "--workers", "1", "--restart", "never", "--", "sh", "-c", "exit 7"});
  ASSERT_TRUE(run_until(d.io, [&] { return d.exit.has_value(); })) << d.err;
  EXPECT_EQ(d.exit->code, 7) << d.err;
  EXPECT_NE(d.err.find("no worker left to run"), std::string::npos) << d.err;
}

TEST(ClutchRunReady, NotifyReadinessIsReportedAndGatesAReload) {
  clutch_run c({"run", "--workers", "1", "--ready", "notify", "--listen", "127.0.0.1:0", "--", self(), "--helper",
                "listen-fd-serve", "--notify"});
  ASSERT_TRUE(c.wait_for(") ready")) << c.err;
  EXPECT_NE(c.err.find("status: serving"), std::string::npos) << c.err;
  ::kill(c.proc.pid(), SIGHUP);
  ASSERT_TRUE(c.wait_for("reload done")) << c.err;
  // The new worker was ready before the old one was stopped.
  const auto ready2 = c.err.find("worker 2 (pid");
  const auto ready_line = c.err.find(") ready", ready2);
  const auto old_exit = c.err.find("worker 1 (pid", c.err.find("reload"));
  EXPECT_LT(ready_line, old_exit) << c.err;
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

TEST(ClutchRunCli, BadArgumentsGiveAClearMessageAndNonZeroExit) {
  struct bad {
    std::vector<std::string> args;
    std::string says;
  };
  for (const auto& b : std::vector<bad>{
           {{"run", "--listen", "nope", "--", "true"}, "--listen 'nope'"},
           {{"run", "--stop-signal", "SIGNOPE", "--", "true"}, "SIGNOPE"},
           {{"run", "--workers", "many", "--", "true"}, "workers"},
           {{"run", "--workers", "2000", "--", "true"}, "1 to 1024"},
           {{"run"}, "command"},
           {{"frobnicate"}, "frobnicate"},
       }) {
    auto r = clutch::spawn_sync(clutch_test::clutch_binary(), b.args, {.timeout = std::chrono::seconds(20)});
    EXPECT_NE(r.status.code.value_or(0), 0) << b.args[0];
    EXPECT_NE((r.err + r.out).find(b.says), std::string::npos) << r.err << r.out;
  }
}

}  // namespace

namespace {

// A worker whose short-lived grandchildren are orphaned: each becomes clutch's child, and a zombie unless clutch
// reaps it.
const std::vector<std::string> orphan_maker = {
    "sh", "-c", "for i in 1 2 3; do (sleep 0.05 &); done; exec sleep 600"};

// Waits (bounded) until `parent` has no zombie child, after its orphans have had time to exit.
bool no_zombies_under(pid_t parent) {
  std::this_thread::sleep_for(300ms);  // the orphans' own lifetime; not a measurement
  for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end;) {
    if (clutch_test::zombies_of(parent).empty()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

TEST(ClutchRunReaper, OrphansOfTheWorkersAreReapedAsSubreaper) {
  std::vector<std::string> a{"run", "--workers", "1", "--"};
  a.insert(a.end(), orphan_maker.begin(), orphan_maker.end());
  clutch_run c(a);
  ASSERT_TRUE(c.wait_for(") started")) << c.err;
  EXPECT_TRUE(no_zombies_under(c.proc.pid()));
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

// As a container's PID 1: `unshare --pid --fork --mount-proc` makes clutch pid 1 of a new pid namespace, with
// that namespace's /proc, as in a container.
TEST(ClutchRunReaper, ZombiesAreReapedAsPid1) {
  if (::geteuid() != 0 || !std::filesystem::exists("/usr/bin/unshare")) GTEST_SKIP() << "needs root and unshare";
  std::vector<std::string> a{"--pid", "--fork", "--kill-child", "--mount-proc", clutch_test::clutch_binary(),
                             "run", "--workers", "1", "--"};
  a.insert(a.end(), orphan_maker.begin(), orphan_maker.end());
  asio::io_context io;
  std::string err;
  clutch::options o;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::pipe};
  o.kill_tree = true;
  auto u = clutch::spawn(io, "/usr/bin/unshare", a, o);
  u.on_data(clutch::child::err, [&](std::string_view d) { err += d; });
  ASSERT_TRUE(run_until(io, [&] { return err.find(") started") != std::string::npos; })) << err;
  EXPECT_NE(err.find("(pid 2) started"), std::string::npos) << err;  // the worker is pid 2: clutch is pid 1
  // clutch is unshare's only child; in our pid namespace it has its own number.
  const auto inside = clutch_test::children_of(u.pid());
  ASSERT_EQ(inside.size(), 1u);
  EXPECT_TRUE(no_zombies_under(inside[0]));
  ::kill(inside[0], SIGTERM);
  std::optional<clutch::exit_status> st;
  u.async_wait([&](clutch::error_code, clutch::exit_status s) { st = s; });
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); })) << err;
  EXPECT_NE(err.find("clutch: stopping"), std::string::npos) << err;  // PID 1 took SIGTERM, its own handler
}

}  // namespace

namespace {

TEST(ClutchRunWatchdog, AWorkerThatStopsPingingIsAbortedAndReplaced) {
  clutch_run c({"run", "--workers", "1", "--watchdog", "300", "--kill-timeout", "300", "--", self(), "--helper",
                "watchdog-pinger", "50", "0"});  // ready, then silent
  ASSERT_TRUE(c.wait_for("missed its watchdog (300 ms): SIGABRT")) << c.err;
  ASSERT_TRUE(c.wait_for("killed by SIGABRT")) << c.err;
  ASSERT_TRUE(c.wait_for("worker 2 (pid")) << c.err;  // its replacement
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

TEST(ClutchRunWatchdog, AWorkerThatKeepsPingingIsLeftAlone) {
  // Pings every 20 ms against a 2 s watchdog, for 3 s; then exits 0, and clutch with it. (With 600 ms, the ASan
  // build's helper, started beside other tests on 2 CPUs, was once late for its first ping.)
  clutch_run c({"run", "--workers", "1", "--restart", "never", "--watchdog", "2000", "--", self(), "--helper",
                "watchdog-pinger", "20", "150"});
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
  EXPECT_EQ(c.err.find("missed its watchdog"), std::string::npos) << c.err;
  EXPECT_EQ(c.exit->code, 0) << c.err;
}

}  // namespace

namespace {

// Under systemd: the socket comes from our parent (socket activation), and clutch says READY=1 once its workers
// are, then STOPPING=1.
TEST(ClutchRunSystemd, TakesTheSocketsItIsGivenAndReportsReadiness) {
  asio::io_context io;
  std::string why;
  clutch::error_code ec;
  std::vector<sv::listener> given;
  given.push_back(sv::open_listener(*sv::parse_listen("web=127.0.0.1:0", why), ec));
  ASSERT_FALSE(ec);
  const auto port = given[0].bound.port();
  sv::notify_socket n(io);
  std::vector<std::pair<pid_t, sv::notify_message>> said;
  n.on_message([&](pid_t from, const sv::notify_message& m) { said.emplace_back(from, m); });

  clutch::options o;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::pipe};
  sv::pass_listeners(o, given);
  o.env = o.env.plus({{"NOTIFY_SOCKET", n.address()}});
  o.kill_tree = true;
  std::string err;
  auto c = clutch::spawn(io, clutch_test::clutch_binary(),
                         {"run", "--workers", "2", "--ready", "notify", "--", self(), "--helper", "listen-fd-serve",
                          "--notify"},
                         o);
  c.on_data(clutch::child::err, [&](std::string_view d) { err += d; });
  auto said_ready = [&] {
    for (auto& [from, m] : said)
      if (from == c.pid() && m.ready) return true;
    return false;
  };
  auto ready_lines = [&] { return clutch_test::whole_lines_with(err, ") ready"); };
  // clutch says READY=1 once, after both workers said so (its log and the datagram arrive in either order).
  ASSERT_TRUE(run_until(io, [&] { return said_ready() && ready_lines() == 2; })) << err;
  EXPECT_EQ(std::count_if(said.begin(), said.end(), [&](auto& s) { return s.first == c.pid() && s.second.ready; }), 1);
  EXPECT_NE(err.find("given 127.0.0.1:" + std::to_string(port)), std::string::npos) << err;
  // The workers serve on the socket clutch was given.
  const auto body = http_get(port);
  EXPECT_FALSE(body.empty()) << err;

  ::kill(c.pid(), SIGTERM);
  std::optional<clutch::exit_status> st;
  c.async_wait([&](clutch::error_code, clutch::exit_status s) { st = s; });
  ASSERT_TRUE(run_until(io, [&] { return st.has_value(); })) << err;
  EXPECT_EQ(st->code, 0) << err;
  EXPECT_TRUE(std::any_of(said.begin(), said.end(), [&](auto& s) { return s.first == c.pid() && s.second.stopping; }));
}

}  // namespace

namespace {

TEST(ClutchRunMemory, AWorkerOverMaxMemoryIsReplacedGracefully) {
  clutch_run c({"run", "--workers", "1", "--max-memory", "40M", "--kill-timeout", "500", "--", self(), "--helper",
                "hog", "80"});
  ASSERT_TRUE(c.wait_for("over --max-memory 40 MiB: replacing it")) << c.err;
  ASSERT_TRUE(c.wait_for("worker 2 (pid")) << c.err;
  // The first worker goes (its stop signal) only once its replacement runs.
  ASSERT_TRUE(c.wait_for("worker 1 (pid " + std::to_string(c.started()[0]) + ") killed by SIGTERM")) << c.err;
  EXPECT_LT(c.err.find("worker 2 (pid"), c.err.find("killed by SIGTERM")) << c.err;
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

TEST(ClutchRunCli, ABadMemorySizeIsRefused) {
  auto r = clutch::spawn_sync(clutch_test::clutch_binary(), {"run", "--max-memory", "lots", "--", "true"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("--max-memory 'lots'"), std::string::npos) << r.err;
}

}  // namespace

namespace {

// The engine through its C++ API: its agent is a pool of one slot, so an agent that keeps exiting backs off and is
// given up, while the workers it let start go on.
TEST(Engine, AnAgentThatKeepsExitingIsGivenUpAndTheWorkersGoOn) {
  asio::io_context io;
  clutch::supervisor::run_settings s;
  s.program = "/bin/sleep";
  s.args = {"60"};
  s.workers = 1;
  s.agent = "exit 3";
  s.agent_restart_delay = std::chrono::milliseconds(20);
  s.backoff.stable_uptime = std::chrono::hours(1);
  s.backoff.limit = 2;
  s.kill_timeout = std::chrono::milliseconds(2000);
  clutch::supervisor::engine e(io, s);
  std::vector<std::string> log;
  e.on_log([&](const std::string& line) { log.push_back(line); });
  ASSERT_FALSE(e.start());
  ASSERT_TRUE(run_until(io, [&] { return !e.last_error().empty(); })) << testing::PrintToString(log);
  EXPECT_NE(e.last_error().find("the agent exited 2 times in a row; it is not started again"), std::string::npos)
      << e.last_error();
  auto count = [&](const std::string& what) {
    return std::count_if(log.begin(), log.end(), [&](const std::string& l) { return l.find(what) != l.npos; });
  };
  EXPECT_EQ(count("the agent starts again in 20 ms"), 1) << testing::PrintToString(log);
  EXPECT_EQ(count("the agent starts again in 30 ms"), 1) << testing::PrintToString(log);
  // Longer than any back-off it would wait now: no fourth agent.
  run_until(io, [] { return false; }, std::chrono::seconds(1));
  EXPECT_EQ(count(") started"), 4) << "3 agents and the worker: " << testing::PrintToString(log);
  const auto ps = e.processes();
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_FALSE(ps[0].tag.agent);
  EXPECT_EQ(ps[0].state, clutch::supervisor::process_info::state::ready);
  bool stopped = false;
  e.stop([&] { stopped = true; });
  EXPECT_TRUE(run_until(io, [&] { return stopped; }));
  EXPECT_EQ(e.processes().size(), 0u);
}

TEST(ClutchRunAgent, TheAgentStartsFirstIsRestartedAndStopsLast) {
  clutch_run c({"run", "--workers", "2", "--ready", "notify", "--kill-timeout", "2000", "--agent",
                self() + " --helper watchdog-pinger 50 0", "--", self(), "--helper", "watchdog-pinger", "50", "0"});
  ASSERT_TRUE(c.wait_for(") started", 3)) << c.err;
  // The agent first; the workers only once it said READY=1.
  const auto agent_started = c.err.find("agent (pid");
  ASSERT_NE(agent_started, std::string::npos) << c.err;
  EXPECT_LT(c.err.find("agent (pid", agent_started + 1), c.err.find("worker 1 (pid")) << c.err;  // its "ready"
  const int agent = std::stoi(c.err.substr(agent_started + 10));
  ::kill(agent, SIGKILL);
  ASSERT_TRUE(c.wait_for("the agent starts again in 1 s")) << c.err;
  ASSERT_TRUE(c.wait_for("agent (pid", 4)) << c.err;  // started, ready, killed, and the new one started
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
  // Stopped last: after both workers.
  EXPECT_GT(c.err.rfind("agent (pid"), c.err.rfind("worker ")) << c.err;
}

}  // namespace

namespace {

TEST(ClutchRunSignals, Usr1IsPassedOnToEveryWorker) {
  clutch_run c({"run", "--workers", "2", "--", self(), "--helper", "say-usr1"});
  auto count = [&](const std::string& what) { return clutch_test::whole_lines_with(c.out, what); };
  ASSERT_TRUE(run_until(c.io, [&] { return count("waiting ") == 2; })) << c.err;
  ::kill(c.proc.pid(), SIGUSR1);
  ASSERT_TRUE(run_until(c.io, [&] { return count("usr1 ") == 2; })) << c.out << c.err;
  for (int pid : c.started()) EXPECT_NE(c.out.find("usr1 " + std::to_string(pid)), std::string::npos) << c.out;
  ::kill(c.proc.pid(), SIGTERM);
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}

}  // namespace
