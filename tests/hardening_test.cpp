// Never take down what is not ours: one app that cannot start, one hostile local user or one full fd table must
// not stop the supervisor, its other apps, or anything clutch did not start. End to end, with the real `clutch`
// binary, real workers, and a real second uid (65534) for the hostile one.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "helpers.hpp"
#include "os/proc_stat.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

using clutch_test::eventually;
using clutch_test::free_port;

constexpr uid_t nobody = 65534;

long long cpu_ticks(int pid) {
  const auto st = clutch::os::read_proc_stat(pid);
  return st ? static_cast<long long>(st->utime + st->stime) : 0;
}



// A daemon in the foreground, started by the test itself and so in the test's own process group: a signal sent
// to "clutch's own group" would reach the test, and any sibling the test starts.
struct foreground_daemon {
  std::string home;
  unsigned short metrics = free_port();
  asio::io_context io;
  clutch::child proc;

  foreground_daemon() {
    char tmpl[] = "/tmp/clutch-h-XXXXXX";  // short: a Unix socket's path has 107 bytes at most
    home = ::mkdtemp(tmpl);
    clutch::options o;
    o.env = clutch::environment::add({{"CLUTCH_HOME", home}});
    o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ignore};
    // Its log to a file (exec: the shell's pid becomes the daemon's), to be read even when it cannot answer.
    proc = clutch::spawn(io, "/bin/sh",
                         {"-c", "exec \"$0\" daemon --metrics-port \"$1\" 2>>\"$2\"", clutch_test::clutch_binary(),
                          std::to_string(metrics), home + "/test-daemon.log"},
                         o);
    eventually([&] { return fs::exists(home + "/clutch.sock"); });
  }
  bool logged(const std::string& what, std::chrono::seconds limit = 60s) {
    return eventually(
        [&] {
          std::ifstream in(home + "/test-daemon.log");
          std::stringstream text;
          text << in.rdbuf();
          return text.str().find(what) != std::string::npos;
        },
        limit);
  }
  ~foreground_daemon() {
    if (proc.pid() > 1 && clutch_test::process_alive(proc.pid())) {
      cli({"kill"});
      clutch_test::run_until(io, [&] { return proc.exit().has_value(); }, 20s);
      if (!proc.exit()) proc.kill(SIGKILL);  // its workers die with it (their death signal)
    }
    clutch_test::run_until(io, [&] { return proc.exit().has_value(); }, 10s);
    std::error_code ec;
    fs::remove_all(home, ec);
  }

  struct result {
    int code;
    std::string out, err;
  };
  result cli(std::vector<std::string> args) {
    clutch::options o;
    o.env = clutch::environment::add({{"CLUTCH_HOME", home}});
    o.timeout = 60s;
    auto r = clutch::spawn_sync(clutch_test::clutch_binary(), args, o);
    return {r.status.code.value_or(-1), r.out, r.err};
  }
  json::object status(const std::string& app) {
    auto r = cli({"status", app, "--json"});
    json::error_code ec;
    auto v = json::parse(r.out, ec);
    return !ec && v.is_object() ? v.as_object() : json::object{};
  }
  std::string state(const std::string& app) {
    auto s = status(app);
    return s.contains("state") ? std::string(s.at("state").as_string()) : std::string();
  }
  std::vector<int> ready_pids(const std::string& app) {
    std::vector<int> out;
    auto s = status(app);
    if (!s.contains("processes")) return out;
    for (const auto& p : s.at("processes").as_array())
      if (p.at("state").as_string() == "ready") out.push_back(static_cast<int>(p.at("pid").to_number<double>()));
    return out;
  }
  unsigned short port(const std::string& app) {
    auto s = status(app);
    if (!s.contains("listen") || s.at("listen").as_array().empty()) return 0;
    const std::string at(s.at("listen").as_array()[0].as_string());
    return static_cast<unsigned short>(std::stoi(at.substr(at.rfind(':') + 1)));
  }
  bool alive() { return clutch_test::process_alive(proc.pid()); }
};

// Requests to one port in a loop on a thread of its own, until stopped: how many were answered, how many not.
struct request_loop {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread t;
  explicit request_loop(unsigned short port) {
    t = std::thread([this, port] {
      while (!stop) {
        if (clutch_test::http_request(port).first == 200) ++ok;
        else ++failed;
      }
    });
  }
  ~request_loop() { finish(); }
  void finish() {
    stop = true;
    if (t.joinable()) t.join();
  }
};

