#include "supervisor/control.hpp"

#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "os/fd.hpp"

namespace clutch::supervisor {

namespace asio = boost::asio;
namespace json = boost::json;
using local = asio::local::stream_protocol;

daemon_paths daemon_paths::from_environment() {
  daemon_paths p;
  const char* home = std::getenv("CLUTCH_HOME");
  if (home && *home) {
    p.home = home;
    p.socket = p.home + "/clutch.sock";
  } else {
    const char* user_home = std::getenv("HOME");
    if (!user_home || !*user_home) {
      const passwd* pw = ::getpwuid(::getuid());
      user_home = pw ? pw->pw_dir : "/tmp";
    }
    p.home = std::string(user_home) + "/.clutch";
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    p.socket = runtime && *runtime ? std::string(runtime) + "/clutch.sock" : p.home + "/clutch.sock";
  }
  p.pid_file = p.home + "/daemon.pid";
  p.lock_file = p.home + "/daemon.lock";
  p.daemon_log = p.home + "/daemon.log";
  p.logs = p.home + "/logs";
  p.table = p.home + "/apps.json";
  p.dump = p.home + "/dump.json";
  return p;
}

std::string daemon_paths::reachable_socket() const {
  const std::string in_home = home + "/clutch.sock";
  struct stat st {};
  if (socket != in_home && ::stat(socket.c_str(), &st) != 0 && ::stat(in_home.c_str(), &st) == 0) return in_home;
  return socket;
}

error_code private_folder(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return ec;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return error_code(errno, boost::system::system_category());
  if (st.st_uid != ::geteuid()) return make_error_code(std::errc::permission_denied);
  if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), st.st_mode & 0700) != 0)
    return error_code(errno, boost::system::system_category());
  return {};
}

control_session::control_session(local::socket s) : socket_(std::move(s)) {}

control_session::control_session(asio::any_io_executor ex, std::function<void(const json::object&)> answers)
    : socket_(std::move(ex)), answers_(std::move(answers)) {}

void control_session::start(std::function<void(json::object, std::shared_ptr<control_session>)> handler) {
  // A client that connects and says nothing holds a session slot: it gets request_timeout to say it.
  request_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor(), request_timeout);
  request_timer_->async_wait([ws = weak_from_this()](error_code ec) {
    if (auto self = ws.lock(); self && !ec) self->close();
  });
  // One request line; after it, reading goes on only to notice the peer hanging up.
  asio::async_read_until(
      socket_, asio::dynamic_buffer(in_, 64 * 1024), '\n',
      [self = shared_from_this(), handler = std::move(handler)](error_code ec, std::size_t n) mutable {
        self->request_timer_->cancel();
        if (ec) return self->close();
        json::object request;
        error_code parse_ec;
        auto v = json::parse(std::string_view(self->in_).substr(0, n), parse_ec);
        self->in_.erase(0, n);
        if (parse_ec || !v.is_object()) {
          self->send({{"ok", false}, {"error", "the request is not a JSON object"}});
          return self->end();
        }
        // Watch for the hang-up.
        // The pending read owns the watch; the watch names itself only weakly, so that a read still pending when
        // the daemon ends (its io_context destroyed) frees the session with it.
        auto watch = std::make_shared<std::function<void()>>();
        *watch = [self, weak = std::weak_ptr(watch)] {
          self->in_.resize(512);
          self->socket_.async_read_some(asio::buffer(self->in_), [self, watch = weak.lock()](error_code ec, std::size_t) {
            if (ec || !watch) return self->close();
            (*watch)();
          });
        };
        (*watch)();
        handler(std::move(v.as_object()), self);
      });
}

void control_session::send(const json::object& answer) {
  if (!open_) return;
  if (answers_) return answers_(answer);
  // A reader that cannot keep up (`logs -f` behind a stopped terminal, under a fast writer) is let go rather than
  // buffered without bound in the daemon.
  if (out_.size() >= max_queued) return close();
  out_.push_back(json::serialize(answer) + "\n");
  write_next();
}

void control_session::end() {
  if (answers_) return close();
  ending_ = true;
  if (!writing_ && out_.empty()) close();
}

void control_session::write_next() {
  if (writing_ || out_.empty()) return;
  writing_ = true;
  asio::async_write(socket_, asio::buffer(out_.front()), [self = shared_from_this()](error_code ec, std::size_t) {
    self->writing_ = false;
    self->out_.pop_front();
    if (ec) return self->close();
    if (!self->out_.empty()) return self->write_next();
    if (self->ending_) self->close();
  });
}

void control_session::close() {
  if (!std::exchange(open_, false)) return;
  error_code ignored;
  socket_.shutdown(local::socket::shutdown_both, ignored);
  socket_.close(ignored);
  if (request_timer_) request_timer_->cancel();
  slot_.reset();
  if (auto h = std::move(closed_)) h();
}

