// The seed's cluster program: a primary forks workers that serve HTTP/1.1 (Beast, keep-alive) on one shared port.
//
//   cluster_http [--workers N] [--port P] [--policy reuseport|shared|round-robin] [--timestamps]
//   curl localhost:8080/       → worker success <pid>
//   kill -HUP <primary pid>    → rolling reload, one worker at a time;   kill -TERM → graceful stop
#include <CLI/CLI.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <clutch/cluster.hpp>
#include <iostream>
#include <sstream>
#include <thread>

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace cluster = clutch::cluster;
using tcp = asio::ip::tcp;

bool stopping = false;  // in a worker: the primary asked it to stop; answer what comes, then close
std::string keep_alive_answer, closing_answer;  // the response, serialized once by Beast, both ways

std::string serialized(const std::string& body, bool keep_alive) {
  http::response<http::string_body> res{http::status::ok, 11};
  res.set(http::field::content_type, "text/plain");
  res.body() = body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  return out.str();
}

// One keep-alive connection: read a request (Beast's parser), answer it, again, until the client (or a stop) ends it.
struct session : std::enable_shared_from_this<session> {
  explicit session(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  boost::beast::flat_buffer buf;
  http::request<http::empty_body> req;

  void read() {
    req = {};
    http::async_read(sock, buf, req, [self = shared_from_this()](boost::beast::error_code ec, std::size_t) {
      if (!ec) self->answer();
    });
  }
  void answer() {
    const bool keep = req.keep_alive() && !stopping;
    asio::async_write(sock, asio::buffer(keep ? keep_alive_answer : closing_answer),
                      [self = shared_from_this(), keep](boost::beast::error_code ec, std::size_t) {
                        if (ec) return;
                        if (keep) return self->read();
                        self->sock.shutdown(tcp::socket::shutdown_send, ec);
                      });
  }
};

void accept(cluster::acceptor a) {
  a.async_accept([a](clutch::error_code ec, tcp::socket s) {
    if (ec) return;  // closed: the primary asked us to stop
    s.set_option(tcp::no_delay(true), ec);
    std::make_shared<session>(std::move(s))->read();
    accept(a);
  });
}

int run_worker(asio::io_context& io, unsigned short port) {
  const std::string body = "worker success " + std::to_string(::getpid()) + "\n";
  keep_alive_answer = serialized(body, true);
  closing_answer = serialized(body, false);
  cluster::listen(io, {tcp::v4(), port}, [](clutch::error_code ec, cluster::acceptor a) {
    if (ec) {
      std::cerr << "worker " << cluster::worker_id() << ": listen: " << ec.message() << std::endl;
      std::exit(1);
    }
    accept(a);
  });
  cluster::on_disconnect(io, [] { stopping = true; });
  clutch::channel& primary = cluster::to_primary(io);
  primary.on_message([&primary](const boost::json::value& msg, clutch::handle) {
    primary.send(boost::json::string("worker " + std::to_string(cluster::worker_id()) + " got " + boost::json::serialize(msg)));
  });
  io.run();
  return 0;
}

int main(int argc, char** argv) {
  CLI::App app{"A primary and N workers sharing one HTTP port"};
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  unsigned short port = 8080;
  cluster::scheduling policy = cluster::scheduling::reuseport;
  app.add_option("--workers", workers, "worker processes")->check(CLI::Range(1, 1024));
  app.add_option("--port", port, "TCP port (0: any free one)");
  bool timestamps = false;
  app.add_flag("--timestamps", timestamps, "end listening and exit lines with the time (CLOCK_MONOTONIC, seconds)");
  app.add_option("--policy", policy, "how connections reach workers")
      ->transform(CLI::CheckedTransformer(std::map<std::string, cluster::scheduling>{
          {"reuseport", cluster::scheduling::reuseport},
          {"shared", cluster::scheduling::shared},
          {"round-robin", cluster::scheduling::round_robin}}));
  CLI11_PARSE(app, argc, argv);

  asio::io_context io{1};
  if (cluster::is_worker()) return run_worker(io, port);

  cluster::primary p(io, {.policy = policy});
  auto who = [](cluster::worker& w) { return "worker " + std::to_string(w.id()); };
  auto pid = [](cluster::worker& w) { return " pid " + std::to_string(w.process().pid()); };
  auto at = [&] {
    auto now = std::chrono::steady_clock::now().time_since_epoch();
    return timestamps ? " at " + std::to_string(std::chrono::duration<double>(now).count()) : std::string();
  };
  p.on_online([&](cluster::worker& w) {
    std::cout << who(w) << " online" << pid(w) << std::endl;
    w.send(boost::json::string("你好, " + who(w)));
  });
  p.on_listening([&](cluster::worker& w, const tcp::endpoint& where) {
    std::cout << who(w) << " listening" << pid(w) << " on " << where << at() << std::endl;
  });
  p.on_message([](cluster::worker&, const boost::json::value& msg, clutch::handle) {
    std::cout << (msg.is_string() ? std::string(msg.get_string()) : boost::json::serialize(msg)) << std::endl;
  });
  p.on_exit([&](cluster::worker& w, const clutch::exit_status& st) {
    std::cout << who(w) << " exit" << pid(w)
              << (st.signal ? " signal " + std::to_string(*st.signal) : " code " + std::to_string(st.code.value_or(-1)))
              << at() << std::endl;
  });
  p.on_error([&](cluster::worker& w, clutch::error_code ec) { std::cout << who(w) << " error: " << ec.message() << std::endl; });
  for (unsigned i = 0; i < workers; ++i) p.fork();

  asio::signal_set signals(io, SIGHUP, SIGTERM, SIGINT);
  std::function<void(clutch::error_code, int)> on_signal = [&](clutch::error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      p.reload([](clutch::error_code ec) {
        std::cout << (ec ? "reload failed: " + ec.message() : std::string("reload done")) << std::endl;
      });
      return signals.async_wait(on_signal);
    }
    p.disconnect([&](clutch::error_code) {
      std::cout << "stopped" << std::endl;
      signals.cancel();
    });
  };
  signals.async_wait(on_signal);
  io.run();
}
