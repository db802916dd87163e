// What tests/fixtures/node_server.js answers, and asking it (node_cluster_test, pm2_habits_test).
#pragma once

#include <chrono>
#include <map>
#include <sstream>
#include <string>

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

}  // namespace clutch_test::node_server
