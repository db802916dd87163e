// `clutch run` as the tests run it: the real binary, its output, and what it says it started.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clutch/child_process.hpp"
#include "helpers.hpp"

namespace clutch_test {

// How many times `text` occurs in the whole lines of `all` (what a pipe has delivered so far). Only whole lines
// count: a pipe read can end in the middle of one, and what a test parses next reads whole lines.
inline std::size_t whole_lines_with(std::string_view all, std::string_view text) {
  all = all.substr(0, all.rfind('\n') + 1);  // npos + 1 == 0: no whole line yet
  std::size_t n = 0;
  for (auto at = all.find(text); at != std::string_view::npos; at = all.find(text, at + 1)) ++n;
  return n;
}

// A running `clutch run`, its output, and HTTP requests to its port.
struct clutch_run {
  boost::asio::io_context io;
  clutch::child proc;
  std::string out, err;
  std::optional<clutch::exit_status> exit;

  // env: added to the test's own environment.
  explicit clutch_run(std::vector<std::string> args, clutch::environment::map env = {}) {
    clutch::options o;
    o.env = clutch::environment::add(std::move(env));
    o.stdio = {clutch::stdio::ignore, clutch::stdio::pipe, clutch::stdio::pipe};
    o.kill_tree = true;  // whatever happens, the test's end reaches everything it started
    proc = clutch::spawn(io, clutch_test::clutch_binary(), args, o);
    proc.on_data(clutch::child::out, [this](std::string_view d) { out += d; });
    proc.on_data(clutch::child::err, [this](std::string_view d) { err += d; });
    proc.async_wait([this](clutch::error_code, clutch::exit_status st) { exit = st; });
  }
  ~clutch_run() {
    if (!exit) proc.kill(SIGKILL);
  }
  // Until `text` is in `times` whole lines of clutch's stderr (what started() and port() read next).
  bool wait_for(const std::string& text, std::size_t times = 1) {
    return run_until(io, [&] { return whole_lines_with(err, text) >= times; });
  }
  // The same for what the workers print (stdout).
  bool wait_out(const std::string& text, std::size_t times = 1) {
    return run_until(io, [&] { return whole_lines_with(out, text) >= times; });
  }
  unsigned short port() {
    const auto at = err.find("listening on 127.0.0.1:");
    return at == std::string::npos ? 0 : static_cast<unsigned short>(std::stoi(err.substr(at + 23)));
  }
  // Pids from lines "worker N (pid P) started", in order.
  std::vector<int> started() const {
    std::vector<int> pids;
    for (auto at = err.find("(pid "); at != std::string::npos; at = err.find("(pid ", at + 1))
      if (err.compare(err.find(')', at), 10, ") started\n") == 0) pids.push_back(std::stoi(err.substr(at + 5)));
    return pids;
  }
};

// The clutch command with a daemon home of its own (CLUTCH_HOME), and env added to the test's environment.
struct clutch_home {
  temp_dir home;
  clutch::sync_result operator()(std::vector<std::string> args, clutch::environment::map env = {}) const {
    clutch::options o;
    env["CLUTCH_HOME"] = home.path;
    o.env = clutch::environment::add(std::move(env));
    o.timeout = std::chrono::seconds(60);
    return clutch::spawn_sync(clutch_test::clutch_binary(), args, o);
  }
};

}  // namespace clutch_test
