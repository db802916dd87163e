// `bench/run ipc`: the message channel, side by side in one run with Node 20's fork/send and with a plain C
// socketpair (the floor: bytes moved between two processes with no framing or parsing at all).
//
//   ipc_bench [--roundtrips N] [--small N] [--large N] [--rounds R]
//
// Three figures each: round-trip latency of {"seq":n}; one-way small messages per second; one-way MB/s of 64 KiB
// messages. The senders push 1000 messages per event-loop turn, as the Node side does.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <algorithm>
#include <chrono>
#include <clutch/ipc.hpp>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

namespace asio = boost::asio;
namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

namespace {

int roundtrips = 5000;
int small_count = 200000;
int large_count = 2000;
int rounds = 5;

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}
const std::string big(65536, 'x');

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string self_path() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

// ---- clutch: the child ----------------------------------------------------------------------------------------------
int clutch_child() {
  asio::io_context io;
  auto parent = clutch::parent_channel(io, {.max_message = 256u << 20});  // room for the 100 MiB message
  if (!parent) return 2;
  std::int64_t count = 0, bytes = 0;
  parent->on_message([&](const json::value& m, clutch::handle) {
    if (m.is_string() && m.get_string() == "end") {
      parent->send({{"count", count}, {"bytes", bytes}});
      count = bytes = 0;
    } else if (m.is_object() && m.get_object().contains("echo")) {
      parent->send(m);
    } else {
      ++count;
      if (m.is_string()) bytes += static_cast<std::int64_t>(m.get_string().size());
    }
  });
  io.run();
  return 0;
}

struct clutch_figures {
  double rtt_us, small_per_s, large_mb_per_s;
};

clutch_figures clutch_parent(bool huge_only = false) {
  asio::io_context io;
  auto child = clutch::fork(io, self_path(), {"--child"});
  std::function<void(const json::value&)> on_message;
  child.on_message([&](const json::value& m, clutch::handle) { on_message(m); });

  auto round_trip = [&] {
    int seq = 0;
    auto t0 = clock_type::now();
    on_message = [&](const json::value&) {
      if (++seq < roundtrips) child.send({{"seq", seq}, {"echo", true}});
    };
    child.send({{"seq", seq}, {"echo", true}});
    while (seq < roundtrips) io.run_one();
    return seconds_since(t0) * 1e6 / roundtrips;
  };
  // Sends count messages as Node's documentation advises: while send() says the queue is under its high-water
  // mark; past it, the next send carries a callback and sending resumes when that message has been written.
  auto one_way = [&](int count, const std::function<bool(int, std::function<void(clutch::error_code)>)>& send_one) {
    bool done = false;
    on_message = [&](const json::value&) { done = true; };
    auto t0 = clock_type::now();
    int i = 0;
    std::function<void()> pump = [&] {
      while (i < count) {
        if (!send_one(i++, nullptr)) {
          if (i < count) send_one(i++, [&](clutch::error_code) { pump(); });
          break;
        }
      }
      if (i == count) child.send("end");
    };
    pump();
    while (!done) io.run_one();
    return seconds_since(t0);
  };
  if (huge_only) {  // one 100 MiB message, sent and counted by the child: the linear-cost promise
    const json::value huge(std::string(100u << 20, 'h'));
    bool done = false;
    on_message = [&](const json::value&) { done = true; };
    auto t0 = clock_type::now();
    child.send(huge);
    child.send("end");
    while (!done) io.run_one();
    clutch_figures f{};
    f.rtt_us = seconds_since(t0) * 1e6;
    child.disconnect();
    io.run();
    return f;
  }
  round_trip();  // warm-up
  clutch_figures f{};
  f.rtt_us = round_trip();
  auto sender = [&](const std::function<json::value(int)>& make) {
    return [&, make](int i, std::function<void(clutch::error_code)> written) {
      if (written) return child.send(make(i), std::move(written));
      return child.send(make(i));
    };
  };
  f.small_per_s = small_count / one_way(small_count, sender([](int i) { return json::value{{"seq", i}}; }));
  const json::value big_value(big);
  f.large_mb_per_s =
      large_count * 65536.0 / 1e6 / one_way(large_count, sender([&](int) -> const json::value& { return big_value; }));
  child.disconnect();
  io.run();
  return f;
}

