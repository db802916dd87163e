#include "cluster/reuseport_group.hpp"

#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "common/listen_socket.hpp"

namespace clutch::cluster::detail {

namespace asio = boost::asio;

reuseport_group::~reuseport_group() {
  for (auto& m : members_)
    if (m) ::shutdown(m.get(), SHUT_RDWR);
}

int reuseport_group::add(error_code& ec) {
  asio::io_context scratch;  // the socket only passes through Asio's objects here
  asio::ip::tcp::acceptor a(scratch);
  // The first member binds what was asked (port 0: the kernel picks one); the others join on that port.
  const auto at = members_.empty() ? at_ : bound_;
  asio::ip::tcp::endpoint bound;
  if ((ec = ::clutch::detail::open_listener(a, at, 511, true, bound))) return -1;
  if (members_.empty()) bound_ = bound;
  members_.emplace_back(a.release());
  // A new group (or one whose program was never set) spreads by hash over every member, this one included.
  if (!steered_.empty()) attach();
  return members_.back().get();
}

void reuseport_group::remove(int fd) {
  auto it = std::find_if(members_.begin(), members_.end(), [&](const os::unique_fd& m) { return m.get() == fd; });
  if (it == members_.end()) return;
  // shutdown() takes it out of the group now, even while a process still holds a copy; the kernel fills the hole
  // with the last member, as we do.
  ::shutdown(fd, SHUT_RDWR);
  if (it != members_.end() - 1) std::swap(*it, members_.back());
  members_.pop_back();
  std::erase(steered_, fd);
  attach();
}

error_code reuseport_group::steer(std::vector<int> fds) {
  std::sort(fds.begin(), fds.end());
  if (fds == steered_) return {};
  steered_ = std::move(fds);
  return attach();
}

error_code reuseport_group::attach() {
  if (members_.empty()) return {};
  std::vector<std::uint32_t> targets;
  for (std::size_t i = 0; i < members_.size(); ++i)
    if (steered_.empty() || std::binary_search(steered_.begin(), steered_.end(), members_[i].get()))
      targets.push_back(static_cast<std::uint32_t>(i));
  if (targets.empty())
    for (std::size_t i = 0; i < members_.size(); ++i) targets.push_back(static_cast<std::uint32_t>(i));
  // A = random % n; then "if A == k return targets[k]" for each k.
  std::vector<sock_filter> prog;
  prog.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<std::uint32_t>(SKF_AD_OFF + SKF_AD_RANDOM)));
  prog.push_back(BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, static_cast<std::uint32_t>(targets.size())));
  for (std::size_t k = 0; k + 1 < targets.size(); ++k) {
    prog.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(k), 0, 1));
    prog.push_back(BPF_STMT(BPF_RET | BPF_K, targets[k]));
  }
  prog.push_back(BPF_STMT(BPF_RET | BPF_K, targets.back()));
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  if (::setsockopt(members_.front().get(), SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fprog, sizeof fprog) != 0)
    return {errno, boost::system::system_category()};
  return {};
}

std::size_t reuseport_group::queued(int fd) const {
  tcp_info info{};
  socklen_t len = sizeof info;
  // For a listener, Linux reports its accept queue's length as tcpi_unacked.
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return 0;
  return info.tcpi_unacked;
}

}  // namespace clutch::cluster::detail
