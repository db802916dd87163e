// Node's cluster protocol served by clutch: real Node programs that know nothing of clutch (tests/fixtures/
// node_server.js calls listen() as Node's docs do), under the real `clutch run` and daemon, with real requests.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/parse.hpp>
#include <atomic>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "clutch/child_process.hpp"
#include "clutch_run.hpp"
#include "helpers.hpp"
#include "node_server.hpp"

namespace {

using namespace std::chrono_literals;
using clutch_test::clutch_run;
using clutch_test::free_port;
using clutch_test::run_until;
using clutch_test::temp_dir;
using namespace clutch_test::node_server;

std::vector<std::string> run_args(std::vector<std::string> opts) {
  std::vector<std::string> a{"run"};
  a.insert(a.end(), opts.begin(), opts.end());
  a.insert(a.end(), {"--", "node", server_js});
  return a;
}

// bench/hello.js answers "hello from PID": the distinct pids seen, until `n` (bounded).
std::set<int> answers_from_hello(unsigned short port, std::size_t n) {
  std::set<int> pids;
  for (auto end = std::chrono::steady_clock::now() + 20s; pids.size() < n && std::chrono::steady_clock::now() < end;) {
    auto [code, body] = clutch_test::http_request(port);
    if (code == 200 && body.rfind("hello from ", 0) == 0) pids.insert(std::stoi(body.substr(11)));
  }
  return pids;
}

void stop_cleanly(clutch_run& c) {
  ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGTERM));
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
  // Node's disconnect closed every server; each worker then ended by itself, with code 0.
  EXPECT_EQ(c.exit->code, 0) << c.err;
}

TEST(NodeCluster, AnAppThatListensOnItsOwnPortIsServedByEveryWorkerAsInstances0To1) {
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err << c.out;
  auto seen = answers_from(port, 2);
  ASSERT_EQ(seen.size(), 2u) << c.err;
  EXPECT_TRUE(seen.contains("0") && seen.contains("1"));
  EXPECT_TRUE(get(port).worker) << "cluster.isWorker is true inside";
  const auto started = c.started();
  for (const auto& [instance, pid] : seen) EXPECT_NE(std::find(started.begin(), started.end(), pid), started.end());
  stop_cleanly(c);
  EXPECT_EQ(c.err.find("killed by"), std::string::npos) << c.err;
}

// The killed worker's slot keeps its socket: connections meant for it wait there for its replacement, which has
// the same instance number.
TEST(NodeCluster, AKilledWorkerIsReplacedInItsOwnInstanceAndNoRequestFails) {
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
  auto before = answers_from(port, 2);
  ASSERT_EQ(before.size(), 2u);
  ASSERT_TRUE(clutch_test::signal_ours(before["0"], SIGKILL));
  int failed = 0;
  std::map<std::string, int> after;
  for (auto end = std::chrono::steady_clock::now() + 20s;
       (after.size() < 2 || after["0"] == before["0"]) && std::chrono::steady_clock::now() < end;) {
    auto a = get(port);
    failed += a.pid == 0;
    if (a.pid) after[a.instance] = a.pid;
  }
  EXPECT_NE(after["0"], before["0"]) << c.err;
  EXPECT_NE(after["0"], 0) << c.err;
  EXPECT_EQ(after["1"], before["1"]);
  EXPECT_EQ(failed, 0) << c.err;
  stop_cleanly(c);
}

// A handler-less app (SIGTERM would kill it mid-request) reloaded while a client keeps asking: Node's disconnect
// comes first, so each old worker finishes what it has and exits by itself.
TEST(NodeCluster, AReloadUnderARequestLoopLosesNoRequestAndKeepsTheInstances) {
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
  auto before = answers_from(port, 2);
  ASSERT_EQ(before.size(), 2u);
  std::atomic<bool> done{false};
  std::atomic<int> failed{0}, served{0};
  std::thread client([&] {
    while (!done) (get(port).pid ? served : failed)++;
  });
  ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGHUP));
  const bool reloaded = c.wait_for("reload done");
  done = true;
  client.join();
  ASSERT_TRUE(reloaded) << c.err;
  EXPECT_EQ(failed, 0) << c.err;
  EXPECT_GT(served, 0);
  auto after = answers_from(port, 2);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_NE(after["0"], before["0"]);
  EXPECT_NE(after["1"], before["1"]);
  EXPECT_NE(c.err.find("exited with code 0"), std::string::npos) << c.err;
  stop_cleanly(c);
}