// A process of the test's own, in the test's (and so the foreground daemon's) process group.
struct sibling {
  asio::io_context io;
  clutch::child c = clutch::spawn(io, "sleep", {"600"});
  bool alive() { return clutch_test::process_alive(c.pid()) && !c.exit(); }
  ~sibling() {
    c.kill(SIGKILL);
    clutch_test::run_until(io, [&] { return c.exit().has_value(); }, 5s);
  }
};

std::vector<std::string> start_args(std::vector<std::string> opts, const std::vector<std::string>& program) {
  std::vector<std::string> a{"start"};
  a.insert(a.end(), opts.begin(), opts.end());
  a.push_back("--");
  a.insert(a.end(), program.begin(), program.end());
  return a;
}

std::vector<std::string> good_app(const std::string& name) {
  auto server = clutch_test::helper_args("listen-fd-serve", {"--notify"});
  server.insert(server.begin(), clutch_test::self());
  return start_args({"--name", name, "--workers", "2", "--listen", "127.0.0.1:0", "--ready", "notify"}, server);
}

// Starts the good app and waits until both of its workers answer.
unsigned short start_good(foreground_daemon& d, const std::string& name) {
  auto r = d.cli(good_app(name));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(eventually([&] { return d.ready_pids(name).size() == 2; })) << json::serialize(d.status(name));
  return d.port(name);
}

std::string last_error(foreground_daemon& d, const std::string& app) {
  auto s = d.status(app);
  return s.contains("last_error") ? std::string(s.at("last_error").as_string()) : std::string();
}

// ---- an app that cannot start --------------------------------------------------------------------------------

