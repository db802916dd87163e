// A link: one channel carrying messenger messages that are kept until the receiver acknowledges them.
//
//   auto l = link::make(io, ch);
//   l->on_envelope = [](const boost::json::object& env) { ... };  // a CLUTCH_msg arrived (acknowledged after)
//   l->on_lost = [](std::deque<frame> unacked) { ... };          // the channel closed: resend these elsewhere
//   l->send(make_frame(...));
//
// Why: a message written into a socket whose reader then dies is gone, and "never lost" is the messenger's
// promise. So each side counts the CLUTCH_msg frames it has handled and says so (CLUTCH_ack {n}) once per batch
// it read; the sender keeps what is not yet acknowledged and gives it back when the channel closes. Other
// CLUTCH_ messages (control) go to on_control, unacknowledged.
//
// A message is kept as the text that went out (a frame), not as a JSON object: building, keeping and freeing an
// object per message cost more than everything else a worker did to send one.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "clutch/app.hpp"
#include "clutch/ipc.hpp"

namespace clutch::app::detail {

// One CLUTCH_msg as sent, with what its sender needs to know about it without parsing it again.
struct frame {
  std::string text;  // the JSON, without '\n'
  destination to;
  int from = 0;
  std::int64_t id = 0;
  bool track = false;  // the sender wants to know when it was delivered
  bool req = false;    // a request: the sender waits for a reply
  bool reply = false;  // a reply to a request
};

// The frame of a message object (as the master forwards it).
frame frame_of(const boost::json::object& env);
// A message written straight as text.
frame make_frame(const destination& to, std::string_view action, const boost::json::value& data, int from,
                 role from_role, std::int64_t id, bool track, bool req);
// The object again (when a frame has to be looked at: it was lost, or it is for this very process).
boost::json::object object_of(const frame& f);

class link : public std::enable_shared_from_this<link> {
 public:
  static std::shared_ptr<link> make(asio::io_context& io, channel ch);

  void send(frame f);
  bool up() const noexcept { return up_; }
  channel& chan() noexcept { return ch_; }
  // Closes the channel (what is queued still goes out) and hands back, through on_lost, what is unacknowledged.
  void close();

  std::function<void(const boost::json::object& env)> on_envelope;
  std::function<void(const boost::json::object& msg, handle h)> on_control;
  std::function<void(const frame& f)> on_acked;
  std::function<void(std::deque<frame> unacked)> on_lost;

  link(asio::io_context& io, channel ch) : io_(io), ch_(std::move(ch)) {}

 private:
  void start();
  void received(const boost::json::value& msg, handle& h);
  void acknowledged(std::uint64_t n);
  void lost();

  asio::io_context& io_;
  channel ch_;
  bool up_ = true;
  std::uint64_t received_ = 0;  // CLUTCH_msg frames handled
  std::uint64_t acked_ = 0;     // of ours, acknowledged
  bool ack_posted_ = false;
  std::deque<frame> unacked_;
};

}  // namespace clutch::app::detail
