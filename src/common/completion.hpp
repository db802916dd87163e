// How clutch completes an asynchronous operation that it stored (any_completion_handler): never inside the call
// that started it, always through the handler's own executor, with the cancellation slot cleared first because
// its handler refers to state that is about to go.
#pragma once

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace clutch::detail {

template <typename Handler, typename... Args>
void complete(boost::asio::io_context& io, Handler handler, Args... args) {
  auto slot = boost::asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) slot.clear();
  // post() runs on io and then dispatches to the handler's associated executor, keeping work counted meanwhile.
  boost::asio::post(io.get_executor(), boost::asio::append(std::move(handler), std::move(args)...));
}

}  // namespace clutch::detail
