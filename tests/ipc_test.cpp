// fork() and the message channel: against C++ children, against real Node.js on either end, and raw bytes.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <clutch/ipc.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "helpers.hpp"
#include "os/scm_rights.hpp"

using namespace std::chrono_literals;
using clutch_test::helper_args;
using clutch_test::self;
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string fixture(const std::string& name) { return std::string(CLUTCH_FIXTURES) + "/" + name; }

// Runs io in small steps until pred() holds (or 30 s pass: then the test fails on what it finds).
template <typename Pred>
void run_until(asio::io_context& io, Pred pred) {
  for (auto end = std::chrono::steady_clock::now() + 30s; !pred() && std::chrono::steady_clock::now() < end;) {
    io.run_for(5ms);
    io.restart();
  }
}

// Whether a socket has bytes waiting.
bool readable(int fd) {
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void run_bounded(asio::io_context& io, std::chrono::seconds limit = 60s) {
  io.run_for(limit);
  ASSERT_TRUE(io.stopped()) << "the io_context still had work after " << limit.count() << "s";
}

// Reads a whole TCP answer (until the peer closes).
std::string read_all(asio::ip::tcp::socket& s) {
  std::string out;
  boost::system::error_code ec;
  asio::read(s, asio::dynamic_buffer(out), ec);
  return out;
}

}  // namespace

TEST(Fork, ACppParentAndACppChildExchangeTheSeedsMessages) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  ASSERT_FALSE(c.spawn_error());
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    if (got.size() == 2) c.send("disconnect");
  });
  EXPECT_TRUE(c.send("你好啊，我的子进程！"));
  EXPECT_TRUE(c.send("我是子进程，我收到了！！"));
  std::optional<clutch::exit_status> st;
  c.async_wait([&](clutch::error_code ec, clutch::exit_status s) {
    EXPECT_FALSE(ec);
    st = s;
  });
  run_bounded(io);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "你好啊，我的子进程！");
  EXPECT_EQ(got[1], "我是子进程，我收到了！！");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 0);
  EXPECT_FALSE(c.connected());
}

TEST(Fork, ACppParentDrivesTheSeedsUnmodifiedNodeChild) {
  asio::io_context io;
  auto c = clutch::fork(io, fixture("child.js"), {}, {.silent = true});
  ASSERT_FALSE(c.spawn_error());
  std::string child_stdout;
  c.on_data(clutch::child::out, [&](std::string_view s) { child_stdout += s; });
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    c.disconnect();  // the Node child exits once its channel is gone
  });
  c.send("你好啊，我的子进程！");
  std::optional<clutch::exit_status> st;
  c.async_wait([&](clutch::error_code, clutch::exit_status s) { st = s; });
  run_bounded(io);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "我是子进程，我收到了！！");
  EXPECT_NE(child_stdout.find("子进程收到信息: 你好啊，我的子进程！"), std::string::npos) << child_stdout;
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 0);
}

TEST(Fork, ANodeParentForksACppChild) {
  auto r = clutch::exec_file_sync("node", {fixture("node_parent.js"), self()}, {.timeout = 60s});
  EXPECT_FALSE(r.error) << r.error.message();
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_EQ(r.out, "node parent: all echoed\n") << r.err;
}

TEST(Fork, ANodeParentPassesAnAcceptedSocketToACppChildWhichAnswersTheClient) {
  asio::io_context io;
  auto node = clutch::spawn(io, "node", {fixture("handle_parent.js"), self()}, {.timeout = 60s});
  std::string out;
  std::string answer;
  asio::ip::tcp::socket client(io);
  node.on_data(clutch::child::out, [&](std::string_view s) {
    bool first_line = out.find('\n') == std::string::npos;
    out += s;
    if (first_line && out.find('\n') != std::string::npos) {
      unsigned short port = static_cast<unsigned short>(std::atoi(out.c_str()));
      client.connect({asio::ip::make_address("127.0.0.1"), port});
      answer = read_all(client);
    }
  });
  std::optional<clutch::exit_status> st;
  node.async_wait([&](clutch::error_code, clutch::exit_status s) { st = s; });
  run_bounded(io);
  EXPECT_EQ(answer, "C++ child answers: from the node parent\n");
  EXPECT_NE(out.find("node parent: done"), std::string::npos) << out;
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 0);
}