// What wrk does to a reload: kept-alive connections, each asking again as soon as it has its answer. bench/hello.js
// unchanged, with no signal handler and with the graceful one of docs/pm2-migration.md: clutch's preload closes
// the first's servers for it (every answer from then on says Connection: close) and gives the second its signal.
// Node's own disconnect would fail a request on each connection idle at that moment (http.Server.close).
class NodeKeepAlive : public testing::TestWithParam<const char*> {};
TEST_P(NodeKeepAlive, AReloadUnderKeptAliveConnectionsFailsNoRequest) {
  const auto port = free_port();
  const bool no_handler = std::string_view(GetParam()) == "no handler";
  clutch_run c({"run", "--workers", "2", "--", "node", CLUTCH_FIXTURES "/../../bench/hello.js"},
               {{"PORT", std::to_string(port)}, {"HELLO_NO_HANDLER", no_handler ? "1" : "0"}});
  ASSERT_TRUE(c.wait_for("listening on")) << c.err;
  ASSERT_EQ(answers_from_hello(port, 2).size(), 2u) << c.err;
  std::atomic<bool> done{false};
  load_totals t;
  std::thread load([&] { keep_alive_load(port, 16, done, t); });
  std::this_thread::sleep_for(300ms);  // every connection open and busy
  ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGHUP));
  const bool reloaded = c.wait_for("reload done");
  std::this_thread::sleep_for(300ms);
  done = true;
  load.join();
  ASSERT_TRUE(reloaded) << c.err;
  EXPECT_EQ(t.failed, 0) << c.err;
  EXPECT_GT(t.served, 100);
  EXPECT_GE(t.told_to_close, 16);  // each connection was told to go elsewhere, once per old worker it was on
  if (no_handler) {
    EXPECT_NE(c.err.find("exited with code 0"), std::string::npos) << c.err;  // ended by itself
  }
  ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGTERM));
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
  EXPECT_EQ(c.exit->code, 0) << c.err;
}
INSTANTIATE_TEST_SUITE_P(HelloJs, NodeKeepAlive, testing::Values("no handler", "graceful"),
                         [](const auto& p) { return std::string(p.param) == "graceful" ? "graceful" : "no_handler"; });

TEST(NodeCluster, TheAppSeesNodesOwnBindError) {
  // Someone else holds the port: the worker's listen() fails with EADDRINUSE, as it would under Node's primary.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor other(io, {boost::asio::ip::address_v6::any(), 0});
  const auto port = other.local_endpoint().port();
  clutch_run c(run_args({"--workers", "1", "--restart", "never"}), {{"PORT", std::to_string(port)}});
  ASSERT_TRUE(c.wait_out("error EADDRINUSE")) << c.err << c.out;
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
}

// Node's primary keys a listen(0) by its call's index: every worker's first server shares one port, every
// worker's second server another.
TEST(NodeCluster, ListenZeroGivesTheNthServerOfEveryWorkerTheSamePort) {
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", "0"}, {"SERVERS", "2"}});
  ASSERT_TRUE(c.wait_out("ports", 2)) << c.err;
  std::set<std::string> lines;
  for (auto at = c.out.find("ports "); at != std::string::npos; at = c.out.find("ports ", at + 1))
    lines.insert(c.out.substr(at, c.out.find('\n', at) - at));
  ASSERT_EQ(lines.size(), 1u) << c.out;
  std::istringstream in(lines.begin()->substr(6));
  unsigned short a = 0, b = 0;
  in >> a >> b;
  EXPECT_NE(a, 0);
  EXPECT_NE(a, b);
  EXPECT_EQ(answers_from(a, 2).size(), 2u);
  EXPECT_EQ(answers_from(b, 2).size(), 2u);
  stop_cleanly(c);
}

