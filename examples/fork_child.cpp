// The seed's fork child: answer the parent's message. Runs until the parent disconnects.
#include <boost/json/serialize.hpp>
#include <clutch/ipc.hpp>
#include <iostream>

int main() {
  boost::asio::io_context io;
  auto parent = clutch::parent_channel(io);
  if (!parent) {
    std::cerr << "fork_child: start me with fork_parent (there is no parent channel)\n";
    return 1;
  }
  parent->on_message([&](const boost::json::value& msg, clutch::handle) {
    std::cout << "子进程收到信息:" << (msg.is_string() ? std::string(msg.get_string()) : boost::json::serialize(msg))
              << std::endl;
    parent->send("我是子进程，我收到了！！");
  });
  io.run();
}
