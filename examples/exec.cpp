// The seed's exec program: list a directory with `ls`, print stdout as it arrives and once more from the
// completion callback. Then the same again with a coroutine.
//
//   exec [DIR]     (default ./log)
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <clutch/child_process.hpp>
#include <iostream>

namespace asio = boost::asio;

// Callbacks: the child is returned at once, so its output can be streamed while the completion callback waits.
void with_callbacks(asio::io_context& io, const std::string& dir) {
  clutch::child ls = clutch::exec(io, "ls", {.cwd = dir}, [](clutch::error_code ec, clutch::exec_result r) {
    if (ec) std::cout << "exec error: " << ec.message() << "\n";
    std::cout << "stdout: " << r.out << "\n";
    std::cout << "stderr: " << r.err << "\n";
  });
  ls.on_data(clutch::child::out, [](std::string_view chunk) { std::cout << chunk; });
  ls.on_end(clutch::child::out, [] { std::cout << "输出结束\n"; });
}

// A coroutine: start the command, stream its output, then co_await the buffered result.
asio::awaitable<void> with_coroutine(asio::io_context& io, std::string dir) {
  clutch::child ls = clutch::exec(io, "ls", {.cwd = dir});
  ls.on_data(clutch::child::out, [](std::string_view chunk) { std::cout << chunk; });
  ls.on_end(clutch::child::out, [] { std::cout << "输出结束\n"; });
  auto [ec, r] = co_await ls.async_result(asio::as_tuple(asio::use_awaitable));
  if (ec) std::cout << "exec error: " << ec.message() << "\n";
  std::cout << "stdout: " << r.out << "\n";
  std::cout << "stderr: " << r.err << "\n";
}

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "./log";
  asio::io_context io;
  std::cout << "-- callbacks\n";
  with_callbacks(io, dir);
  io.run();
  io.restart();
  std::cout << "-- co_await\n";
  asio::co_spawn(io, with_coroutine(io, dir), asio::detached);
  io.run();
}