TEST(NodeCluster, UnixSocketPathsAndIpv6Work) {
  temp_dir d;
  const std::string path = d.path + "/app.sock";
  {
    clutch_run c(run_args({"--workers", "2"}), {{"SOCKET_PATH", path}});
    ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
    // One socket that both workers accept from: which one wins is the kernel's choice, so ask until both have.
    std::set<std::string> instances;
    for (auto end = std::chrono::steady_clock::now() + 20s; instances.size() < 2 && std::chrono::steady_clock::now() < end;) {
      auto [code, body] = clutch_test::http_request_unix(path);
      if (code == 200) instances.insert(parse(body).instance);
    }
    EXPECT_EQ(instances.size(), 2u) << c.err;
    // Not stop_cleanly: about one stop in ten, a worker on a shared Unix socket never reads the stop message
    // clutch wrote to its channel (Node 20 and 22; with Node's own disconnect too) and is ended at kill_timeout.
    // Noted in docs/ARCHITECTURE.md's known debt until it is understood.
    ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGTERM));
    ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); })) << c.err;
    EXPECT_TRUE(c.exit->code == 0 || c.exit->code == 128 + SIGTERM) << c.err;
    EXPECT_FALSE(std::filesystem::exists(path)) << "the socket file clutch made is left behind";
  }
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}, {"HOST", "::1"}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
  std::set<std::string> instances;
  for (auto end = std::chrono::steady_clock::now() + 20s; instances.size() < 2 && std::chrono::steady_clock::now() < end;) {
    auto [code, body] = clutch_test::http_request_v6(port);
    if (code == 200) instances.insert(parse(body).instance);
  }
  EXPECT_EQ(instances.size(), 2u) << c.err;
  EXPECT_EQ(clutch_test::http_request(port).first, 0) << "::1 only, not 127.0.0.1";
  stop_cleanly(c);
}

// server.close() in one worker (Node's close act): new connections go to the other worker only.
TEST(NodeCluster, AServerClosedInOneWorkerGetsNoNewConnection) {
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}, {"CLOSE_IN", "0"}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err << c.out;  // instance 1 too, or a request finds no one
  ASSERT_TRUE(c.wait_out("closed")) << c.err << c.out;
  int from_0 = 0, from_1 = 0;
  for (int i = 0; i < 40; ++i) {
    auto a = get(port);
    from_0 += a.instance == "0";
    from_1 += a.instance == "1";
  }
  EXPECT_EQ(from_0, 0);
  EXPECT_EQ(from_1, 40) << c.err;
  stop_cleanly(c);
}

// https and http2 servers hand their TLS ticket keys to the primary (_getServerData); every worker gets the
// first one's, so that a session resumes on any of them.
TEST(NodeCluster, HttpsAndHttp2WorkersShareTheirTicketKeys) {
  temp_dir d;
  auto gen = clutch::spawn_sync("openssl", {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                            d.path + "/key.pem", "-out", d.path + "/cert.pem", "-subj",
                                            "/CN=localhost", "-days", "1"});
  ASSERT_EQ(gen.status.code, 0) << gen.err;
  clutch_run c(run_args({"--workers", "2"}),
               {{"PORT", "0"}, {"TLS", d.path + "/key.pem:" + d.path + "/cert.pem"}});
  ASSERT_TRUE(c.wait_out("tickets", 2)) << c.err << c.out;
  std::set<std::string> tickets, ports;
  for (auto at = c.out.find("tickets "); at != std::string::npos; at = c.out.find("tickets ", at + 1))
    tickets.insert(c.out.substr(at, c.out.find('\n', at) - at));
  for (auto at = c.out.find("ports "); at != std::string::npos; at = c.out.find("ports ", at + 1))
    ports.insert(c.out.substr(at + 6, c.out.find(' ', at + 6) - at - 6));
  EXPECT_EQ(tickets.size(), 1u) << c.out;
  ASSERT_EQ(ports.size(), 1u) << c.out;
  // A real TLS request through the shared https port, from Node.
  auto r = clutch::spawn_sync(
      "node", {"-e", "require('https').get({port: " + *ports.begin() +
                         ", rejectUnauthorized: false}, (res) => res.pipe(process.stdout)).on('error', (e) => "
                         "{ console.error(e); process.exit(1); })"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_TRUE(parse(r.out).worker) << r.out;
  stop_cleanly(c);
}

// PM2's wait_ready: a worker is ready once it sends 'ready'; one that never does is not ready in time.
TEST(NodeCluster, ReadyMessageIsWaitedFor) {
  {
    const auto port = free_port();
    clutch_run c(run_args({"--workers", "2", "--ready", "message"}),
                 {{"PORT", std::to_string(port)}, {"READY_AFTER", "200"}});
    ASSERT_TRUE(c.wait_for(") ready", 2)) << c.err;
    ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGHUP));
    ASSERT_TRUE(c.wait_for("reload done")) << c.err;
    EXPECT_TRUE(c.wait_for(") ready", 4)) << c.err;
    stop_cleanly(c);
  }
  clutch_run c(run_args({"--workers", "1", "--ready", "message", "--ready-timeout", "400"}),
               {{"PORT", std::to_string(free_port())}});
  ASSERT_TRUE(c.wait_for("not ready within 400 ms")) << c.err;
  EXPECT_EQ(c.err.find(") ready"), std::string::npos) << c.err;
}

