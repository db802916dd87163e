// The seed's master / agent / app workers: the agent refreshes a value every second and pushes it to the app
// workers over their direct channels; the workers serve it over HTTP with their pid. The master only starts,
// watches and forwards.
//
//   agent_app [--workers N] [--port 7001]
//   curl localhost:7001/   → value 3 from app worker 4242
//   kill -TERM <master>    → app workers stop first, then the agent
#include <CLI/CLI.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <clutch/app.hpp>
#include <iostream>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
namespace app = clutch::app;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

std::string say(const json::value& v) { return v.is_string() ? std::string(v.get_string()) : json::serialize(v); }

void run_agent(asio::io_context& io) {
  std::cout << "agent " << ::getpid() << " started" << std::endl;
  auto& m = app::messenger::of(io);
  static app::leader leader(m);  // the one upstream resource: here, a value it refreshes every second
  static std::int64_t value = 0;
  leader.on_call("value", [](const json::value&, const app::sender&, app::responder r) { r(value); });
  m.on("hello", [&m](const json::value& data, const app::sender& from) {
    std::cout << "agent got hello: " << say(data) << std::endl;
    m.send_to(from.pid, "welcome", "hello back from the agent");
  });
  m.on("greeting", [](const json::value& data, const app::sender&) { std::cout << "agent got " << say(data) << std::endl; });
  static asio::steady_timer tick(io);
  static std::function<void(clutch::error_code)> refresh = [&m](clutch::error_code ec) {
    if (ec) return;
    leader.publish("value", ++value);
    if (value % 3 == 0) m.send_random("job", value);  // one app worker, any
    tick.expires_after(1s);
    tick.async_wait(refresh);
  };
  refresh({});
  app::on_stop(io, [] {
    std::cout << "agent stopping" << std::endl;
    tick.cancel();
  });
  app::ready(io);
}

void serve(tcp::socket sock, std::int64_t value) {
  auto s = std::make_shared<tcp::socket>(std::move(sock));
  auto buf = std::make_shared<boost::beast::flat_buffer>();
  auto req = std::make_shared<http::request<http::empty_body>>();
  http::async_read(*s, *buf, *req, [s, buf, req, value](boost::beast::error_code ec, std::size_t) {
    if (ec) return;
    auto res = std::make_shared<http::response<http::string_body>>(http::status::ok, 11);
    res->body() = "value " + std::to_string(value) + " from app worker " + std::to_string(::getpid()) + "\n";
    res->keep_alive(false);
    res->prepare_payload();
    http::async_write(*s, *res, [s, res](boost::beast::error_code, std::size_t) {});
  });
}

void run_app(asio::io_context& io, unsigned short port) {
  std::cout << "app worker " << clutch::cluster::worker_id() << " (" << ::getpid() << ") started" << std::endl;
  auto& m = app::messenger::of(io);
  static app::follower follower(m);
  static std::int64_t value = 0;
  follower.subscribe("value", [](const json::value& v) { value = v.to_number<std::int64_t>(); });
  m.on("welcome", [](const json::value& data, const app::sender&) { std::cout << "app worker got " << say(data) << std::endl; });
  m.on("job", [](const json::value& n, const app::sender&) { std::cout << "app worker " << ::getpid() << " takes job " << n << std::endl; });
  m.on("greeting", [](const json::value& data, const app::sender&) { std::cout << "app worker got " << say(data) << std::endl; });
  static clutch::cluster::acceptor acceptor;
  static std::function<void()> accept = [] {
    acceptor.async_accept([](clutch::error_code ec, tcp::socket s) {
      if (ec) return;
      serve(std::move(s), value);
      accept();
    });
  };
  clutch::cluster::listen(io, {tcp::v4(), port}, [&io, &m](clutch::error_code ec, clutch::cluster::acceptor a) {
    if (ec) {
      std::cerr << "app worker: listen: " << ec.message() << std::endl;
      std::exit(1);
    }
    acceptor = a;
    accept();
    app::ready(io);
    m.send_to_agent("hello", "app worker " + std::to_string(::getpid()) + " is up");
    follower.call("value", nullptr, 2s, [](clutch::error_code ec, const json::value& v) {
      if (!ec) std::cout << "app worker asked the agent: value is " << v << std::endl;
    });
  });
  app::on_stop(io, [] { std::cout << "app worker " << ::getpid() << " stopping" << std::endl; });
}

int main(int argc, char** argv) {
  CLI::App cli{"A master, an agent and app workers serving HTTP"};
  unsigned workers = 0;
  unsigned short port = 7001;
  cli.add_option("--workers", workers, "app workers (0: CPUs minus one for the agent, at least one)");
  cli.add_option("--port", port, "TCP port (0: any free one)");
  CLI11_PARSE(cli, argc, argv);

  asio::io_context io{1};
  switch (app::current_role()) {
    case app::role::agent: run_agent(io); break;
    case app::role::app: run_app(io, port); break;
    default: {
      std::cout << "master " << ::getpid() << " started" << std::endl;
      app::master master(io, {.workers = workers});
      master.on_exit([](app::role r, int pid, const clutch::exit_status& st) {
        std::cout << (r == app::role::app ? "app worker" : "agent") << " " << pid << " exited"
                  << (st.signal ? " (signal)" : "") << std::endl;
      });
      return master.run([&master](const app::ready_info& r) {
        std::cout << "ready at " << r.url() << " (agent " << r.agent_pid << ", " << r.app_pids.size()
                  << " app workers)" << std::endl;
        master.messenger().broadcast("greeting", "hello from the master, to everyone");
        master.messenger().send_to_app("greeting", "hello from the master, to the app workers");
        master.messenger().send_to_parent("ready", r.url(), [](clutch::error_code) {});  // if a parent forked us
      });
    }
  }
  io.run();
}
