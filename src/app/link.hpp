// A link: one channel carrying messenger messages that are kept until the receiver acknowledges them.
//
//   auto l = link::make(io, ch, /*final=*/true);
//   l->on_envelope = [](boost::json::object& env) { ... };         // a CLUTCH_msg arrived (acknowledged after)
//   l->on_lost = [](std::deque<boost::json::object> unacked) { ... }; // the channel closed: resend these elsewhere
//   l->send(env);
//
// Why: a message written into a socket whose reader then dies is gone, and "never lost" is the messenger's
// promise. So each side counts the CLUTCH_msg frames it has handled and says so (CLUTCH_ack {n}) once per batch
// it read; the sender keeps what is not yet acknowledged and gives it back when the channel closes. Other
// CLUTCH_ messages (control) go to on_control, unacknowledged.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>

#include "clutch/ipc.hpp"

namespace clutch::app::detail {

class link : public std::enable_shared_from_this<link> {
 public:
  // final: the receiver is the message's last stop (a direct channel), so an acknowledgement is delivery.
  static std::shared_ptr<link> make(asio::io_context& io, channel ch, bool final);

  void send(boost::json::object env);
  bool up() const noexcept { return up_; }
  bool final() const noexcept { return final_; }
  channel& chan() noexcept { return ch_; }
  void close();

  std::function<void(boost::json::object& env)> on_envelope;
  std::function<void(const boost::json::object& msg, handle h)> on_control;
  std::function<void(const boost::json::object& env)> on_acked;
  std::function<void(std::deque<boost::json::object> unacked)> on_lost;

  link(asio::io_context& io, channel ch, bool final) : io_(io), ch_(std::move(ch)), final_(final) {}

 private:
  void start();
  void received(const boost::json::value& msg, handle& h);
  void acknowledged(std::uint64_t n);
  void lost();

  asio::io_context& io_;
  channel ch_;
  bool final_;
  bool up_ = true;
  std::uint64_t received_ = 0;  // CLUTCH_msg frames handled
  std::uint64_t acked_ = 0;     // of ours, acknowledged
  bool ack_posted_ = false;
  std::deque<boost::json::object> unacked_;
};

}  // namespace clutch::app::detail
