// The programs the app tests run as agent, app workers and master (the test binary re-run with --helper).
//
//   app-role agent MODE | app-role app MODE    a role (the master says which). Both roles:
//       "probe" message        → reports {kind: "seen", data} to the master
//       "do" {op, …} message   → does one messenger call (op: send_to_app, send_to_agent, broadcast, send_random,
//                                send_to {pid}, send_to_parent, each with {action, data} and a token; then reports
//                                {kind: "done", op, error}), or: stream {count} (send_to_agent "item" i for each
//                                i, then reports {kind: "streamed", errors}), request {to, action, data, ms}
//                                (reports {kind: "answer", error, data}), spawn-child (a grandchild that ignores
//                                SIGTERM; reports {kind: "child", child} to the master and to the master's
//                                parent), publish {topic, value} (leader), subscribe {topic} (follower; each
//                                value is reported as {kind: "value", value}), call {name} (follower).
//       requests               "echo" → its data; "never" → never answered
//       app: a new agent       → reports {kind: "agent", agent}
//     agent MODEs: ok; exit-at-start (13 lines on stderr, exit 3 before ready); never-ready; die-after:N:MARKER (the first agent to
//       find MARKER absent creates it and dies by _exit(9) on its Nth "item"); every agent reports each "item"
//       as {kind: "item", i}, except in quiet mode, where it only counts them (request "count").
//     app MODEs: ok (listens on 127.0.0.1:0, then ready); exit-at-start (13 lines on stderr, exit 4 before ready).
//   app-master AGENT_MODE APP_MODE   a master with 2 app workers; prints "start ROLE PID" for each role started,
//       and sends {ready: {agent, apps}} to its parent when ready. Its exit code is master::run()'s.
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <clutch/app.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "helpers.hpp"

namespace clutch_test {

namespace {

namespace asio = boost::asio;
namespace app = clutch::app;
namespace json = boost::json;
using tcp = asio::ip::tcp;


struct role_helper {
  asio::io_context& io;
  app::messenger& m;
  std::string mode;
  std::unique_ptr<app::leader> leader{};
  std::unique_ptr<app::follower> follower{};
  std::vector<app::responder> never{};  // requests left unanswered on purpose
  std::vector<clutch::child> children{};
  std::int64_t items = 0;

  void report(json::object o) {
    o["pid"] = ::getpid();
    o["role"] = app::to_string(m.self());
    m.send_to(static_cast<int>(::getppid()), "report", std::move(o));
  }

  void send_op(const std::string& op, const json::object& d) {
    const std::string action = str(d, "action");
    const json::value data = d.contains("data") ? d.at("data") : json::value();
    auto done = [this, op](clutch::error_code ec) {
      report({{"kind", "done"}, {"op", op}, {"error", ec ? ec.message() : ""}});
    };
    if (op == "send_to_app") m.send_to_app(action, data, done);
    else if (op == "send_to_agent") m.send_to_agent(action, data, done);
    else if (op == "broadcast") m.broadcast(action, data, done);
    else if (op == "send_random") m.send_random(action, data, done);
    else if (op == "send_to") m.send_to(static_cast<int>(num(d, "pid")), action, data, done);
    else if (op == "send_to_parent") m.send_to_parent(action, data, done);
  }

  void act(const json::object& d) {
    const std::string op = str(d, "op");
    if (op == "stream") {
      auto left = std::make_shared<std::int64_t>(num(d, "count"));
      auto errors = std::make_shared<std::int64_t>(0);
      for (std::int64_t i = 0, n = *left; i < n; ++i)
        m.send_to_agent("item", i, [this, left, errors](clutch::error_code ec) {
          *errors += ec ? 1 : 0;
          if (--*left == 0) report({{"kind", "streamed"}, {"errors", *errors}});
        });
    } else if (op == "request") {
      const auto to = str(d, "to");
      auto dest = to == "app" ? app::destination::app()
                  : to == "all" ? app::destination::all()
                  : to == "random" ? app::destination::random()
                  : to == "pid" ? app::destination::process(static_cast<int>(num(d, "pid")))
                  : app::destination::agent();
      m.request(dest, str(d, "action"), d.contains("data") ? d.at("data") : json::value(),
                std::chrono::milliseconds(num(d, "ms")), [this](clutch::error_code ec, json::value v) {
                  report({{"kind", "answer"}, {"error", ec ? ec.message() : ""}, {"data", v}});
                });
    } else if (op == "spawn-child") {
      clutch::options o;
      o.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ignore};
      children.push_back(clutch::spawn(io, "/bin/sh", {"-c", "trap '' TERM; exec sleep 600"}, o));
      const int child = children.back().pid();
      report({{"kind", "child"}, {"child", child}});
      m.send_to_parent("child", child);
    } else if (op == "publish" && leader) {
      leader->publish(str(d, "topic"), d.contains("value") ? d.at("value") : json::value());
    } else if (op == "subscribe" && follower) {
      follower->subscribe(str(d, "topic"), [this](const json::value& v) { report({{"kind", "value"}, {"value", v}}); });
    } else if (op == "call" && follower) {
      follower->call(str(d, "name"), nullptr, std::chrono::seconds(10), [this](clutch::error_code ec, json::value v) {
        report({{"kind", "called"}, {"error", ec ? ec.message() : ""}, {"data", v}});
      });
    } else {
      send_op(op, d);
    }
  }

