// What tests/fixtures/node_server.js answers, and asking it (node_cluster_test, pm2_habits_test).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "helpers.hpp"

namespace clutch_test::node_server {

inline const std::string server_js = CLUTCH_FIXTURES "/node_server.js";

// "PID INSTANCE true GREETING" as the fixture answers; pid 0 when nothing answered.
struct answer {
  int pid = 0;
  std::string instance;
  bool worker = false;
  std::string greeting;
};
inline answer parse(const std::string& body) {
  answer a;
  std::istringstream in(body);
  std::string worker;
  in >> a.pid >> a.instance >> worker >> a.greeting;
  a.worker = worker == "true";
  return a;
}
inline answer get(unsigned short port) {
  auto [code, body] = clutch_test::http_request(port);
  return code == 200 ? parse(body) : answer{};
}

// Requests until every one of `instances` has answered (bounded); pid by instance.
inline std::map<std::string, int> answers_from(unsigned short port, std::size_t instances) {
  std::map<std::string, int> seen;
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       seen.size() < instances && std::chrono::steady_clock::now() < end;) {
    auto a = get(port);
    if (a.pid) seen[a.instance] = a.pid;
  }
  return seen;
}

// What wrk does: `connections` kept-alive connections, each asking again as soon as it has its answer, until
// `done`. A request that gets no whole answer (the connection closed or reset under it) is failed; an answer
// with `Connection: close` ends that connection and the next request opens a new one. Counts added to the totals.
struct load_totals {
  std::atomic<int> served{0}, failed{0}, told_to_close{0};
};
inline void keep_alive_load(unsigned short port, int connections, const std::atomic<bool>& done, load_totals& t) {
  auto one = [&] {
    int fd = -1;
    std::string buf;
    auto reset = [&] {
      if (fd >= 0) ::close(fd);
      fd = -1;
      buf.clear();
    };
    while (!done) {
      if (fd < 0) {
        fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        timeval tv{10, 0};  // a bound on each read, as the other helpers have
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
          t.failed++;
          reset();
          continue;
        }
      }
      static constexpr std::string_view req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      bool whole = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
      std::size_t head_end = std::string::npos, length = 0;
      while (whole) {
        if (head_end == std::string::npos && (head_end = buf.find("\r\n\r\n")) != std::string::npos) {
          const auto at = buf.find("Content-Length: ");
          length = at < head_end ? std::stoul(buf.substr(at + 16)) : 0;
        }
        if (head_end != std::string::npos && buf.size() >= head_end + 4 + length) break;
        char chunk[4096];
        const auto n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) whole = false;
        else buf.append(chunk, static_cast<std::size_t>(n));
      }
      if (!whole || buf.compare(0, 12, "HTTP/1.1 200") != 0) {
        t.failed++;
        reset();
        continue;
      }
      t.served++;
      const bool close = buf.substr(0, head_end).find("Connection: close") != std::string::npos;
      buf.erase(0, head_end + 4 + length);
      if (close) {
        t.told_to_close++;
        reset();
      }
    }
    reset();
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < connections; ++i) threads.emplace_back(one);
  for (auto& th : threads) th.join();
}

}  // namespace clutch_test::node_server
