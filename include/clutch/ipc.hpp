// clutch/ipc.hpp — fork() and the message channel, speaking Node's own protocol.
//
//   // Parent: fork a C++ program or an unmodified Node script (a .js file runs under `node`).
//   clutch::forked_child c = clutch::fork(io, "child.js");
//   c.on_message([](const boost::json::value& msg, clutch::handle) { std::cout << msg << "\n"; });
//   c.send("你好啊，我的子进程！");                       // returns false past the high-water mark
//   c.send({{"cmd", "job"}, {"id", 7}}, [](clutch::error_code ec) { /* written, or channel_closed */ });
//   c.send("socket", clutch::handle(std::move(accepted_tcp_socket)));   // the socket moves to the child
//
//   // Child (C++): the channel its parent opened, if any.
//   std::optional<clutch::channel> parent = clutch::parent_channel(io);
//   if (parent) parent->on_message([&](const boost::json::value& msg, clutch::handle h) { parent->send("ok"); });
//
// The wire format is Node's 'json' serialization: one JSON text and '\n' per message over a Unix stream socket, the
// child's end at NODE_CHANNEL_FD (fd 3 by default). Handles go as {"cmd":"NODE_HANDLE","type":…,"msg":…} with the
// descriptor attached by SCM_RIGHTS, and later messages wait for the peer's NODE_HANDLE_ACK (a NACK resends).
// Messages whose cmd begins with "NODE_" or "CLUTCH_" are internal: they never reach on_message (CLUTCH_ ones and
// Node's cluster protocol, NODE_CLUSTER, reach on_internal_message).
//
// Threads: as for child_process.hpp, a channel belongs to one io_context running on one thread.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/json/value.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch/error.hpp"

namespace clutch {

// A socket travelling on a channel: a connected or listening TCP or Unix stream socket. It owns its descriptor.
class handle {
 public:
  enum class kind { none, tcp_socket, tcp_server, unix_socket, unix_server };

  handle() = default;
  // Takes ownership of fd; what kind of socket it is comes from the kernel (SO_DOMAIN, SO_ACCEPTCONN).
  explicit handle(int fd);
  explicit handle(asio::ip::tcp::socket&& s);
  explicit handle(asio::ip::tcp::acceptor&& a);
  explicit handle(asio::local::stream_protocol::socket&& s);
  explicit handle(asio::local::stream_protocol::acceptor&& a);
  handle(handle&&) noexcept;
  handle& operator=(handle&&) noexcept;
  ~handle();

  explicit operator bool() const noexcept { return fd_ >= 0; }
  kind what() const noexcept { return kind_; }
  int native_handle() const noexcept { return fd_; }
  int release() noexcept;
  // Node's name for what this is on the wire: "net.Socket" or "net.Server".
  const char* node_type() const noexcept;

  // The descriptor as an Asio object on ex; throws std::logic_error if it is another kind.
  asio::ip::tcp::socket tcp_socket(const asio::any_io_executor& ex) &&;
  asio::ip::tcp::acceptor tcp_acceptor(const asio::any_io_executor& ex) &&;
  asio::local::stream_protocol::socket unix_socket(const asio::any_io_executor& ex) &&;
  asio::local::stream_protocol::acceptor unix_acceptor(const asio::any_io_executor& ex) &&;

 private:
  int fd_ = -1;
  kind kind_ = kind::none;
};

struct channel_options {
  std::size_t max_message = 64 * 1024 * 1024;  // a longer incoming line closes the channel (message_too_large)
  std::size_t max_depth = 1024;                // how deeply arrays and objects may nest in an incoming message
  std::size_t high_water_mark = 128 * 1024;    // send() returns false while more bytes than this wait to be written
};

namespace detail {
struct channel_state;
using send_handler = asio::any_completion_handler<void(error_code)>;
// Queues one message; returns whether the queue is under its high-water mark. handler may be empty. node_type
// names the handle on the wire instead of handle::node_type(): "net.Native" gives a Node peer the bare handle, as
// Node's cluster primary sends a listening socket to its worker.
bool channel_send(const std::shared_ptr<channel_state>& s, const boost::json::value& msg, handle h,
                  send_handler handler, const char* node_type = nullptr);
}  // namespace detail

// One end of a message channel. Copies share the same channel.
class channel {
 public:
  using message_handler = std::function<void(const boost::json::value& message, handle h)>;

  channel() = default;
  // Adopts a connected Unix stream socket (takes ownership of fd) and starts reading.
  channel(asio::io_context& io, int fd, const channel_options& opts = {});

  // Queues message (and, in the second form, a handle, which moves to the peer). Returns false when the channel
  // is closed or the queue is past its high-water mark (keep sending if you must: nothing is dropped). The token
  // completes with void(error_code) once the bytes are written: channel_closed if the channel closed first.
  // Like exec(), a callback token still gets the bool back; other tokens get what they make.
  bool send(const boost::json::value& message) { return send(message, handle{}); }
  bool send(const boost::json::value& message, handle h) {
    return detail::channel_send(state_, message, std::move(h), {});
  }
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto send(const boost::json::value& message, CompletionToken&& token) {
    return send(message, handle{}, std::forward<CompletionToken>(token));
  }
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto send(const boost::json::value& message, handle h, CompletionToken&& token);