  void on_item(std::int64_t i) {
    ++items;
    if (mode.starts_with("die-after:")) {
      const auto rest = mode.substr(10);
      const auto colon = rest.find(':');
      const std::int64_t n = std::stoll(rest.substr(0, colon));
      const std::string marker = rest.substr(colon + 1);
      if (items == n && !std::filesystem::exists(marker)) {
        std::ofstream(marker) << "died\n";
        report({{"kind", "item"}, {"i", i}});
        std::fflush(nullptr);
        ::_exit(9);  // with whatever else is queued on its channels unread
      }
    }
    if (mode != "quiet") report({{"kind", "item"}, {"i", i}});
  }

  void setup() {
    m.on("probe", [this](const json::value& data, const app::sender& from) {
      report({{"kind", "seen"}, {"data", data}, {"from", from.pid}, {"from_role", app::to_string(from.from)}});
    });
    m.on("do", [this](const json::value& data, const app::sender&) {
      if (data.is_object()) act(data.get_object());
    });
    m.on("item", [this](const json::value& i, const app::sender&) { on_item(i.is_int64() ? i.get_int64() : -1); });
    m.on_request("echo", [](const json::value& data, const app::sender&, app::responder r) { r(data); });
    m.on_request("never", [this](const json::value&, const app::sender&, app::responder r) { never.push_back(r); });
    m.on_request("count", [this](const json::value&, const app::sender&, app::responder r) { r(items); });
    if (m.self() == app::role::agent) {
      leader = std::make_unique<app::leader>(m);
      leader->on_call("pid", [](const json::value&, const app::sender&, app::responder r) { r(::getpid()); });
    } else {
      follower = std::make_unique<app::follower>(m);
      m.on_agent([this](int pid) { report({{"kind", "agent"}, {"agent", pid}}); });
    }
  }
};

int run_role(const std::string& mode) {
  asio::io_context io;
  const app::role r = app::current_role();
  if (r == app::role::master) return 2;
  auto& m = app::messenger::of(io);
  role_helper h{io, m, mode};
  h.setup();
  if (mode == "exit-at-start") {
    // More lines than the master keeps, the last one unfinished: its report shows the last ten.
    const char* who = r == app::role::agent ? "agent" : "app";
    for (int k = 1; k <= 12; ++k) std::fprintf(stderr, "%s start-up line %d\n", who, k);
    std::fprintf(stderr, "fatal: cannot read config.json");
    std::fflush(nullptr);
    ::_exit(r == app::role::agent ? 3 : 4);
  }
  app::on_stop(io, [&h] { h.children.clear(); });
  std::unique_ptr<clutch::cluster::acceptor> acceptor;
  if (r == app::role::agent) {
    if (mode != "never-ready") app::ready(io);
  } else {
    clutch::cluster::listen(io, {asio::ip::address_v4::loopback(), 0},
                            [&](clutch::error_code ec, clutch::cluster::acceptor a) {
                              if (ec) std::_Exit(5);
                              acceptor = std::make_unique<clutch::cluster::acceptor>(a);
                              app::ready(io);
                            });
  }
  io.run();
  return 0;
}

int run_master(const std::string& agent_mode, const std::string& app_mode) {
  asio::io_context io;
  app::master m(io, {.agent_program = self(),
                     .agent_args = helper_args("app-role", {agent_mode}),
                     .app_program = self(),
                     .app_args = helper_args("app-role", {app_mode}),
                     .workers = 2,
                     .agent_start_timeout = std::chrono::seconds(20),
                     .app_start_timeout = std::chrono::seconds(20)});
  m.on_start([](app::role r, int pid) {
    std::printf("start %s %d\n", std::string(app::to_string(r)).c_str(), pid);
    std::fflush(stdout);
  });
  return m.run([&m](const app::ready_info& info) {
    json::array apps;
    for (int pid : info.app_pids) apps.push_back(pid);
    m.messenger().send_to_parent("ready", json::object{{"agent", info.agent_pid}, {"apps", apps}});
  });
}

}  // namespace

int run_app_helper(std::string_view name, int argc, char** argv) {
  auto arg = [&](int i) -> std::string { return i < argc ? argv[i] : std::string(); };
  if (name == "app-role") return run_role(arg(1));
  if (name == "app-master") return run_master(arg(1), arg(2));
  return 2;
}

}  // namespace clutch_test
