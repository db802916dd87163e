// `bench/run app`, clutch's side: one app worker sends to the agent, through the direct channel or (--through-master)
// through the master, and the same pair as bench/egg measures for egg-cluster.
//
//   app_bench [--through-master] [--messages N] [--rounds M]
//
// 1. throughput: the worker sends N messages (send_to_agent "bench" i), in chunks of 1,000 with one tracked
//    message per chunk and at most 8 chunks unacknowledged; the agent counts them and, at the last, tells the
//    worker (send_to its pid). msgs_per_s = N / (first send → that notice). The master's CPU time (getrusage)
//    is read when the worker says the phase begins and ends.
// 2. latency: M sequential request(agent, "ping") after 200 untimed ones; median and p99 in microseconds.
// Prints one line of JSON, then the master stops everything.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <clutch/app.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace json = boost::json;
namespace app = clutch::app;
using clock_type = std::chrono::steady_clock;

namespace {

std::int64_t messages = 1'000'000;
int rounds = 5000;
constexpr int chunk = 1000, window = 8, warmup = 200;

double cpu_ms() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return ms(u.ru_utime) + ms(u.ru_stime);
}

void run_agent(asio::io_context& io) {
  auto& m = app::messenger::of(io);
  static std::int64_t count = 0, expected = -1;
  m.on("bench", [&m](const json::value& i, const app::sender& from) {
    if (i.as_int64() != count) expected = -2;  // out of order: reported as an error below
    if (++count == messages) m.send_to(from.pid, "bench-done", expected == -1 ? count : -1);
  });
  m.on_request("ping", [](const json::value& v, const app::sender&, app::responder r) { r(v); });
  app::ready(io);
}

struct worker_bench {
  asio::io_context& io;
  app::messenger& m;
  std::int64_t sent = 0;
  int unacked_chunks = 0;
  clock_type::time_point began{};
  std::vector<double> rtt{};
  json::object result{};

  void send_some() {
    while (sent < messages && unacked_chunks < window) {
      const std::int64_t end = std::min(messages, sent + chunk);
      for (; sent < end - 1; ++sent) m.send_to_agent("bench", sent);
      ++unacked_chunks;
      m.send_to_agent("bench", sent++, [this](clutch::error_code ec) {
        if (ec) std::fprintf(stderr, "app_bench: %s\n", ec.message().c_str());
        --unacked_chunks;
        send_some();
      });
    }
  }

  void ping(int i) {
    if (i == warmup + rounds) return finish();
    auto t0 = clock_type::now();
    m.request(app::destination::agent(), "ping", i, std::chrono::seconds(10), [this, i, t0](clutch::error_code ec, json::value) {
      if (ec) std::fprintf(stderr, "app_bench: ping: %s\n", ec.message().c_str());
      if (i >= warmup) rtt.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      ping(i + 1);
    });
  }

  void finish() {
    std::sort(rtt.begin(), rtt.end());
    result["rounds"] = rounds;
    result["rtt_us_median"] = rtt[rtt.size() / 2];
    result["rtt_us_p99"] = rtt[rtt.size() * 99 / 100];
    m.send_to(static_cast<int>(::getppid()), "result", result);
  }

  void start() {
    m.on("bench-done", [this](const json::value& v, const app::sender&) {
      const double s = std::chrono::duration<double>(clock_type::now() - began).count();
      m.send_to(static_cast<int>(::getppid()), "phase", "end");
      result["messages"] = messages;
      result["in_order"] = v.as_int64() == messages;
      result["msgs_per_s"] = static_cast<double>(messages) / s;
      ping(0);
    });
    m.on("go", [this](const json::value&, const app::sender&) {
      m.send_to(static_cast<int>(::getppid()), "phase", "begin", [this](clutch::error_code) {
        began = clock_type::now();
        send_some();
      });
    });
    app::ready(io);
  }
};

}  // namespace

int main(int argc, char** argv) {
  bool through_master = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--through-master")) through_master = true;
    else if (!std::strcmp(argv[i], "--messages") && i + 1 < argc) messages = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = std::atoi(argv[++i]);
  }
  asio::io_context io{1};
  switch (app::current_role()) {
    case app::role::agent: run_agent(io); break;
    case app::role::app: {
      static worker_bench w{io, app::messenger::of(io)};
      w.start();
      break;
    }
    default: {
      app::master master(io, {.workers = 1, .direct = !through_master});
      double cpu_begin = 0, cpu_end = 0;
      auto& m = master.messenger();
      m.on("phase", [&](const json::value& v, const app::sender&) {
        (v == "begin" ? cpu_begin : cpu_end) = cpu_ms();
      });
      m.on("result", [&](const json::value& v, const app::sender&) {
        json::object r = v.as_object();
        r["peer"] = through_master ? "clutch, through the master" : "clutch, direct channel";
        r["master_cpu_ms"] = cpu_end - cpu_begin;
        r["master_forwarded"] = master.stats().forwarded;
        std::printf("%s\n", json::serialize(r).c_str());
        std::fflush(stdout);
        ::kill(::getpid(), SIGTERM);  // run() stops everything in order
      });
      return master.run([&](const app::ready_info&) { m.send_to_app("go", nullptr); });
    }
  }
  io.run();
}