// An app with a handler for the stop signal gets the signal, its server still open (its handler decides, as
// under PM2), whether it took clutch's socket from fd 3 or asked for its port; one without has its servers closed
// for it and ends by itself, with no signal. --signal-first (disconnect_first = false) skips the preload's part.
TEST(NodeCluster, AnAppThatHandlesTheStopSignalGetsItAndOneWithoutEndsByItself) {
  for (const char* fd : {"1", ""}) {
    clutch_run c(run_args({"--workers", "2", "--listen", "127.0.0.1:0"}), {{"FD", fd}, {"ON_SIGTERM", "1"}, {"PORT", "0"}});
    ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
    stop_cleanly(c);
    EXPECT_TRUE(c.wait_out("got SIGTERM, listening: true", 2)) << c.out;
  }
  {
    clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(free_port())}});
    ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
    stop_cleanly(c);
    EXPECT_EQ(c.err.find("signal"), std::string::npos) << c.err;  // "exited with code 0" twice, no "killed by signal"
  }
  clutch_run c(run_args({"--workers", "2", "--signal-first"}), {{"PORT", std::to_string(free_port())}, {"ON_SIGTERM", "1"}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
  stop_cleanly(c);
  EXPECT_TRUE(c.wait_out("got SIGTERM, listening: true", 2)) << c.out;
}

TEST(NodeCluster, ShutdownMessageComesBeforeTheStop) {
  clutch_run c(run_args({"--workers", "2", "--shutdown-with-message"}),
               {{"PORT", std::to_string(free_port())}, {"ON_SHUTDOWN", "1"}});
  ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
  stop_cleanly(c);
  EXPECT_TRUE(c.wait_out("got shutdown", 2)) << c.out;
}

// A worker that sends what Node's never would (an unknown act, a malformed queryServer, a flood of 200 servers)
// gets refusals; clutch says so once, and the other worker serves on.
TEST(NodeCluster, AWorkerThatBreaksTheProtocolHarmsOnlyItself) {
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "2"}), {{"PORT", std::to_string(port)}, {"HOSTILE", "1"}});
  ASSERT_TRUE(c.wait_out("refused")) << c.err << c.out;
  const auto at = c.out.find("refused ");
  EXPECT_GE(std::stoi(c.out.substr(at + 8)), 130) << "at most 64 servers a worker";
  EXPECT_NE(c.err.find("'bogus' is not one clutch serves"), std::string::npos) << c.err;
  EXPECT_EQ(answers_from(port, 2).size(), 2u) << c.err;
  std::size_t fds = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(c.proc.pid()) + "/fd"))
    ++fds;
  EXPECT_LT(fds, 120u);
  stop_cleanly(c);
}

// A wrapper (a shell here; npm start in life) is told to speak it; a Node program can be told not to.
TEST(NodeCluster, AWrapperCanBeToldToSpeakItAndNodeToNot) {
  {
    const auto port = free_port();
    clutch_run c({"run", "--workers", "2", "--node-cluster", "--", "/bin/sh", "-c", "node " + server_js + "; exit $?"},
                 {{"PORT", std::to_string(port)}});
    ASSERT_TRUE(c.wait_out("listening", 2)) << c.err;
    EXPECT_EQ(answers_from(port, 2).size(), 2u) << c.err;
    stop_cleanly(c);
  }
  const auto port = free_port();
  clutch_run c(run_args({"--workers", "1", "--no-node-cluster"}), {{"PORT", std::to_string(port)}});
  ASSERT_TRUE(c.wait_out("listening")) << c.err;
  auto a = get(port);
  EXPECT_NE(a.pid, 0);
  EXPECT_FALSE(a.worker);
  ASSERT_TRUE(clutch_test::signal_ours(c.proc.pid(), SIGTERM));
  ASSERT_TRUE(run_until(c.io, [&] { return c.exit.has_value(); }));
}


// PM2's `pm2 start app.js -i 2`: the daemon's app is named after the script and node runs it.
TEST(NodeCluster, StartAScriptWithInstancesAsPm2Does) {
  const auto port = free_port();
  clutch_test::clutch_home clutch_cli;
  auto cli = [&](std::vector<std::string> args) { return clutch_cli(std::move(args), {{"PORT", std::to_string(port)}}); };
  auto r = cli({"start", server_js, "-i", "2"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("started node_server"), std::string::npos) << r.out;
  EXPECT_EQ(answers_from(port, 2).size(), 2u);
  auto ls = cli({"ls", "--json"});
  EXPECT_NE(ls.out.find("\"node_server\""), std::string::npos) << ls.out;
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}


}  // namespace
