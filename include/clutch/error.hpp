// clutch's errors.
//
//   clutch::error_code ec = clutch::errc::timed_out;
//   if (ec == std::errc::timed_out) ...            // our codes compare equal to the generic conditions they mean
//   if (clutch::spawn_stage_of(ec) == "chdir") ... // a failed spawn says which step in the child failed
//
// clutch::error_code is Boost.System's error_code, the type Boost.Asio's completion tokens understand (use_awaitable
// throws it, use_future stores it, as_tuple returns it). It converts implicitly to std::error_code and compares with
// std::errc, so code written against the standard type keeps working.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <string_view>
#include <system_error>

namespace clutch {

using error_code = boost::system::error_code;
using system_error = boost::system::system_error;

enum class errc {
  max_buffer_exceeded = 1,  // output passed options::max_buffer; equivalent to std::errc::no_buffer_space (ENOBUFS)
  timed_out,                // options::timeout passed; equivalent to std::errc::timed_out
  channel_closed,           // the message channel is closed
  not_spawned,              // an operation on a child that never started
  invalid_message,          // a line on the message channel is not JSON
  message_too_large,        // a line on the message channel is longer than the channel's limit
  handle_not_received,      // the peer could not take a passed handle (NODE_HANDLE_NACK) after every retry
  reload_in_progress,       // cluster: reload() while another reload runs
  worker_failed,            // cluster: a new worker exited, or could not start, before it was ready
  crash_loop,               // cluster: a slot's workers crashed max_restarts times in a row; the slot is given up
  queue_full,               // app: the messages waiting for a role that is not ready reached settings::queue_limit
  no_such_process,          // app: a message for a pid that is not (or no longer) part of the app
  undeliverable,            // app: nobody can take the message any more (the app is stopping, no parent, …)
  no_handler,               // app: the receiver has no request handler for the action
  request_failed,           // app: the receiver's handler failed the request, or never answered it
};

const boost::system::error_category& category() noexcept;

inline error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

// A spawn failure carries the errno value together with the step that failed ("chdir", "exec", "credentials", …),
// as its own category; it still compares equal to the plain errno condition (ENOENT == std::errc::…).
// Returns the step's name, or an empty view when ec is not a spawn failure.
std::string_view spawn_stage_of(const error_code& ec) noexcept;

}  // namespace clutch

template <>
struct boost::system::is_error_code_enum<clutch::errc> : std::true_type {};
