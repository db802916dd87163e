// `--ready listen`: is a worker accepting connections yet? Told from /proc, without the program's help: a process
// of its tree has one of the given listening sockets in an epoll set (Node, Python's asyncio, Go, nginx…), or a
// thread of it is blocked in accept() on one (a plain C server).
//
//   std::set<ino_t> socks = supervisor::socket_inodes({3, 4});    // our listening sockets, by inode
//   if (supervisor::accepting(worker_pid, socks)) mark_ready();
#pragma once

#include <sys/types.h>

#include <set>
#include <vector>

namespace clutch::supervisor {

std::set<ino_t> socket_inodes(const std::vector<int>& fds);

// pid or any of its descendants waits for connections on one of `sockets`.
bool accepting(pid_t pid, const std::set<ino_t>& sockets);

}  // namespace clutch::supervisor