TEST(Fork, ACppParentPassesAnAcceptedSocketToANodeChildWhichAnswersTheClient) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto c = clutch::fork(io, fixture("handle_child.js"));
  ASSERT_FALSE(c.spawn_error());
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    c.disconnect();
  });
  asio::ip::tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  asio::ip::tcp::socket accepted = acceptor.accept();
  clutch::error_code send_ec = asio::error::would_block;
  c.send("hello", clutch::handle(std::move(accepted)), [&](clutch::error_code ec) { send_ec = ec; });
  // The client reads in a thread of its own (blocking), and closes once answered, so the Node child's socket
  // can finish closing and the child exit.
  std::string answer;
  std::thread reader([&] {
    answer = read_all(client);
    client.close();
  });
  run_bounded(io);
  reader.join();
  EXPECT_FALSE(send_ec) << send_ec.message();
  EXPECT_EQ(answer, "node child answers: hello\n");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "answered");
}

TEST(Fork, AListeningSocketTravelsAndTheChildServesOnIt) {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto endpoint = acceptor.local_endpoint();
  auto c = clutch::fork(io, self(), helper_args("ipc-serve-listener"));
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    c.disconnect();
  });
  clutch::error_code send_ec = asio::error::would_block;
  c.send("listen", clutch::handle(std::move(acceptor)), [&](clutch::error_code ec) { send_ec = ec; });
  std::string answer;
  std::thread client([&] {
    asio::io_context cio;
    asio::ip::tcp::socket s(cio);
    s.connect(endpoint);  // the kernel queues it on the listening socket, wherever that is now
    answer = read_all(s);
  });
  run_bounded(io);
  client.join();
  EXPECT_FALSE(send_ec);
  EXPECT_EQ(answer, "served by the child\n");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "served");
}

TEST(Fork, MessagesArriveInSendOrderEachSeparately) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  const int n = 5000;
  int next = 0;
  bool in_order = true;
  c.on_message([&](const json::value& m, clutch::handle) {
    in_order = in_order && m.is_object() && m.at("seq").as_int64() == next;
    if (++next == n) c.send("disconnect");
  });
  for (int i = 0; i < n; ++i) c.send({{"seq", i}});
  run_bounded(io);
  EXPECT_EQ(next, n);
  EXPECT_TRUE(in_order);
}

TEST(Fork, AChildThatSendsAndExitsAtOnceIsHeardThenExitsThenCloses) {
  for (const bool node : {false, true}) {
    asio::io_context io;
    auto c = node ? clutch::fork(io, fixture("send_and_exit.js"))
                  : clutch::fork(io, self(), helper_args("ipc-send-and-exit", {"last words"}));
    std::vector<std::string> events;
    c.on_message([&](const json::value& m, clutch::handle) { events.push_back("message:" + json::serialize(m)); });
    c.on_exit([&](const clutch::exit_status& s) { events.push_back("exit:" + std::to_string(s.code.value_or(-1))); });
    c.async_wait([&](clutch::error_code, clutch::exit_status) { events.push_back("close"); });
    run_bounded(io);
    const std::string words = node ? "\"last words from node\"" : "\"last words\"";
    EXPECT_EQ(events, (std::vector<std::string>{"message:" + words, "exit:0", "close"})) << "node child: " << node;
  }
}