// ---- the floor: a socketpair and plain read/write -------------------------------------------------------------------
void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w <= 0) std::exit(3);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Waits for fd to be readable through epoll, as any event loop does (edge-triggered, non-blocking fd).
struct epoll_waiter {
  int ep = -1;
  explicit epoll_waiter(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  ~epoll_waiter() { ::close(ep); }
  ssize_t read(int fd, char* buf, std::size_t len) const {
    while (true) {
      ssize_t n = ::read(fd, buf, len);
      if (n >= 0 || errno != EAGAIN) return n;
      epoll_event ev;
      ::epoll_wait(ep, &ev, 1, -1);
    }
  }
};

// fd 3: echo every line back (mode "echo", or "echo-epoll" waiting in epoll instead of a blocking read), or count
// '\n' until N lines have come and answer "d\n" (mode "count").
int floor_child(const char* mode, long expected) {
  char buf[256 * 1024];
  long lines = 0;
  std::string line;
  std::optional<epoll_waiter> waiter;
  if (std::strcmp(mode, "echo-epoll") == 0) waiter.emplace(3);
  while (true) {
    ssize_t n = waiter ? waiter->read(3, buf, sizeof buf) : ::read(3, buf, sizeof buf);
    if (n <= 0) return 0;
    if (std::strncmp(mode, "echo", 4) == 0) {
      for (ssize_t i = 0; i < n; ++i) {
        line.push_back(buf[i]);
        if (buf[i] == '\n') {
          write_all(3, line.data(), line.size());
          line.clear();
        }
      }
    } else {
      for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
      if (lines >= expected) {
        write_all(3, "d\n", 2);
        lines -= expected;
      }
    }
  }
}

struct floor_figures {
  double rtt_us, rtt_epoll_us, small_unbatched_per_s, small_batched_per_s, large_mb_per_s;
};

floor_figures floor_parent() {
  asio::io_context io;
  floor_figures f{};
  auto run_child = [&](const std::vector<std::string>& args, const std::function<void(int)>& body) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::exit(3);
    auto c = clutch::spawn(io, self_path(), args,
                           {.stdio = {clutch::stdio::inherit, clutch::stdio::inherit, clutch::stdio::inherit,
                                      clutch::stdio::fd(sv[1])}});
    ::close(sv[1]);
    body(sv[0]);
    ::close(sv[0]);
    c.async_wait([](clutch::error_code, clutch::exit_status) {});
    io.run();
    io.restart();
  };
  auto wait_done = [](int fd) {
    char d[2];
    std::size_t got = 0;
    while (got < 2) {
      ssize_t n = ::read(fd, d + got, 2 - got);
      if (n <= 0) std::exit(3);
      got += static_cast<std::size_t>(n);
    }
  };
  for (const bool with_epoll : {false, true}) {
    run_child({"--floor-child", with_epoll ? "echo-epoll" : "echo", "0"}, [&](int fd) {
      std::optional<epoll_waiter> waiter;
      if (with_epoll) waiter.emplace(fd);
      char buf[64];
      auto once = [&](int seq) {
        int len = std::snprintf(buf, sizeof buf, "{\"seq\":%d,\"echo\":true}\n", seq);
        write_all(fd, buf, static_cast<std::size_t>(len));
        int got = 0;
        while (got < len) {
          const std::size_t room = sizeof buf - static_cast<std::size_t>(got);
          ssize_t n = waiter ? waiter->read(fd, buf + got, room) : ::read(fd, buf + got, room);
          if (n <= 0) std::exit(3);
          got += static_cast<int>(n);
        }
      };
      for (int i = 0; i < 1000; ++i) once(i);
      auto t0 = clock_type::now();
      for (int i = 0; i < roundtrips; ++i) once(i);
      (with_epoll ? f.rtt_epoll_us : f.rtt_us) = seconds_since(t0) * 1e6 / roundtrips;
    });
  }
  run_child({"--floor-child", "count", std::to_string(small_count)}, [&](int fd) {
    char buf[64];
    auto t0 = clock_type::now();
    for (int i = 0; i < small_count; ++i) {
      int len = std::snprintf(buf, sizeof buf, "{\"seq\":%d}\n", i);
      write_all(fd, buf, static_cast<std::size_t>(len));
    }
    wait_done(fd);
    f.small_unbatched_per_s = small_count / seconds_since(t0);
    std::string batch;
    t0 = clock_type::now();
    for (int i = 0; i < small_count; ++i) {
      int len = std::snprintf(buf, sizeof buf, "{\"seq\":%d}\n", i);
      batch.append(buf, static_cast<std::size_t>(len));
      if (batch.size() > 60000 || i + 1 == small_count) {
        write_all(fd, batch.data(), batch.size());
        batch.clear();
      }
    }
    wait_done(fd);
    f.small_batched_per_s = small_count / seconds_since(t0);
  });
  run_child({"--floor-child", "count", std::to_string(large_count)}, [&](int fd) {
    std::string frame = "\"" + big + "\"\n";
    auto t0 = clock_type::now();
    for (int i = 0; i < large_count; ++i) write_all(fd, frame.data(), frame.size());
    wait_done(fd);
    f.large_mb_per_s = large_count * 65536.0 / 1e6 / seconds_since(t0);
  });
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--child") == 0) return clutch_child();
  if (argc > 3 && std::strcmp(argv[1], "--floor-child") == 0) return floor_child(argv[2], std::atol(argv[3]));
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--roundtrips")) roundtrips = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--small")) small_count = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--large")) large_count = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
  }
  if (std::getenv("CLUTCH_BENCH_ONLY_CLUTCH") != nullptr) {  // for profiling clutch's side alone
    const clutch_figures c = clutch_parent();
    std::printf("clutch: rtt %.1f us, %.0f small/s, %.0f MB/s\n", c.rtt_us, c.small_per_s, c.large_mb_per_s);
    return 0;
  }
  std::printf("ipc benchmark: %d round trips, %d small messages, %d x 64 KiB messages; median of %d rounds\n\n",
              roundtrips, small_count, large_count, rounds);

  // The machine is shared and a process's wake-up time swings from one second to the next, so the three sides
  // take turns, ROUNDS times, and each figure is the median of its rounds.
  std::vector<double> n_rtts, n_smalls, n_larges, f_rtts, f_epoll_rtts, f_smalls, f_batched, f_larges, c_rtts, c_smalls,
      c_larges;
  for (int r = 0; r < rounds; ++r) {
    auto node_run = clutch::exec_file_sync("node", {"bench/ipc.js", std::to_string(roundtrips),
                                                    std::to_string(small_count), std::to_string(large_count)});
    if (node_run.error || !node_run.status.ok()) {
      std::fprintf(stderr, "ipc_bench: node failed: %s\n", node_run.err.c_str());
      return 1;
    }
    auto node = json::parse(node_run.out).as_object();
    n_rtts.push_back(node.at("rtt_us").to_number<double>());
    n_smalls.push_back(node.at("small_per_s").to_number<double>());
    n_larges.push_back(node.at("large_mb_per_s").to_number<double>());
    const floor_figures fl = floor_parent();
    f_rtts.push_back(fl.rtt_us);
    f_epoll_rtts.push_back(fl.rtt_epoll_us);
    f_smalls.push_back(fl.small_unbatched_per_s);
    f_batched.push_back(fl.small_batched_per_s);
    f_larges.push_back(fl.large_mb_per_s);
    const clutch_figures cf = clutch_parent();
    c_rtts.push_back(cf.rtt_us);
    c_smalls.push_back(cf.small_per_s);
    c_larges.push_back(cf.large_mb_per_s);
  }
  const double n_rtt = median(n_rtts), n_small = median(n_smalls), n_large = median(n_larges);
  const floor_figures fl{median(f_rtts), median(f_epoll_rtts), median(f_smalls), median(f_batched), median(f_larges)};
  const clutch_figures c{median(c_rtts), median(c_smalls), median(c_larges)};

  std::printf("%-46s %12s %10s %10s\n", "round trip of {\"seq\":n}", "", "vs Node", "vs floor");
  std::printf("%-46s %9.1f us %9.2fx %9.2fx\n", "clutch C++ <-> C++", c.rtt_us, c.rtt_us / n_rtt, c.rtt_us / fl.rtt_us);
  std::printf("%-46s %9.1f us %10s %9.2fx\n", "Node fork/send", n_rtt, "", n_rtt / fl.rtt_us);
  std::printf("%-46s %9.1f us\n", "floor: socketpair ping-pong, blocking read", fl.rtt_us);
  std::printf("%-46s %9.1f us %10s %9.2fx\n", "floor: the same, waiting in epoll", fl.rtt_epoll_us, "",
              fl.rtt_epoll_us / fl.rtt_us);
  std::printf("%-46s %9s    %10s %9.2fx\n", "clutch against the epoll floor", "", "", c.rtt_us / fl.rtt_epoll_us);

  std::printf("\n%-46s %12s %10s\n", "one 100 MiB message, sent and parsed", "", "vs Node");
  const double c_huge = clutch_parent(true).rtt_us / 1e6;
  auto node_huge = clutch::exec_file_sync("node", {"bench/ipc.js", "huge"});
  const double n_huge = node_huge.status.ok() ? json::parse(node_huge.out).at("huge_s").to_number<double>() : -1;
  std::printf("%-46s %10.3f s %9.2fx\n", "clutch", c_huge, c_huge / n_huge);
  std::printf("%-46s %10.3f s\n", "Node", n_huge);

  std::printf("\n%-46s %12s %10s %10s\n", "small messages one way", "", "vs Node", "vs floor");
  std::printf("%-46s %9.0f k/s %9.2fx %9.2fx\n", "clutch", c.small_per_s / 1e3, c.small_per_s / n_small,
              c.small_per_s / fl.small_unbatched_per_s);
  std::printf("%-46s %9.0f k/s %10s %9.2fx\n", "Node", n_small / 1e3, "", n_small / fl.small_unbatched_per_s);
  std::printf("%-46s %9.0f k/s\n", "floor: one write() per frame", fl.small_unbatched_per_s / 1e3);
  std::printf("%-46s %9.0f k/s\n", "floor: frames batched into 60 KB writes", fl.small_batched_per_s / 1e3);

  std::printf("\n%-46s %12s %10s %10s\n", "64 KiB messages one way", "", "vs Node", "vs floor");
  std::printf("%-46s %8.0f MB/s %9.2fx %9.2fx\n", "clutch", c.large_mb_per_s, c.large_mb_per_s / n_large,
              c.large_mb_per_s / fl.large_mb_per_s);
  std::printf("%-46s %8.0f MB/s %10s %9.2fx\n", "Node", n_large, "", n_large / fl.large_mb_per_s);
  std::printf("%-46s %8.0f MB/s\n", "floor: one write() per frame", fl.large_mb_per_s);
  return 0;
}
