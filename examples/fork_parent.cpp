// The seed's fork parent: fork a child, send it a greeting, print what comes back, then let it go.
//
//   fork_parent [PROGRAM]     default: fork_child beside this program; a .js file runs under node
//                             (fork_parent tests/fixtures/child.js drives the seed's own Node child)
#include <boost/json/serialize.hpp>
#include <clutch/ipc.hpp>
#include <filesystem>
#include <iostream>

namespace asio = boost::asio;

int main(int argc, char** argv) {
  std::string program = argc > 1 ? argv[1]
                                 : (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "fork_child").string();
  asio::io_context io;
  clutch::forked_child child = clutch::fork(io, program);
  if (child.spawn_error()) {
    std::cerr << "fork " << program << ": " << child.spawn_error().message() << "\n";
    return 1;
  }
  child.on_message([&](const boost::json::value& msg, clutch::handle) {
    std::cout << "主进程收到信息:" << (msg.is_string() ? std::string(msg.get_string()) : boost::json::serialize(msg))
              << std::endl;
    child.disconnect();  // one reply is all we wanted; the child exits once its channel is gone
  });
  child.send("你好啊，我的子进程！");
  int code = 1;
  child.async_wait([&](clutch::error_code ec, clutch::exit_status st) {
    if (ec) std::cerr << "child: " << ec.message() << "\n";
    code = !ec && st.ok() ? 0 : 1;
  });
  io.run();
  return code;
}
