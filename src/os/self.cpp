#include "os/self.hpp"

#include <unistd.h>

#include <fstream>
#include <iterator>

namespace clutch::os {

command self_command() {
  command c;
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  c.exe = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string("/proc/self/exe");
  if (c.exe.ends_with(" (deleted)")) c.exe = "/proc/self/exe";
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (std::size_t i = 0; i < all.size();) {
    std::size_t end = all.find('\0', i);
    if (end == std::string::npos) end = all.size();
    c.argv.emplace_back(all, i, end - i);
    i = end + 1;
  }
  return c;
}

}  // namespace clutch::os
