// The programs the cluster tests run as workers and as a primary (the test binary re-run with --helper).
//
//   cluster-worker MODE PORT [MARKER]   a worker on 127.0.0.1:PORT through the cluster. It answers each line a client
//                                       sends with its pid ("<pid>\n"); once asked to stop, it answers the next line
//                                       with "<pid> bye\n" and closes. MODE: serve, exclusive (a port of its own),
//                                       serve-two (two servers, each from its own listen() on PORT), leave
//                                       (serves, and leaves by itself on the message "leave"),
//                                       crash-at-start (exit 1 once online), stuck-on-stop (never returns from the
//                                       stop request). If MARKER names a file, the worker never listens (it never
//                                       becomes ready), or exits 1 if the file says "crash".
//                                       Messages: "ping" → "pong <id>", "crash" → exit 3. A failed listen is
//                                       reported to the primary as {"listen_error": errno}.
//   cluster-primary N                   a primary with N serve workers on port 0; prints "<pid> <pid>…" once all
//                                       listen, then runs until it is killed.
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/object.hpp>
#include <clutch/cluster.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "helpers.hpp"

namespace clutch_test {

namespace {

namespace asio = boost::asio;
namespace cl = clutch::cluster;
namespace json = boost::json;
using tcp = asio::ip::tcp;

bool stopping = false;

struct line_session : std::enable_shared_from_this<line_session> {
  explicit line_session(tcp::socket s) : sock(std::move(s)) {}
  tcp::socket sock;
  asio::streambuf in;
  std::string reply;

  void next() {
    asio::async_read_until(sock, in, '\n', [self = shared_from_this()](clutch::error_code ec, std::size_t n) {
      if (ec) return;
      self->in.consume(n);
      const bool last = stopping;
      self->reply = std::to_string(::getpid()) + (last ? " bye\n" : "\n");
      asio::async_write(self->sock, asio::buffer(self->reply), [self, last](clutch::error_code ec, std::size_t) {
        if (ec) return;
        if (last) {
          self->sock.shutdown(tcp::socket::shutdown_send, ec);
          return;
        }
        self->next();
      });
    });
  }
};

void accept_loop(cl::acceptor a) {
  a.async_accept([a](clutch::error_code ec, tcp::socket s) {
    if (ec) return;
    std::make_shared<line_session>(std::move(s))->next();
    accept_loop(a);
  });
}

int worker(int argc, char** argv) {
  const std::string mode = argv[1];
  const auto port = static_cast<unsigned short>(std::atoi(argv[2]));
  asio::io_context io;
  clutch::channel& primary = cl::to_primary(io);
  primary.on_message([&primary, &io](const json::value& m, clutch::handle) {
    if (!m.is_string()) return;
    if (m.get_string() == "crash") std::_Exit(3);
    if (m.get_string() == "ping") primary.send(json::string("pong " + std::to_string(cl::worker_id())));
    if (m.get_string() == "leave") cl::disconnect_self(io);
  });
  if (mode == "crash-at-start") std::_Exit(1);  // the online message is already written
  if (argc > 3 && ::access(argv[3], F_OK) == 0) {
    std::string what;
    std::ifstream(argv[3]) >> what;
    if (what == "crash") std::_Exit(1);
    io.run();  // online, never listening: never ready
    return 0;
  }
  cl::on_disconnect(io, [&mode] {
    stopping = true;
    if (mode == "stuck-on-stop")
      for (;;) ::pause();
  });
  cl::listen_options lo{.exclusive = mode == "exclusive"};
  // serve-two: the second listen() only once the first has its socket, so that the order of the calls is sure.
  std::function<void(int)> listen_next = [&](int left) {
    cl::listen(io, {asio::ip::address_v4::loopback(), port}, lo, [&, left](clutch::error_code ec, cl::acceptor a) {
      if (ec) {
        primary.send(json::object{{"listen_error", ec.value()}});
        return;
      }
      accept_loop(a);
      if (left > 1) listen_next(left - 1);
    });
  };
  listen_next(mode == "serve-two" ? 2 : 1);
  io.run();
  return 0;
}

int primary(int, char** argv) {
  const int n = std::atoi(argv[1]);
  asio::io_context io;
  cl::primary p(io, {.args = helper_args("cluster-worker", {"serve", "0"}), .restart = cl::restart_policy::never});
  std::string pids;
  int listening = 0;
  p.on_listening([&](cl::worker& w, const tcp::endpoint&) {
    pids += std::to_string(w.process().pid()) + " ";
    if (++listening == n) std::cout << pids << std::endl;
  });
  for (int i = 0; i < n; ++i) p.fork();
  io.run();
  return 0;
}

}  // namespace

int run_cluster_helper(std::string_view name, int argc, char** argv) {
  if (name == "cluster-worker" && argc >= 3) return worker(argc, argv);
  if (name == "cluster-primary" && argc >= 2) return primary(argc, argv);
  std::cerr << "bad cluster helper call\n";
  return 99;
}

}  // namespace clutch_test
