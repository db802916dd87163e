#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

#include "clutch/ipc.hpp"
#include "common/error_detail.hpp"
#include "ipc/channel_state.hpp"
#include "process/held_child.hpp"

namespace clutch {

namespace {

bool runs_under_node(std::string_view program) {
  for (std::string_view ext : {".js", ".mjs", ".cjs"}) {
    if (program.size() > ext.size() && program.ends_with(ext)) return true;
  }
  return false;
}

forked_child failed(asio::io_context& io, error_code why) {
  // A channel that is closed from the start, so that send() on it fails as it would after a disconnect.
  auto ch = std::make_shared<detail::channel_state>(io, -1, channel_options{});
  return forked_child(detail::failed_child(io, why), channel(std::move(ch)));
}

}  // namespace

forked_child fork(asio::io_context& io, std::string_view program, const std::vector<std::string>& args,
                  const options& opts, const channel_options& copts) {
  options o = opts;
  if (o.stdio.empty()) {
    const auto std_slot = o.silent ? stdio::pipe : stdio::inherit;
    o.stdio = {std_slot, std_slot, std_slot, stdio::ipc};
  }
  int ipc_slot = -1;
  for (std::size_t i = 0; i < o.stdio.size(); ++i) {
    if (o.stdio[i] != stdio::ipc) continue;
    if (ipc_slot >= 0) return failed(io, detail::errno_error(EINVAL));  // exactly one channel per child
    ipc_slot = static_cast<int>(i);
  }
  if (ipc_slot < 0) return failed(io, detail::errno_error(EINVAL));

  os::fd_pair pair;
  if (int e = os::make_socketpair(pair); e != 0) return failed(io, detail::errno_error(e));
  o.stdio[static_cast<std::size_t>(ipc_slot)] = stdio::fd(pair.second.get());

  o.env = o.env.plus({{"NODE_CHANNEL_FD", std::to_string(ipc_slot)}, {"NODE_CHANNEL_SERIALIZATION_MODE", "json"}});

  std::string file(program);
  std::vector<std::string> argv;
  if (runs_under_node(program)) {
    file = o.exec_path;
    argv = o.exec_argv;
    argv.emplace_back(program);
  }
  argv.insert(argv.end(), args.begin(), args.end());

  auto held = detail::start_held_child(io, file, argv, o);
  pair.second.reset();  // the child has its copy; ours would keep the channel open after the child is gone
  if (auto ec = held.process.spawn_error()) return failed(io, ec);

  channel ch(io, pair.first.release(), copts);
  // The exit is reported once the channel has delivered everything the child sent before it exited: when the
  // channel closes, or when the exit is seen, after reading what the socket holds by then. (Waiting for the
  // channel's EOF alone would wait for any grandchild that inherited it.)
  ch.on_disconnect([release = held.release](error_code) { release(); });
  detail::on_process_end(held.process, [weak_ch = std::weak_ptr(ch.state()), release = held.release] {
    if (auto c = weak_ch.lock()) c->drain();
    release();
  });
  return forked_child(std::move(held.process), std::move(ch));
}

// Overloads rather than default arguments: see GCC 12's co_await bug in child_process.hpp.
forked_child fork(asio::io_context& io, std::string_view program, const std::vector<std::string>& args) {
  static const options defaults{};
  return fork(io, program, args, defaults);
}

forked_child fork(asio::io_context& io, std::string_view program) {
  static const std::vector<std::string> no_args;
  return fork(io, program, no_args);
}

std::optional<channel> parent_channel(asio::io_context& io, const channel_options& opts, error_code& ec) {
  ec.clear();
  const char* fd_text = std::getenv("NODE_CHANNEL_FD");
  if (fd_text == nullptr) return std::nullopt;
  std::string fd_str = fd_text;
  const char* mode = std::getenv("NODE_CHANNEL_SERIALIZATION_MODE");
  bool advanced = mode != nullptr && std::string_view(mode) != "json";
  // Gone from the environment either way, so that our own children do not think the channel is theirs.
  ::unsetenv("NODE_CHANNEL_FD");
  ::unsetenv("NODE_CHANNEL_SERIALIZATION_MODE");

  char* end = nullptr;
  long fd = std::strtol(fd_str.c_str(), &end, 10);
  if (fd_str.empty() || *end != '\0' || fd < 0 || fd > 1 << 20) {
    ec = detail::errno_error(EINVAL);
    return std::nullopt;
  }
  if (advanced) {  // Node's V8 serialization: a binary format clutch does not speak
    ec = detail::errno_error(ENOTSUP);
    return std::nullopt;
  }
  int flags = ::fcntl(static_cast<int>(fd), F_GETFD);
  if (flags < 0) {
    ec = detail::errno_error(errno);
    return std::nullopt;
  }
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
    ec = detail::errno_error(ENOTSOCK);
    return std::nullopt;
  }
  ::fcntl(static_cast<int>(fd), F_SETFD, flags | FD_CLOEXEC);
  return channel(io, static_cast<int>(fd), opts);
}

std::optional<channel> parent_channel(asio::io_context& io, const channel_options& opts) {
  error_code ignored;
  return parent_channel(io, opts, ignored);
}

}  // namespace clutch