  // Node's 'message' event. Handlers run in registration order, one message at a time, in arrival order.
  void on_message(message_handler handler);
  // Node's 'disconnect': once, when the channel closes for any reason. ec is empty for an orderly close (either
  // side disconnected), else why: invalid_message, message_too_large, or the socket error.
  void on_disconnect(std::function<void(error_code ec)> handler);
  // For clutch's own layers: messages whose cmd begins with "CLUTCH_", and NODE_CLUSTER (other NODE_ ones are
  // handled here). Several
  // layers share a channel, so each handler sees the handle by reference and moves it out only if the message is
  // its own: later handlers then find it empty.
  using internal_handler = std::function<void(const boost::json::value& message, handle& h)>;
  void on_internal_message(internal_handler handler);

  // Writes what is queued, then closes. Later sends fail with channel_closed.
  void disconnect();
  bool connected() const noexcept;
  // Bytes queued and not yet written.
  std::size_t queued_bytes() const noexcept;

  explicit channel(std::shared_ptr<detail::channel_state> s) : state_(std::move(s)) {}
  const std::shared_ptr<detail::channel_state>& state() const noexcept { return state_; }

 private:
  std::shared_ptr<detail::channel_state> state_;
};

template <asio::completion_token_for<void(error_code)> CompletionToken>
auto channel::send(const boost::json::value& message, handle h, CompletionToken&& token) {
  bool under = true;
  auto init = [&under](auto handler, std::shared_ptr<detail::channel_state> s, const boost::json::value* m,
                       handle* hp) { under = detail::channel_send(s, *m, std::move(*hp), std::move(handler)); };
  using R = decltype(asio::async_initiate<CompletionToken, void(error_code)>(init, token, state_, &message, &h));
  if constexpr (std::is_void_v<R>) {
    asio::async_initiate<CompletionToken, void(error_code)>(init, token, state_, &message, &h);
    return under;
  } else {
    // A deferred token runs the initiation later: it must own copies, not point at our arguments.
    auto owned = [](auto handler, std::shared_ptr<detail::channel_state> s, boost::json::value m,
                    std::shared_ptr<handle> hp) { detail::channel_send(s, m, std::move(*hp), std::move(handler)); };
    return asio::async_initiate<CompletionToken, void(error_code)>(owned, token, state_, message,
                                                                   std::make_shared<handle>(std::move(h)));
  }
}

// A child started by fork(): a clutch::child with a channel to it.
class forked_child : public child {
 public:
  forked_child() = default;
  forked_child(child c, clutch::channel ch) : child(std::move(c)), channel_(std::move(ch)) {}

  clutch::channel& channel() noexcept { return channel_; }
  bool send(const boost::json::value& message) { return channel_.send(message); }
  bool send(const boost::json::value& message, handle h) { return channel_.send(message, std::move(h)); }
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto send(const boost::json::value& message, CompletionToken&& token) {
    return channel_.send(message, std::forward<CompletionToken>(token));
  }
  template <asio::completion_token_for<void(error_code)> CompletionToken>
  auto send(const boost::json::value& message, handle h, CompletionToken&& token) {
    return channel_.send(message, std::move(h), std::forward<CompletionToken>(token));
  }
  void on_message(clutch::channel::message_handler h) { channel_.on_message(std::move(h)); }
  void on_disconnect(std::function<void(error_code)> h) { channel_.on_disconnect(std::move(h)); }
  void disconnect() { channel_.disconnect(); }
  bool connected() const noexcept { return channel_.connected(); }

 private:
  clutch::channel channel_;
};

// Starts program with a channel. A program ending in .js (.mjs, .cjs) runs as `exec_path exec_argv… program
// args…`; anything else is executed directly. The channel sits at the stdio slot marked stdio::ipc (default: fd
// 3, after stdin/stdout/stderr inherited, or piped when silent); exactly one slot may be ipc. The child's
// environment gets NODE_CHANNEL_FD and NODE_CHANNEL_SERIALIZATION_MODE=json.
// A failure to start is reported like spawn()'s (spawn_error(), and every wait completes with it).
// The child's exit (on_exit, async_wait) is reported only after everything it sent has been delivered.
forked_child fork(asio::io_context& io, std::string_view program, const std::vector<std::string>& args,
                  const options& opts, const channel_options& copts = {});
forked_child fork(asio::io_context& io, std::string_view program, const std::vector<std::string>& args);
forked_child fork(asio::io_context& io, std::string_view program);

// In a child: the channel from NODE_CHANNEL_FD, or empty when there is none. The variables are removed from the
// environment and the descriptor made close-on-exec, so this process's own children do not inherit the channel.
// ec (second form) says why a channel that was announced could not be used (a bad fd, serialization "advanced").
std::optional<channel> parent_channel(asio::io_context& io, const channel_options& opts = {});
std::optional<channel> parent_channel(asio::io_context& io, const channel_options& opts, error_code& ec);

}  // namespace clutch
