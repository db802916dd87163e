// The supervisor's end of sd_notify(3): a datagram socket whose address children get as NOTIFY_SOCKET. Each
// datagram is "KEY=VALUE" lines (READY=1, STATUS=…, WATCHDOG=1, STOPPING=1, RELOADING=1, MAINPID=…), and the
// kernel says which process sent it (SO_PASSCRED), so a message can be tied to the worker that sent it.
//
//   supervisor::notify_socket n(io);               // an abstract address of its own: nothing to clean up on disk
//   n.on_message([](pid_t from, const supervisor::notify_message& m) { if (m.ready) ...; });
//   opts.env = clutch::environment::add({{"NOTIFY_SOCKET", n.address()}});
//
// Descriptors sent along (FDSTORE=1) are closed: clutch keeps no file-descriptor store. A datagram that is not
// text lines is ignored; nothing a child sends can crash the supervisor.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "clutch/error.hpp"

namespace clutch::supervisor {

struct notify_message {
  bool ready = false;
  bool stopping = false;
  bool reloading = false;
  bool watchdog = false;
  std::optional<std::string> status;
  std::map<std::string, std::string, std::less<>> fields;  // every KEY=VALUE line, those above included
};

// Parses one datagram; lines without '=' are skipped.
notify_message parse_notify(std::string_view datagram);

class notify_socket {
 public:
  using handler = std::function<void(pid_t from, const notify_message& m)>;

  // path empty: an abstract address the kernel picks (autobind), so that no other user can predict or take it. Throws std::system_error if the socket
  // cannot be made.
  explicit notify_socket(boost::asio::io_context& io, std::string path = {});
  ~notify_socket();
  notify_socket(const notify_socket&) = delete;
  notify_socket& operator=(const notify_socket&) = delete;

  // NOTIFY_SOCKET's value: "@name" for an abstract address, else the path.
  const std::string& address() const noexcept { return address_; }
  void on_message(handler h) { handler_ = std::move(h); }

 private:
  void wait();
  void drain();

  boost::asio::local::datagram_protocol::socket sock_;
  std::string address_;
  bool abstract_ = false;
  handler handler_;
};

// clutch's own sd_notify, to whoever started it with NOTIFY_SOCKET (systemd with Type=notify, another clutch).
class notify_client {
 public:
  // Takes NOTIFY_SOCKET from the environment (and removes it, so that no child mistakes it for its own); an
  // empty client when there is none.
  static notify_client from_environment();
  explicit operator bool() const noexcept { return !address_.empty(); }
  // One datagram; false if there is no socket or it could not be sent.
  bool send(std::string_view text) const;

 private:
  std::string address_;
};

}  // namespace clutch::supervisor