TEST(Fork, LargeMessagesArriveIntactAndInOrder) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  std::string megabyte;
  while (megabyte.size() < 1'000'000) megabyte += "你好啊，我的子进程！ — ünïcödé ✓ ";
  std::vector<std::string> big;
  for (char fill : {'a', 'b', 'c', 'd'}) big.emplace_back(8u << 20, fill);
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    if (got.size() == 5) c.send("disconnect");
  });
  c.send(json::value(megabyte));
  for (auto& b : big) c.send(json::value(b));
  run_bounded(io);
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].as_string(), megabyte);
  for (std::size_t i = 0; i < big.size(); ++i) EXPECT_EQ(got[i + 1].as_string(), big[i]) << i;
}

TEST(Fork, StringsNeedingEscapesSurviveTheRoundTrip) {
  // Strings take a fast path when nothing in them needs escaping; these all do, somewhere in each 8-byte word.
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  std::vector<std::string> sent;
  std::string every;
  for (int ch = 1; ch < 128; ++ch) every.push_back(static_cast<char>(ch));
  sent.push_back(every);
  for (const char* special : {"\"", "\\", "\n", "\x01", "\x1f"}) {
    for (std::size_t at = 0; at < 9; ++at) {
      std::string s(17, 'a');
      s.insert(at, special);
      sent.push_back(s);
    }
  }
  sent.push_back("plain, no escapes at all, and longer than one word");
  std::vector<std::string> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.emplace_back(m.as_string());
    if (got.size() == sent.size()) c.send("disconnect");
  });
  for (const auto& s : sent) c.send(json::value(s));
  run_bounded(io);
  EXPECT_EQ(got, sent);
}

TEST(Fork, HandlesKeepTheirMessagesAndTheQueueKeepsItsOrder) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-report-handles"));
  std::vector<json::value> got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got.push_back(m);
    if (got.size() == 6) c.disconnect();
  });
  // Each handle is one end of a socketpair whose other end has already said which message it belongs to.
  std::vector<int> keep;
  auto socket_saying = [&](const std::string& text) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    EXPECT_EQ(::write(sv[0], text.data(), text.size()), static_cast<ssize_t>(text.size()));
    keep.push_back(sv[0]);
    return clutch::handle(sv[1]);
  };
  int acked = 0;
  c.send(0);
  c.send(1, socket_saying("for 1"), [&](clutch::error_code ec) { acked += !ec; });
  c.send(2);
  c.send(3, socket_saying("for 3"), [&](clutch::error_code ec) { acked += !ec; });
  c.send(4, socket_saying("for 4"), [&](clutch::error_code ec) { acked += !ec; });
  c.send(5);
  run_bounded(io);
  for (int fd : keep) ::close(fd);
  ASSERT_EQ(got.size(), 6u);
  const char* expected_handle[] = {nullptr, "for 1", nullptr, "for 3", "for 4", nullptr};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(got[i].at("msg"), i);
    if (expected_handle[i]) {
      EXPECT_EQ(got[i].at("handle"), expected_handle[i]) << i;
    } else {
      EXPECT_TRUE(got[i].at("handle").is_null()) << i;
    }
  }
  EXPECT_EQ(acked, 3);
}

TEST(Fork, SendAfterTheChannelClosedReturnsFalseAndCompletesWithChannelClosed) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  c.disconnect();
  EXPECT_FALSE(c.connected());
  clutch::error_code got;
  EXPECT_FALSE(c.send("late", [&](clutch::error_code ec) { got = ec; }));
  EXPECT_NO_THROW(c.send("later"));
  run_bounded(io);
  EXPECT_EQ(got, clutch::errc::channel_closed);
}