control_server::control_server(asio::io_context& io, handler h) : acceptor_(io), handler_(std::move(h)) {}

error_code control_server::listen(const std::string& path) {
  ::unlink(path.c_str());
  error_code ec;
  acceptor_.open(local(), ec);
  if (ec) return ec;
  // 0600 from the start: there is no moment when another user could connect.
  const mode_t old = ::umask(077);
  acceptor_.bind(local::endpoint(path), ec);
  ::umask(old);
  if (ec) return ec;
  ::chmod(path.c_str(), 0600);  // read and write are all a client needs
  acceptor_.listen(64, ec);
  if (ec) return ec;
  accept();
  return {};
}

void control_server::close() {
  error_code ignored;
  acceptor_.close(ignored);
  if (pause_) pause_->cancel();
}

void control_server::accept() {
  acceptor_.async_accept([this](error_code ec, local::socket s) {
    if (ec == asio::error::operation_aborted) return;
    if (paused(ec, pause_, acceptor_.get_executor(), [this] { accept(); })) return;  // out of descriptors
    auto slot = ec ? nullptr : limit_.admit();
    if (!ec && !slot) {
      error_code ignored;
      s.close(ignored);  // over the limit: this client only is turned away
    } else if (!ec) {
      ucred peer{};
      socklen_t len = sizeof peer;
      const bool ours = ::getsockopt(s.native_handle(), SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 &&
                        peer.uid == ::geteuid();
      auto session = std::make_shared<control_session>(std::move(s));
      session->hold(std::move(slot));
      if (!ours) {
        session->send({{"ok", false},
                       {"error", "refused: uid " + std::to_string(peer.uid) + " is not this daemon's owner (uid " +
                                     std::to_string(::geteuid()) + ")"}});
        session->end();
      } else {
        session->start(handler_);
      }
    }
    accept();
  });
}

namespace {

class control_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "clutch.control"; }
  std::string message(int ev) const override {
    switch (static_cast<control_error>(ev)) {
      case control_error::no_answer: return "the daemon closed the connection without answering";
      case control_error::cut_short: return "the daemon closed the connection in the middle of an answer";
      case control_error::not_json: return "the daemon's answer is not a JSON object";
      case control_error::timed_out: return "the daemon did not answer in time";
    }
    return "unknown control error";
  }
  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    if (static_cast<control_error>(ev) == control_error::timed_out) return boost::system::errc::timed_out;
    return {ev, *this};
  }
};

error_code last_error() { return error_code(errno, boost::system::system_category()); }

// Waits until fd has something to read (or its end), at most timeout (zero: no bound).
error_code wait_readable(int fd, std::chrono::milliseconds timeout) {
  if (timeout <= std::chrono::milliseconds::zero()) return {};
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
    if (left <= 0) return control_error::timed_out;
    pollfd p{fd, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return last_error();
    if (n == 0) return control_error::timed_out;
    return {};
  }
}

}  // namespace

const boost::system::error_category& control_category() noexcept {
  static const control_category_impl category;
  return category;
}

error_code control_call(const std::string& path, const json::object& request,
                        const std::function<bool(const json::object&)>& on_answer,
                        std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return make_error_code(std::errc::filename_too_long);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  os::unique_fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return last_error();
  if (timeout > std::chrono::milliseconds::zero()) {
    // connect waits while a stuck daemon's backlog is full, and send while its socket buffer is: bounded too (the
    // call then fails with EAGAIN).
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return errno == EAGAIN ? make_error_code(control_error::timed_out) : last_error();
  const std::string line = json::serialize(request) + "\n";
  for (std::size_t done = 0; done < line.size();) {
    const auto n = ::send(fd.get(), line.data() + done, line.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EPIPE) break;  // it hung up at once: what it said before that is still to be read
    if (n < 0 && errno == EAGAIN) return control_error::timed_out;
    if (n < 0) return last_error();
    done += static_cast<std::size_t>(n);
  }
  std::string in;
  bool answered = false;
  char buf[16 * 1024];
  for (;;) {
    if (auto ec = wait_readable(fd.get(), timeout)) return ec;
    auto n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    // A daemon that closes without reading all we sent resets the connection instead of ending it; what it wrote
    // before that has been read by now, so it is an end like any other.
    if (n < 0 && errno == ECONNRESET) n = 0;
    if (n < 0) return last_error();
    if (n == 0) {
      if (!in.empty()) return control_error::cut_short;
      return answered ? error_code() : make_error_code(control_error::no_answer);
    }
    in.append(buf, static_cast<std::size_t>(n));
    for (auto nl = in.find('\n'); nl != std::string::npos; nl = in.find('\n')) {
      error_code ec;
      auto v = json::parse(std::string_view(in).substr(0, nl), ec);
      in.erase(0, nl + 1);
      if (ec || !v.is_object()) return control_error::not_json;
      answered = true;
      if (!on_answer(v.as_object())) return {};
    }
  }
}

}  // namespace clutch::supervisor
