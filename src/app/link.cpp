#include "app/link.hpp"

#include <boost/asio/post.hpp>

#include "app/protocol.hpp"

namespace clutch::app::detail {

namespace json = boost::json;

std::shared_ptr<link> link::make(asio::io_context& io, channel ch, bool final) {
  auto l = std::make_shared<link>(io, std::move(ch), final);
  l->start();
  return l;
}

void link::start() {
  std::weak_ptr<link> wl = shared_from_this();
  ch_.on_internal_message([wl](const json::value& msg, handle& h) {
    if (auto l = wl.lock()) l->received(msg, h);
  });
  ch_.on_disconnect([wl](error_code) {
    if (auto l = wl.lock()) l->lost();
  });
  if (!ch_.connected()) up_ = false;
}

void link::send(json::object env) {
  if (!up_) {
    std::deque<json::object> one;
    one.push_back(std::move(env));
    if (on_lost) on_lost(std::move(one));
    return;
  }
  ch_.send(env);
  unacked_.push_back(std::move(env));
}

void link::close() {
  ch_.disconnect();
}

void link::received(const json::value& msg, handle& h) {
  const auto* o = msg.if_object();
  if (!o) return;
  const std::string_view cmd = cmd_of(*o);
  if (cmd == "CLUTCH_msg") {
    auto self = shared_from_this();  // a handler may drop the last other reference
    json::object env = *o;
    if (on_envelope) on_envelope(env);
    ++received_;
    // One acknowledgement per batch: it goes out after every message already read has been handled.
    if (!std::exchange(ack_posted_, true))
      asio::post(io_, [wl = weak_from_this()] {
        auto l = wl.lock();
        if (!l) return;
        l->ack_posted_ = false;
        if (l->up_) l->ch_.send(json::object{{"cmd", "CLUTCH_ack"}, {"n", l->received_}});
      });
  } else if (cmd == "CLUTCH_ack") {
    acknowledged(static_cast<std::uint64_t>(int_of(*o, "n")));
  } else if (on_control) {
    // Only the direct channel's socket is ours; other layers' handles (the cluster's sockets) stay theirs.
    on_control(*o, cmd == "CLUTCH_peer" ? std::move(h) : handle{});
  }
}

void link::acknowledged(std::uint64_t n) {
  auto self = shared_from_this();
  while (acked_ < n && !unacked_.empty()) {
    json::object env = std::move(unacked_.front());
    unacked_.pop_front();
    ++acked_;
    if (on_acked) on_acked(env);
  }
}

void link::lost() {
  if (!std::exchange(up_, false)) return;
  auto self = shared_from_this();
  if (on_lost) on_lost(std::exchange(unacked_, {}));
}

}  // namespace clutch::app::detail