TEST(Fork, PendingSendsCompleteWithAnErrorWhenThePeerDies) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-ignore"));
  // The child never reads: after the socket buffer fills, sends wait in our queue.
  std::string chunk(1 << 20, 'z');
  int completed = 0, failed = 0;
  bool under = true;
  for (int i = 0; i < 16; ++i) {
    under = c.send(json::value(chunk), [&](clutch::error_code ec) {
      ++completed;
      failed += ec == clutch::errc::channel_closed;
    });
  }
  EXPECT_FALSE(under) << "16 MiB queued is past the high-water mark";
  EXPECT_GT(c.channel().queued_bytes(), 0u);
  asio::steady_timer t(io, 200ms);
  t.async_wait([&](boost::system::error_code) { c.kill(SIGKILL); });
  run_bounded(io);
  EXPECT_EQ(completed, 16);
  EXPECT_GT(failed, 0);
}

TEST(Fork, TheChannelCanSitAtAnotherSlotButThereIsExactlyOne) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"),
                        {.stdio = {clutch::stdio::inherit, clutch::stdio::inherit, clutch::stdio::inherit,
                                   clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ipc}});
  json::value got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got = m;
    c.disconnect();
  });
  c.send("at fd 5");
  run_bounded(io);
  EXPECT_EQ(got, "at fd 5");

  auto two = clutch::fork(io, self(), helper_args("ipc-echo"),
                          {.stdio = {clutch::stdio::inherit, clutch::stdio::ipc, clutch::stdio::ipc}});
  EXPECT_EQ(two.spawn_error(), std::errc::invalid_argument);
  auto none = clutch::fork(io, self(), helper_args("ipc-echo"), {.stdio = {clutch::stdio::inherit}});
  EXPECT_EQ(none.spawn_error(), std::errc::invalid_argument);
  EXPECT_EQ(clutch::spawn(io, "true", {}, {.stdio = {clutch::stdio::ipc}}).spawn_error(),
            std::errc::invalid_argument);
}

TEST(Fork, AMissingProgramFailsLikeSpawnAndItsChannelIsClosed) {
  asio::io_context io;
  auto c = clutch::fork(io, "clutch-no-such-program-anywhere");
  EXPECT_EQ(c.spawn_error(), std::errc::no_such_file_or_directory);
  EXPECT_FALSE(c.connected());
  clutch::error_code got;
  EXPECT_FALSE(c.send("x", [&](clutch::error_code ec) { got = ec; }));
  run_bounded(io);
  EXPECT_EQ(got, clutch::errc::channel_closed);
}

// ---- The channel against raw bytes --------------------------------------------------------------------------------

namespace {

struct raw_pair {
  int ours = -1;  // given to a clutch::channel
  int peer = -1;  // written and read by the test as the other side
  raw_pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ours = sv[0];
    peer = sv[1];
  }
  ~raw_pair() { ::close(peer); }
  void write(std::string_view s) const { EXPECT_EQ(::write(peer, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
};

}  // namespace

TEST(Channel, ALineThatIsNotJsonClosesTheChannelWithAReasonAndNothingElse) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  std::vector<json::value> got;
  clutch::error_code why;
  int disconnects = 0;
  ch.on_message([&](const json::value& m, clutch::handle) { got.push_back(m); });
  ch.on_disconnect([&](clutch::error_code ec) {
    ++disconnects;
    why = ec;
  });
  p.write("\"fine\"\n{not json}\n\"never seen\"\n");
  run_bounded(io);
  EXPECT_EQ(got, std::vector<json::value>{"fine"});
  EXPECT_EQ(why, clutch::errc::invalid_message);
  EXPECT_EQ(disconnects, 1);
  EXPECT_FALSE(ch.connected());
}

TEST(Channel, ALineOverTheLimitClosesTheChannel) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours, {.max_message = 1024});
  clutch::error_code why;
  ch.on_disconnect([&](clutch::error_code ec) { why = ec; });
  p.write("\"" + std::string(4096, 'x'));
  run_bounded(io);
  EXPECT_EQ(why, clutch::errc::message_too_large);
}