TEST(Hardening, AppsThatCannotStartEndErroredAndNothingElseNotices) {
  foreground_daemon d;
  ASSERT_TRUE(d.alive());
  sibling sib;
  const auto port = start_good(d, "good");
  ASSERT_NE(port, 0);
  char tmpl[] = "/tmp/clutch-x-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/not-exec") << "#!/bin/sh\necho never\n";  // mode 0644: exec says EACCES
  request_loop loop(port);

  struct bad {
    std::string name;
    std::vector<std::string> start;
    std::string expected;  // in the app's last error
  };
  const std::vector<bad> bads = {
      {"missing", start_args({"--name", "missing", "--workers", "2"}, {"/nonexistent/prog"}),
       "spawn failed at exec: No such file or directory"},
      {"nocwd", start_args({"--name", "nocwd", "--cwd", "/nonexistent/dir"}, {"sleep", "600"}),
       "spawn failed at chdir: No such file or directory"},
      {"noexec", start_args({"--name", "noexec"}, {dir + "/not-exec"}), "spawn failed at exec: Permission denied"},
      // (uid_t)-1 is no user: setuid refuses it (and a daemon that is not root may not take another uid at all).
      {"nocreds", start_args({"--name", "nocreds", "--uid", "4294967295", "--cwd", "/"}, {"sleep", "600"}),
       "spawn failed at credentials: "},
  };
  for (const auto& b : bads) {
    auto r = d.cli(b.start);
    EXPECT_EQ(r.code, 0) << b.name << ": " << r.err;  // the app is defined; its workers fail, one slot at a time
  }
  for (const auto& b : bads) {
    EXPECT_TRUE(eventually([&] { return d.state(b.name) == "errored"; }, 60s)) << json::serialize(d.status(b.name));
    EXPECT_NE(last_error(d, b.name).find(b.expected), std::string::npos) << last_error(d, b.name);
    auto text = d.cli({"status", b.name});
    EXPECT_NE(text.out.find(b.expected), std::string::npos) << text.out;
  }
  loop.finish();
  EXPECT_EQ(loop.failed, 0) << "of " << loop.ok + loop.failed << " requests to the other app";
  EXPECT_GT(loop.ok, 0);
  EXPECT_TRUE(sib.alive()) << "a process in clutch's own process group";
  EXPECT_TRUE(d.alive());
  EXPECT_EQ(d.ready_pids("good").size(), 2u);
  auto ls = d.cli({"ls"});
  EXPECT_EQ(ls.code, 0);
  EXPECT_NE(ls.out.find("errored"), std::string::npos) << ls.out;

  // Asked to stop, an app is stopped, not errored; started by name, an errored one is tried again.
  ASSERT_EQ(d.cli({"stop", "good"}).code, 0);
  EXPECT_EQ(d.state("good"), "stopped");
  auto again = d.cli({"start", "good"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_TRUE(eventually([&] { return d.ready_pids("good").size() == 2; }));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(Hardening, AWorkerStartThatRunsOutOfDescriptorsFailsThatSlotOnly) {
  foreground_daemon d;
  sibling sib;
  const auto port = start_good(d, "good");
  ASSERT_NE(port, 0);
  ASSERT_EQ(d.cli(start_args({"--name", "fd", "--workers", "1"}, {"sleep", "600"})).code, 0);
  ASSERT_TRUE(eventually([&] { return d.ready_pids("fd").size() == 1; }));
  const int victim = d.ready_pids("fd").front();
  request_loop loop(port);

  // The daemon's descriptor table, full: its soft limit below what it holds now, so that no new one can be made.
  std::size_t open = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(d.proc.pid()) + "/fd")) ++open;
  rlimit old{}, tight{};
  ASSERT_EQ(::prlimit(d.proc.pid(), RLIMIT_NOFILE, nullptr, &old), 0);
  tight = old;
  tight.rlim_cur = open > 8 ? open - 8 : 1;
  ASSERT_EQ(::prlimit(d.proc.pid(), RLIMIT_NOFILE, &tight, nullptr), 0);
  ::kill(victim, SIGKILL);  // a worker of the daemon this test started; its replacement cannot get its pipes
  // Clients knock meanwhile, on the status port and the control socket: the daemon cannot accept them, and must
  // wait for descriptors rather than spin on accept (a spin would burn a whole CPU for the rest of the test).
  asio::io_context io;
  asio::ip::tcp::socket knock(io);
  knock.connect({asio::ip::address_v4::loopback(), d.metrics});
  int control = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const auto sock_path = d.home + "/clutch.sock";
  std::memcpy(sa.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::connect(control, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  const auto cpu_before = cpu_ticks(d.proc.pid());
  // Its log, not a request: a request would need a descriptor in the daemon too.
  EXPECT_TRUE(d.logged("crashed too often in a row; given up")) << "the slot's back-off ran its course";
  std::this_thread::sleep_for(2s);  // and the knocking goes on a little after
  const auto cpu_used = cpu_ticks(d.proc.pid()) - cpu_before;
  const long per_second = ::sysconf(_SC_CLK_TCK);
  // Generous: a spin takes all of the ~9 s this waited; waiting for descriptors takes next to nothing.
  EXPECT_LT(cpu_used, 3 * per_second) << "the daemon spun at EMFILE";
  ::close(control);
  ASSERT_EQ(::prlimit(d.proc.pid(), RLIMIT_NOFILE, &old, nullptr), 0);

  EXPECT_TRUE(eventually([&] { return d.state("fd") == "errored"; }, 30s)) << json::serialize(d.status("fd"));
  EXPECT_NE(last_error(d, "fd").find("Too many open files"), std::string::npos) << last_error(d, "fd");
  loop.finish();
  EXPECT_EQ(loop.failed, 0) << "of " << loop.ok + loop.failed << " requests to the other app";
  EXPECT_TRUE(sib.alive());
  EXPECT_TRUE(d.alive());
  EXPECT_EQ(d.ready_pids("good").size(), 2u);
}

TEST(Hardening, ClutchRunOfAProgramThatCannotStartEndsByItselfAndSignalsNobody) {
  asio::io_context io;
  sibling sib;
  clutch::options o;
  o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::pipe};
  o.timeout = 60s;
  std::string err;
  auto run = clutch::spawn(io, clutch_test::clutch_binary(), {"run", "--workers", "2", "--", "/nonexistent/prog"}, o);
  run.on_data(clutch::child::err, [&](std::string_view s) { err += s; });
  ASSERT_TRUE(clutch_test::run_until(io, [&] { return run.exit().has_value(); }, 60s)) << err;
  ASSERT_TRUE(run.exit()->code.has_value()) << "ended by a signal: " << run.exit()->signal.value_or(0) << "\n" << err;
  EXPECT_NE(*run.exit()->code, 0);
  EXPECT_NE(err.find("spawn failed at exec: No such file or directory"), std::string::npos) << err;
  EXPECT_NE(err.find("given up"), std::string::npos) << err;
  EXPECT_TRUE(sib.alive()) << "a process in clutch's own process group";
}

// ---- a hostile local user ------------------------------------------------------------------------------------

// A copy of the test binary that another uid can run, whatever folder the checkout is in (a 0700 home).
struct reachable_copy {
  std::string dir, path;
  reachable_copy() {
    char tmpl[] = "/tmp/clutch-r-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::chmod(dir.c_str(), 0755);
    path = dir + "/clutch_tests";
    fs::copy_file(clutch_test::self(), path);
    ::chmod(path.c_str(), 0755);
  }
  ~reachable_copy() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

// The abstract names of the daemon's Unix datagram sockets (its notify sockets), from /proc.
std::vector<std::string> abstract_datagram_names(int pid) {
  std::set<std::string> inodes;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    const auto target = fs::read_symlink(e.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<std::string> out;
  std::ifstream unix_table("/proc/net/unix");
  std::string line;
  std::getline(unix_table, line);  // the header
  while (std::getline(unix_table, line)) {
    std::istringstream in(line);
    std::string num, refs, proto, flags, type, st, inode, path;
    in >> num >> refs >> proto >> flags >> type >> st >> inode >> path;
    if (type == "0002" && inodes.count(inode) && path.size() > 1 && path[0] == '@') out.push_back(path.substr(1));
  }
  return out;
}

struct as_nobody {
  asio::io_context io;
  clutch::child c;
  std::string out;
  as_nobody(const std::string& program, std::vector<std::string> args) {
    clutch::options o;
    o.uid = nobody;
    o.gid = nobody;
    o.cwd = "/";
    o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::inherit};
    c = clutch::spawn(io, program, args, o);
    c.on_data(clutch::child::out, [this](std::string_view s) { out += s; });
  }
  bool said(const std::string& what) {
    return clutch_test::run_until(io, [&] { return out.find(what) != std::string::npos || c.exit(); }, 30s) &&
           out.find(what) != std::string::npos;
  }
  ~as_nobody() {
    c.kill(SIGKILL);
    clutch_test::run_until(io, [&] { return c.exit().has_value(); }, 5s);
  }
};

TEST(Hardening, AnotherUserCannotStopTheDaemonOrItsApps) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  foreground_daemon d;
  ASSERT_TRUE(d.alive());
  reachable_copy copy;

  // The names a notify socket of the daemon's would once have had, taken first.
  as_nobody squatter(copy.path, {"--helper", "hostile-squat", std::to_string(d.proc.pid()), "64"});
  ASSERT_TRUE(squatter.said("squatted")) << squatter.out;
  const auto port = start_good(d, "good");
  ASSERT_NE(port, 0);
  const auto before = d.ready_pids("good");
  ASSERT_EQ(before.size(), 2u);

  // Garbage to every socket of the daemon's that another uid can reach: its notify socket(s), its status port.
  const auto names = abstract_datagram_names(d.proc.pid());
  ASSERT_FALSE(names.empty());
  std::vector<std::string> garbage_args{"--helper", "hostile-garbage", std::to_string(d.metrics)};
  garbage_args.insert(garbage_args.end(), names.begin(), names.end());
  as_nobody garbage(copy.path, garbage_args);
  ASSERT_TRUE(garbage.said("sent")) << garbage.out;

  // 1500 connections to the status port, held open.
  as_nobody holder(copy.path, {"--helper", "hostile-hold", std::to_string(d.metrics), "1500"});
  ASSERT_TRUE(holder.said("holding")) << holder.out;

  // Meanwhile a worker dies: it is replaced, and the app serves.
  ::kill(before[0], SIGKILL);
  EXPECT_TRUE(eventually([&] {
    auto now = d.ready_pids("good");
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  })) << json::serialize(d.status("good"));
  EXPECT_TRUE(eventually([&] { return clutch_test::http_request(port).first == 200; }));

  // Bad clients of its own user on the control socket: each one's trouble is its own.
  for (const std::string& junk : {std::string("not json\n"), std::string("[1,2,3]\n"), std::string(100000, 'x'),
                                 std::string("{\"cmd\": \"start\", \"apps\": [1]}\n"), std::string("{\"cmd\"")}) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    const auto path = d.home + "/clutch.sock";
    std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    [[maybe_unused]] auto n = ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    ::close(fd);  // and hang up at once
  }
  auto ls = d.cli({"ls"});
  EXPECT_EQ(ls.code, 0) << ls.err;
  EXPECT_NE(ls.out.find("good"), std::string::npos) << ls.out;

  // The status port serves again once the idle connections it admitted have timed out, while the 1500 are
  // still held.
  EXPECT_TRUE(eventually([&] { return clutch_test::http_request(d.metrics, "/api/status").first == 200; }, 30s));
  EXPECT_FALSE(holder.c.exit().has_value()) << "the holder still holds its connections";
  EXPECT_TRUE(d.alive());
  EXPECT_EQ(d.ready_pids("good").size(), 2u);
}

}  // namespace

