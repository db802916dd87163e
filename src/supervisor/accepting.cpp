#include "supervisor/accepting.hpp"

#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace clutch::supervisor {

namespace fs = std::filesystem;

std::set<ino_t> socket_inodes(const std::vector<int>& fds) {
  std::set<ino_t> out;
  for (int fd : fds) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) out.insert(st.st_ino);
  }
  return out;
}

namespace {

// "socket:[12345]" → 12345; 0 for anything else.
ino_t socket_of(const fs::path& link) {
  std::error_code ec;
  const auto target = fs::read_symlink(link, ec).string();
  if (ec || target.rfind("socket:[", 0) != 0) return 0;
  return static_cast<ino_t>(std::strtoull(target.c_str() + 8, nullptr, 10));
}

bool epoll_watches(const std::string& proc, const std::set<ino_t>& sockets) {
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator(proc + "/fd", ec)) {
    std::error_code link_ec;
    if (fs::read_symlink(fd.path(), link_ec).string() != "anon_inode:[eventpoll]") continue;
    // Each watched file is a line "tfd: N events: … ino:HEX sdev:…".
    std::ifstream info(proc + "/fdinfo/" + fd.path().filename().string());
    for (std::string line; std::getline(info, line);) {
      const auto at = line.find(" ino:");
      if (line.rfind("tfd:", 0) != 0 || at == std::string::npos) continue;
      if (sockets.contains(static_cast<ino_t>(std::strtoull(line.c_str() + at + 5, nullptr, 16)))) return true;
    }
  }
  return false;
}

bool blocked_in_accept(const std::string& proc, const std::set<ino_t>& sockets) {
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(proc + "/task", ec)) {
    std::ifstream in(task.path() / "syscall");
    long nr = -1;
    std::string arg0;
    if (!(in >> nr >> arg0)) continue;
    if (nr != SYS_accept && nr != SYS_accept4) continue;
    const long fd = std::strtol(arg0.c_str(), nullptr, 16);
    if (sockets.contains(socket_of(proc + "/fd/" + std::to_string(fd)))) return true;
  }
  return false;
}

void tree(pid_t pid, std::vector<pid_t>& out) {
  out.push_back(pid);
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream children(task.path() / "children");
    for (pid_t child; children >> child;)
      if (out.size() < 256) tree(child, out);
  }
}

}  // namespace

bool accepting(pid_t pid, const std::set<ino_t>& sockets) {
  if (sockets.empty()) return false;
  std::vector<pid_t> pids;
  tree(pid, pids);
  for (pid_t p : pids) {
    const auto proc = "/proc/" + std::to_string(p);
    if (epoll_watches(proc, sockets) || blocked_in_accept(proc, sockets)) return true;
  }
  return false;
}

}  // namespace clutch::supervisor