TEST(Channel, InternalMessagesNeverReachOnMessage) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  std::vector<json::value> user, internal;
  ch.on_message([&](const json::value& m, clutch::handle) { user.push_back(m); });
  ch.on_internal_message([&](const json::value& m, clutch::handle&) { internal.push_back(m); });
  p.write(R"({"cmd":"NODE_SOCKET_GET_COUNT","key":"k"})"
          "\n"
          R"({"cmd":"CLUTCH_PING"})"
          "\n"
          R"({"cmd":"NODE"})"
          "\n"
          R"({"cmd":"NODE_"})"
          "\n"
          R"({"cmd":"user"})"
          "\n");
  ::shutdown(p.peer, SHUT_WR);
  run_bounded(io);
  // Node's rule: internal means a cmd that starts with "NODE_" and is longer than it.
  EXPECT_EQ(user, (std::vector<json::value>{json::parse(R"({"cmd":"NODE"})"), json::parse(R"({"cmd":"NODE_"})"),
                                            json::parse(R"({"cmd":"user"})")}));
  EXPECT_EQ(internal, std::vector<json::value>{json::parse(R"({"cmd":"CLUTCH_PING"})")});
}

TEST(Channel, AHandleMessageWithoutItsDescriptorIsAnsweredWithNack) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  int delivered = 0;
  ch.on_message([&](const json::value&, clutch::handle) { ++delivered; });
  // The descriptor did not come (as when MSG_CTRUNC dropped it): the message is not delivered, the sender is told.
  p.write(R"({"cmd":"NODE_HANDLE","type":"net.Socket","msg":"x"})"
          "\n");
  run_until(io, [&] { return readable(p.peer); });
  char buf[256];
  ssize_t n = ::recv(p.peer, buf, sizeof buf, MSG_DONTWAIT);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
  EXPECT_EQ(delivered, 0);
}

