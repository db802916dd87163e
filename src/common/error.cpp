#include "clutch/error.hpp"

#include <array>
#include <cstring>
#include <string>

#include "common/error_detail.hpp"

namespace clutch {

namespace {

class clutch_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "clutch"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::max_buffer_exceeded: return "output exceeded max_buffer";
      case errc::timed_out: return "timed out";
      case errc::channel_closed: return "channel closed";
      case errc::not_spawned: return "the process was not spawned";
      case errc::invalid_message: return "a message on the channel is not valid JSON";
      case errc::message_too_large: return "a message on the channel is longer than its size limit";
      case errc::handle_not_received: return "the peer could not receive the passed handle";
      case errc::reload_in_progress: return "a reload is already in progress";
      case errc::worker_failed: return "a new worker exited before it was ready";
      case errc::crash_loop: return "the worker crashed too many times in a row; its slot was given up";
      case errc::queue_full: return "too many messages are waiting for a role that is not ready";
      case errc::no_such_process: return "no process of the app has that pid";
      case errc::undeliverable: return "nobody can take the message";
      case errc::no_handler: return "the receiver has no handler for the request";
      case errc::request_failed: return "the receiver failed the request";
    }
    return "unknown clutch error";
  }
  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<errc>(ev)) {
      case errc::max_buffer_exceeded: return boost::system::errc::no_buffer_space;
      case errc::timed_out: return boost::system::errc::timed_out;
      case errc::channel_closed: return boost::system::errc::broken_pipe;
      case errc::not_spawned: return boost::system::errc::no_such_process;
      case errc::invalid_message: return boost::system::errc::bad_message;
      case errc::message_too_large: return boost::system::errc::message_size;
      case errc::handle_not_received: return boost::system::errc::protocol_error;
      case errc::reload_in_progress: return boost::system::errc::operation_in_progress;
      case errc::queue_full: return boost::system::errc::no_buffer_space;
      case errc::no_such_process: return boost::system::errc::no_such_process;
      case errc::worker_failed:
      case errc::crash_loop:
      case errc::undeliverable:
      case errc::no_handler:
      case errc::request_failed: break;
    }
    return {ev, *this};
  }
};

// One category per stage keeps the stage inside an ordinary error_code, so it travels through every completion
// token untouched, while the value stays the errno that a caller compares against.
class spawn_category final : public boost::system::error_category {
 public:
  explicit spawn_category(os::spawn_stage stage) noexcept : stage_(stage) {}
  const char* name() const noexcept override { return "clutch.spawn"; }
  std::string message(int ev) const override {
    return std::string("spawn failed at ") + os::to_string(stage_) + ": " + std::strerror(ev);
  }
  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    return {ev, boost::system::generic_category()};
  }
  os::spawn_stage stage() const noexcept { return stage_; }

 private:
  os::spawn_stage stage_;
};

using os::spawn_stage;
const std::array<spawn_category, 9> spawn_categories = {
    spawn_category{spawn_stage::none},  spawn_category{spawn_stage::clone},       spawn_category{spawn_stage::signals},
    spawn_category{spawn_stage::session}, spawn_category{spawn_stage::credentials}, spawn_category{spawn_stage::fds},
    spawn_category{spawn_stage::chdir}, spawn_category{spawn_stage::close_fds},   spawn_category{spawn_stage::exec},
};

}  // namespace

const boost::system::error_category& category() noexcept {
  static const clutch_category instance;
  return instance;
}

namespace detail {
error_code spawn_error(os::spawn_stage stage, int errno_value) noexcept {
  return {errno_value, spawn_categories.at(static_cast<std::size_t>(stage))};
}
}  // namespace detail

std::string_view spawn_stage_of(const error_code& ec) noexcept {
  for (const auto& cat : spawn_categories) {
    if (ec.category() == cat) return os::to_string(cat.stage());
  }
  return {};
}

}  // namespace clutch
