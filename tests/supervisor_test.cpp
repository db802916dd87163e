// The supervisor's pieces, each with real processes: the NOTIFY_SOCKET server, and the systemd socket-passing
// variables a worker gets.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <vector>

#include "helpers.hpp"
#include "supervisor/listen.hpp"
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