TEST(Channel, ANackedHandleIsSentAgainAndLaterMessagesWaitForTheAck) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ::close(sv[0]);
  clutch::error_code handle_ec = asio::error::would_block;
  ch.send("with handle", clutch::handle(sv[1]), [&](clutch::error_code ec) { handle_ec = ec; });
  ch.send("after");
  run_until(io, [&] { return readable(p.peer); });

  auto read_frames = [&](int& fds_seen) {
    std::vector<clutch::os::unique_fd> fds;
    char buf[4096];
    std::string text;
    while (true) {
      auto r = clutch::os::receive(p.peer, buf, sizeof buf, fds);
      if (r.bytes <= 0) break;
      text.append(buf, static_cast<std::size_t>(r.bytes));
    }
    fds_seen = static_cast<int>(fds.size());
    return text;
  };
  int fds = 0;
  std::string first = read_frames(fds);
  EXPECT_EQ(first, R"({"cmd":"NODE_HANDLE","type":"net.Socket","msg":"with handle"})"
                   "\n");
  EXPECT_EQ(fds, 1);
  p.write("{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
  run_until(io, [&] { return readable(p.peer); });
  std::string again = read_frames(fds);
  EXPECT_EQ(again, first) << "resent after the NACK, and 'after' still waits";
  EXPECT_EQ(fds, 1);
  p.write("{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
  run_until(io, [&] { return readable(p.peer) && !handle_ec; });
  EXPECT_EQ(read_frames(fds), "\"after\"\n");
  EXPECT_FALSE(handle_ec);
}

TEST(ParentChannel, IsEmptyWithoutAParentAndExplainsABadOne) {
  asio::io_context io;
  ::unsetenv("NODE_CHANNEL_FD");
  clutch::error_code ec;
  EXPECT_FALSE(clutch::parent_channel(io, {}, ec));
  EXPECT_FALSE(ec);
  ::setenv("NODE_CHANNEL_FD", "banana", 1);
  EXPECT_FALSE(clutch::parent_channel(io, {}, ec));
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(std::getenv("NODE_CHANNEL_FD"), nullptr);
  ::setenv("NODE_CHANNEL_FD", "0", 1);  // stdin: not a socket here
  EXPECT_FALSE(clutch::parent_channel(io, {}, ec));
  EXPECT_TRUE(ec);
  raw_pair p;
  ::setenv("NODE_CHANNEL_FD", std::to_string(p.ours).c_str(), 1);
  ::setenv("NODE_CHANNEL_SERIALIZATION_MODE", "advanced", 1);
  EXPECT_FALSE(clutch::parent_channel(io, {}, ec));
  EXPECT_EQ(ec, std::errc::not_supported);
  ::close(p.ours);
}

TEST(Fork, DisconnectStillSendsWhatWaitedBehindAHandle) {
  // Node flushes its handle queue before it disconnects; so do we.
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-report-handles"), {.silent = true});
  std::string out;
  c.on_data(clutch::child::out, [&](std::string_view s) { out += s; });
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(::write(sv[0], "h", 1), 1);
  clutch::error_code first = asio::error::would_block, second = asio::error::would_block;
  c.send(0, clutch::handle(sv[1]), [&](clutch::error_code ec) { first = ec; });
  c.send(1, [&](clutch::error_code ec) { second = ec; });
  c.disconnect();
  run_bounded(io);
  ::close(sv[0]);
  EXPECT_FALSE(first);
  EXPECT_FALSE(second);
  EXPECT_EQ(out, "{\"msg\":0,\"handle\":\"h\"}\n{\"msg\":1,\"handle\":null}\n");
}

TEST(Fork, DeeplyNestedMessagesPass) {
  asio::io_context io;
  auto c = clutch::fork(io, self(), helper_args("ipc-echo"));
  json::value deep = json::array{};
  for (int i = 0; i < 200; ++i) deep = json::array{deep};
  json::value got;
  c.on_message([&](const json::value& m, clutch::handle) {
    got = m;
    c.disconnect();
  });
  c.send(deep);
  run_bounded(io);
  EXPECT_EQ(got, deep);
}

TEST(Fork, TheExitIsReportedEvenIfAGrandchildKeepsTheChannelOpen) {
  // The shell's background sleep inherits the channel's descriptor; the shell's exit must not wait for it.
  asio::io_context io;
  auto c = clutch::fork(io, "/bin/sh", {"-c", "sleep 30 >/dev/null 2>&1 & echo $!"}, {.silent = true});
  std::string out;
  c.on_data(clutch::child::out, [&](std::string_view s) { out += s; });
  std::optional<clutch::exit_status> st;
  bool sleeper_alive_at_exit = false;
  c.async_wait([&](clutch::error_code, clutch::exit_status s) {
    st = s;
    sleeper_alive_at_exit = clutch_test::process_alive(std::atoi(out.c_str()));
    c.disconnect();
  });
  run_bounded(io);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 0);
  EXPECT_TRUE(sleeper_alive_at_exit);
  ::kill(std::atoi(out.c_str()), SIGKILL);
}

TEST(Channel, AHandlerThatThrowsDoesNotStopTheChannel) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  std::vector<json::value> got;
  ch.on_message([&](const json::value& m, clutch::handle) {
    if (m == "throw") throw std::runtime_error("handler failed");
    got.push_back(m);
  });
  p.write("\"before\"\n\"throw\"\n\"after\"\n");
  ::shutdown(p.peer, SHUT_WR);
  EXPECT_THROW(io.run(), std::runtime_error);
  io.restart();
  run_bounded(io);
  EXPECT_EQ(got, (std::vector<json::value>{"before", "after"}));
}

TEST(Channel, OnDisconnectRegisteredAfterTheCloseStillHearsIt) {
  asio::io_context io;
  raw_pair p;
  clutch::channel ch(io, p.ours);
  ch.disconnect();
  run_bounded(io);
  int calls = 0;
  ch.on_disconnect([&](clutch::error_code ec) {
    ++calls;
    EXPECT_FALSE(ec);
  });
  io.restart();
  run_bounded(io);
  EXPECT_EQ(calls, 1);
}