// The hostile-* helpers, run as uid 65534 by the tests above.
namespace clutch_test {

int run_hostile_helper(std::string_view name, int argc, char** argv) {
  auto arg = [&](int i) -> std::string { return i < argc ? argv[i] : std::string(); };
  if (name == "hostile-squat") {  // PID N: bind the abstract names "clutch-notify-PID-0" … "-(N-1)"
    const int n = std::atoi(arg(2).c_str());
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
      const std::string taken = "clutch-notify-" + arg(1) + "-" + std::to_string(i);
      int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::memcpy(sa.sun_path + 1, taken.data(), taken.size());
      if (::bind(fd, reinterpret_cast<sockaddr*>(&sa),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + taken.size())) == 0)
        fds.push_back(fd);
    }
    std::printf("squatted %zu\n", fds.size());
    std::fflush(stdout);
    ::pause();
    return 0;
  }
  if (name == "hostile-garbage") {  // PORT NAME…: junk datagrams to each abstract name, junk HTTP to the port
    int sent = 0;
    const std::string forged = "READY=1\nWATCHDOG=1\nSTATUS=owned\nMAINPID=1\n";
    for (int i = 2; i < argc; ++i) {
      int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      const std::string to = argv[i];
      std::memcpy(sa.sun_path + 1, to.data(), to.size());
      const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + to.size());
      for (int k = 0; k < 200; ++k) {
        std::string junk = k % 3 == 0 ? forged : std::string(static_cast<std::size_t>(1 + (k * 977) % 60000), '\xff');
        if (::sendto(fd, junk.data(), junk.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&sa), len) >= 0) ++sent;
      }
      ::close(fd);
    }
    const auto port = static_cast<unsigned short>(std::atoi(arg(1).c_str()));
    for (const std::string& junk : {std::string("\x16\x03\x01 binary\r\n\r\n"), std::string(70000, 'A'),
                                   std::string("GET /") + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n",
                                   std::string("POST /api/status HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")}) {
      boost::asio::io_context io;
      boost::asio::ip::tcp::socket s(io);
      boost::system::error_code ec;
      s.connect({boost::asio::ip::address_v4::loopback(), port}, ec);
      if (!ec) boost::asio::write(s, boost::asio::buffer(junk), ec);
      ++sent;
    }
    std::printf("sent %d\n", sent);
    std::fflush(stdout);
    ::pause();
    return 0;
  }
  if (name == "hostile-hold") {  // PORT COUNT: that many connections to 127.0.0.1:PORT, held open
    rlimit lim{};
    ::getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    const int count = std::atoi(arg(2).c_str());
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<unsigned short>(std::atoi(arg(1).c_str())));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int held = 0;
    for (int i = 0; i < count; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) break;
      // Non-blocking: past the server's backlog a connect would wait; the attempt itself is what costs it.
      if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 || errno == EINPROGRESS) ++held;
      if (i % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::printf("holding %d\n", held);
    std::fflush(stdout);
    ::pause();
    return 0;
  }
  std::fprintf(stderr, "unknown helper %.*s\n", static_cast<int>(name.size()), name.data());
  return 99;
}

}  // namespace clutch_test
