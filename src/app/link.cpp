#include "app/link.hpp"

#include <boost/asio/post.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/serializer.hpp>

#include "app/protocol.hpp"
#include "ipc/text_frame.hpp"

namespace clutch::app::detail {

namespace json = boost::json;

frame frame_of(const json::object& env) {
  frame f;
  f.text = json::serialize(env);
  destination_of(env, f.to);
  f.from = static_cast<int>(int_field(env, "from"));
  f.id = int_field(env, "id");
  f.track = env.contains("track");
  f.req = env.contains("req");
  f.reply = env.contains("reply_to");
  return f;
}

namespace {
void append_string(std::string& out, std::string_view s) {
  if (::clutch::detail::needs_escape(s)) {
    out += json::serialize(json::string_view(s.data(), s.size()));
    return;
  }
  out += '"';
  out += s;
  out += '"';
}
}  // namespace

frame make_frame(const destination& to, std::string_view action, const json::value& data, int from, role from_role,
                 std::int64_t id, bool track, bool req) {
  frame f;
  f.to = to;
  f.from = from;
  f.id = id;
  f.track = track;
  f.req = req;
  std::string& t = f.text;
  t.reserve(112 + action.size());
  t += R"({"cmd":"CLUTCH_msg","to":)";
  if (to.what == destination::kind::pid) t += std::to_string(to.pid);
  else append_string(t, to_json(to).get_string());
  t += R"(,"action":)";
  append_string(t, action);
  t += R"(,"data":)";
  if (data.is_int64()) {
    t += std::to_string(data.get_int64());
  } else if (data.is_string()) {
    append_string(t, data.get_string());
  } else {
    json::serializer sr;
    sr.reset(&data);
    char buf[4096];
    while (!sr.done()) t += sr.read(buf, sizeof buf);
  }
  t += R"(,"from":)";
  t += std::to_string(from);
  t += R"(,"role":")";
  t += to_string(from_role);
  t += '"';
  if (id) {
    t += R"(,"id":)";
    t += std::to_string(id);
  }
  if (track) t += R"(,"track":true)";
  if (req) t += R"(,"req":true)";
  t += '}';
  return f;
}

json::object object_of(const frame& f) {
  error_code ec;
  json::value v = json::parse(f.text, ec);
  return !ec && v.is_object() ? std::move(v.get_object()) : json::object{};
}

std::shared_ptr<link> link::make(asio::io_context& io, channel ch) {
  auto l = std::make_shared<link>(io, std::move(ch));
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

void link::send(frame f) {
  if (!up_) {
    std::deque<frame> one;
    one.push_back(std::move(f));
    if (on_lost) on_lost(std::move(one));
    return;
  }
  ::clutch::detail::send_text(ch_, f.text);
  unacked_.push_back(std::move(f));
}

void link::close() {
  ch_.disconnect();
  lost();  // now: whoever holds this link may drop it before the channel reports its close
}

void link::received(const json::value& msg, handle& h) {
  const auto* o = msg.if_object();
  if (!o) return;
  const std::string_view cmd = command_of(*o);
  if (cmd == "CLUTCH_msg") {
    auto self = shared_from_this();  // a handler may drop the last other reference
    if (on_envelope) on_envelope(*o);
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
    acknowledged(static_cast<std::uint64_t>(int_field(*o, "n")));
  } else if (on_control) {
    // Only the direct channel's socket is ours; other layers' handles (the cluster's sockets) stay theirs.
    on_control(*o, cmd == "CLUTCH_peer" ? std::move(h) : handle{});
  }
}

void link::acknowledged(std::uint64_t n) {
  auto self = shared_from_this();
  while (acked_ < n && !unacked_.empty()) {
    frame f = std::move(unacked_.front());
    unacked_.pop_front();
    ++acked_;
    if (on_acked) on_acked(f);
  }
}

void link::lost() {
  if (!std::exchange(up_, false)) return;
  auto self = shared_from_this();
  if (on_lost) on_lost(std::exchange(unacked_, {}));
}

}  // namespace clutch::app::detail
