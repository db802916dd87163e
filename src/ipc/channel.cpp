#include "ipc/channel_state.hpp"

#include <sys/socket.h>

#include <boost/asio/defer.hpp>
#include <boost/json/serialize.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "common/completion.hpp"
#include "common/error_detail.hpp"
#include "os/scm_rights.hpp"

namespace clutch {

namespace detail {

namespace {

constexpr std::size_t read_size = 256 * 1024;
// A read turn stops after this many reads so that one busy channel cannot starve the rest of the io_context.
constexpr int reads_per_turn = 16;
constexpr int max_resends = 3;  // Node's MAX_HANDLE_RETRANSMISSIONS
constexpr std::size_t max_iov = 64;

bool starts_with(const boost::json::value& v, std::string_view prefix, const boost::json::object** obj) {
  if (!v.is_object()) return false;
  const auto& o = v.get_object();
  auto it = o.find("cmd");
  if (it == o.end() || !it->value().is_string()) return false;
  std::string_view cmd = it->value().get_string();
  // Node's isInternal: a string cmd that starts with the prefix and is longer than it ("NODE_" alone is not).
  if (cmd.size() <= prefix.size() || !cmd.starts_with(prefix)) return false;
  *obj = &o;
  return true;
}

// Node's cluster protocol: {"cmd":"NODE_CLUSTER", "act":…}.
bool is_cluster(const boost::json::object& o) {
  auto it = o.find("cmd");
  return it != o.end() && it->value().is_string() && it->value().get_string() == "NODE_CLUSTER";
}
bool is_cluster(const boost::json::value& v) { return v.is_object() && is_cluster(v.get_object()); }

}  // namespace

// Whether JSON needs an escape anywhere in s (a control character, '"' or '\\'), eight bytes at a time: Boost's
// serializer goes byte by byte, which made a 64 KiB string message cost more to write than to send.
bool needs_escape(std::string_view s) {
  constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
  const char* p = s.data();
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    const std::uint64_t control = (w - ones * 0x20) & ~w & highs;  // some byte < 0x20
    const std::uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
    if (control | ((q - ones) & ~q & highs) | ((b - ones) & ~b & highs)) return true;
  }
  for (; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    if (c < 0x20 || c == '"' || c == '\\') return true;
  }
  return false;
}

channel_state::channel_state(asio::io_context& io, int fd, const channel_options& opts)
    : io(io), sock(io), opts(opts), decoder(opts.max_message), parser(opts.max_depth) {
  boost::system::error_code ec;
  if (fd < 0) {
    ec = clutch::errc::channel_closed;
  } else {
    sock.assign(asio::local::stream_protocol(), fd, ec);
    if (ec) ::close(fd);
  }
  if (ec) {
    open = false;
    close_reason = ec;
  }
}

void channel_state::start_reading() {
  if (!open) return;
  sock.async_wait(asio::socket_base::wait_read, [self = shared_from_this()](boost::system::error_code ec) {
    if (!self->open) return;
    if (ec) {
      self->close(ec);
      return;
    }
    self->on_readable();
  });
}

bool channel_state::dispatch_lines() {
  error_code ec;
  while (open) {
    auto line = decoder.next_line(ec);
    if (!line) break;
    dispatch(*line);
  }
  if (ec) close(ec);
  return open;
}

void channel_state::read_some(int max_reads, bool short_read_is_enough) {
  for (int i = 0; i < max_reads && open; ++i) {
    auto room = decoder.prepare(read_size);
    std::vector<os::unique_fd> fds;
    os::received r = os::receive(sock.native_handle(), room.data(), room.size(), fds);
    for (auto& fd : fds) received_fds.push_back(std::move(fd));
    if (r.bytes == -EAGAIN) return;
    if (r.bytes < 0) {
      close(errno_error(static_cast<int>(-r.bytes)));
      return;
    }
    if (r.bytes == 0) {
      close({});  // the peer closed its end: an orderly disconnect; an unfinished line is dropped, as Node does
      return;
    }
    decoder.commit(static_cast<std::size_t>(r.bytes));
    // A short read that brought no descriptor emptied the socket (Linux stops a stream read early only at a
    // descriptor), so asking again would only hear EAGAIN. Nothing is lost by stopping: Asio's async_wait
    // re-arms the descriptor with EPOLL_CTL_MOD, which reports data (or EOF) that is already there.
    const bool drained = static_cast<std::size_t>(r.bytes) < room.size() && fds.empty() && !r.truncated;
    // MSG_CTRUNC drops the descriptors that did not fit; the NODE_HANDLE that finds none answers NACK.
    if (!dispatch_lines()) return;
    if (drained && short_read_is_enough) return;
  }
}

void channel_state::on_readable() {
  auto self = shared_from_this();  // a handler may drop the last channel object
  if (!flush_posted) in_burst = false;
  try {
    // Lines first: a handler that threw last time may have left some behind.
    if (dispatch_lines()) read_some(reads_per_turn, /*short_read_is_enough=*/true);
  } catch (...) {
    // A message handler threw. Asio lets the caller catch it and run the io_context again; the channel must then
    // go on reading, from the line after the one whose handler threw.
    if (open) asio::post(io, [self] { self->on_readable(); });
    throw;
  }
  start_reading();
}

void channel_state::drain() {
  auto self = shared_from_this();
  // Bounded, in case a grandchild that inherited the channel keeps writing.
  if (dispatch_lines()) read_some(1024, /*short_read_is_enough=*/false);
}

void channel_state::dispatch(std::string_view line) {
  boost::json::value v;
  if (auto ec = parser.parse(line, v)) {
    close(ec);
    return;
  }
  const boost::json::object* obj = nullptr;
  if (starts_with(v, "NODE_", &obj)) {
    on_node_message(*obj);
  } else {
    deliver(v, handle{});
  }
}

void channel_state::deliver(const boost::json::value& msg, handle h) {
  const boost::json::object* obj = nullptr;
  if (starts_with(msg, "CLUTCH_", &obj) || is_cluster(msg)) {
    // Each layer takes the handle of its own messages; the others find it empty.
    for (std::size_t i = 0, n = internal_handlers.size(); i < n && (open || i == 0); ++i) internal_handlers[i](msg, h);
    return;
  }
  // A handle goes to the first handler only: it has one owner.
  for (std::size_t i = 0, n = message_handlers.size(); i < n && (open || i == 0); ++i) {
    message_handlers[i](msg, i == 0 ? std::move(h) : handle{});
  }
}

void channel_state::on_node_message(const boost::json::object& msg) {
  std::string_view cmd = msg.at("cmd").get_string();
  if (cmd == "NODE_HANDLE") {
    if (received_fds.empty()) {
      send(R"({"cmd":"NODE_HANDLE_NACK"})", handle{}, {}, /*is_ack=*/true);
      return;
    }
    handle h(received_fds.front().release());
    received_fds.pop_front();
    send(R"({"cmd":"NODE_HANDLE_ACK"})", handle{}, {}, /*is_ack=*/true);
    auto it = msg.find("msg");
    const boost::json::value inner = it != msg.end() ? it->value() : boost::json::value{};
    const boost::json::object* inner_obj = nullptr;
    // A handle for Node's own modules (net's socket lists) is theirs: it closes here, unseen. NODE_CLUSTER is
    // the cluster protocol, which a clutch layer may serve (the supervisor, as a Node worker's primary).
    if (!starts_with(inner, "NODE_", &inner_obj) || is_cluster(*inner_obj)) deliver(inner, std::move(h));
  } else if (cmd == "NODE_HANDLE_ACK") {
    if (!pending) return;
    auto done = std::move(pending->handler);
    pending.reset();  // closes our copy of the descriptor: the peer has its own now
    if (done) complete(io, std::move(done), error_code{});
    release_held();
  } else if (cmd == "NODE_HANDLE_NACK") {
    if (!pending) return;
    if (++pending->resends > max_resends) {
      auto done = std::move(pending->handler);
      pending.reset();
      if (done) complete(io, std::move(done), error_code(clutch::errc::handle_not_received));
      release_held();
      return;
    }
    enqueue(pending->frame, pending->h.native_handle(), {});
    schedule_flush();
  } else if (cmd == "NODE_CLUSTER") {
    deliver(boost::json::value(msg), handle{});
  }
  // Other NODE_ messages (NODE_SOCKET_*) belong to Node's own net module.
}

bool channel_state::send(std::string frame, handle h, send_handler handler, bool is_ack, bool accepted) {
  if (!accepting(is_ack, accepted)) {
    if (handler) complete(io, std::move(handler), error_code(clutch::errc::channel_closed));
    return false;
  }
  if (pending && !is_ack) {
    queued += frame.size() + 1;
    held.push_back({std::move(frame), std::move(h), std::move(handler)});
    return under_high_water_mark();
  }
  if (h) {
    enqueue(frame, h.native_handle(), {});
    pending = pending_handle{std::move(frame), std::move(h), std::move(handler), 0};
  } else {
    enqueue(frame, -1, std::move(handler));
  }
  schedule_flush();
  return under_high_water_mark();
}

out_segment& channel_state::tail_segment(int fd) {
  // A frame with a descriptor starts a segment of its own; others join the last one while it is not too large.
  if (fd >= 0 || out.empty() || out.back().fd >= 0 || out.back().bytes.size() > (1U << 20)) {
    out.emplace_back();
    // A buffer that already has its pages: freeing and reallocating a megabyte per batch costs page faults.
    out.back().bytes = std::move(spare);
    spare = std::string();
    out.back().fd = fd;
  }
  return out.back();
}

void channel_state::end_frame(out_segment& seg, std::size_t frame_start, send_handler handler) {
  seg.bytes.push_back('\n');
  queued += seg.bytes.size() - frame_start;
  if (handler) seg.done.emplace_back(seg.bytes.size(), std::move(handler));
}

void channel_state::enqueue(std::string_view frame, int fd, send_handler handler) {
  auto& seg = tail_segment(fd);
  const std::size_t start = seg.bytes.size();
  seg.bytes.append(frame);
  end_frame(seg, start, std::move(handler));
}

bool channel_state::send_value(const boost::json::value& v, send_handler handler) {
  // Refused or held back: the general path, which keeps the frame as a string.
  if (!accepting(false, false) || pending) return send(boost::json::serialize(v), handle{}, std::move(handler));
  // Otherwise serialized straight into the queue: no temporary string per message.
  auto& seg = tail_segment(-1);
  const std::size_t start = seg.bytes.size();
  if (v.is_string() && !needs_escape(v.get_string())) {  // the common large payload: copied as it is
    seg.bytes.push_back('"');
    seg.bytes.append(v.get_string());
    seg.bytes.push_back('"');
  } else {
    // Through a small buffer on the stack: growing the string first would zero-fill bytes only to overwrite them.
    char buf[16 * 1024];
    serializer.reset(&v);
    while (!serializer.done()) seg.bytes.append(serializer.read(buf, sizeof buf));
  }
  end_frame(seg, start, std::move(handler));
  schedule_flush();
  return under_high_water_mark();
}

void channel_state::schedule_flush() {
  if (flush_posted || waiting_writable || out.empty()) return;
  // The first message of a burst is written at once: a request/response exchange pays no extra loop turn, and a
  // process that sends one message and exits does not lose it. What follows in the same burst waits for one
  // deferred flush and leaves in one sendmsg. A burst ends when the deferred flush runs or a read begins.
  if (!in_burst) {
    in_burst = true;
    flush();
    return;
  }
  flush_posted = true;
  asio::defer(io, [self = shared_from_this()] {
    self->flush_posted = false;
    self->in_burst = false;
    if (!self->waiting_writable) self->flush();
  });
}

void channel_state::flush() {
  while (open && !out.empty()) {
    iovec iov[max_iov];
    int n_iov = 0;
    int fd = -1;
    for (auto& seg : out) {
      // A descriptor goes with the first byte of its frame: its segment leads a sendmsg of its own.
      if (seg.fd >= 0 && seg.sent == 0) {
        if (n_iov > 0) break;
        fd = seg.fd;
      }
      iov[n_iov++] = {seg.bytes.data() + seg.sent, seg.bytes.size() - seg.sent};
      if (fd >= 0 || n_iov == static_cast<int>(max_iov)) break;
    }
    ssize_t n = os::send_with_fd(sock.native_handle(), iov, n_iov, fd);
    if (n == -EAGAIN) {
      waiting_writable = true;
      sock.async_wait(asio::socket_base::wait_write, [self = shared_from_this()](boost::system::error_code ec) {
        self->waiting_writable = false;
        if (!self->open) return;
        if (ec) {
          self->close(ec);
          return;
        }
        self->flush();
      });
      return;
    }
    if (n < 0) {
      close(errno_error(static_cast<int>(-n)));
      return;
    }
    auto left = static_cast<std::size_t>(n);
    queued -= left;
    while (left > 0 || (!out.empty() && out.front().sent == out.front().bytes.size())) {
      auto& seg = out.front();
      std::size_t take = std::min(left, seg.bytes.size() - seg.sent);
      seg.sent += take;
      left -= take;
      auto& done = seg.done;
      std::size_t fired = 0;
      while (fired < done.size() && done[fired].first <= seg.sent) {
        complete(io, std::move(done[fired].second), error_code{});
        ++fired;
      }
      done.erase(done.begin(), done.begin() + static_cast<std::ptrdiff_t>(fired));
      if (seg.sent < seg.bytes.size()) break;
      if (seg.bytes.capacity() > spare.capacity()) {
        spare = std::move(seg.bytes);
        spare.clear();
      }
      out.pop_front();
    }
  }
  maybe_finish_disconnect();
}

void channel_state::release_held() {
  while (!pending && !held.empty()) {
    auto m = std::move(held.front());
    held.pop_front();
    queued -= m.frame.size() + 1;
    // Accepted before any disconnect(): it still goes, as Node flushes its handle queue before disconnecting.
    send(std::move(m.frame), std::move(m.h), std::move(m.handler), /*is_ack=*/false, /*accepted=*/true);
  }
  maybe_finish_disconnect();
}

void channel_state::maybe_finish_disconnect() {
  if (disconnecting && open && out.empty() && !pending && held.empty()) close({});
}

void channel_state::close(error_code why) {
  if (!open) return;
  open = false;
  close_reason = why;
  boost::system::error_code ignored;
  sock.close(ignored);
  received_fds.clear();
  const error_code closed = clutch::errc::channel_closed;
  for (auto& seg : out) {
    for (auto& [end, h] : seg.done) complete(io, std::move(h), closed);
  }
  out.clear();
  if (pending && pending->handler) complete(io, std::move(pending->handler), closed);
  pending.reset();
  for (auto& m : held) {
    if (m.handler) complete(io, std::move(m.handler), closed);
  }
  held.clear();
  queued = 0;
  // Posted, so that a disconnect() called from inside a handler does not run user code re-entrantly.
  auto handlers = std::move(disconnect_handlers);
  asio::post(io, [handlers = std::move(handlers), why] {
    for (auto& f : handlers) f(why);
  });
}

bool send_text(channel& ch, std::string_view frame) {
  const auto& s = ch.state();
  if (!s->accepting(false, false) || s->pending) return s->send(std::string(frame), handle{}, {});
  s->enqueue(frame, -1, {});
  s->schedule_flush();
  return s->under_high_water_mark();
}

bool channel_send(const std::shared_ptr<channel_state>& s, const boost::json::value& msg, handle h,
                  send_handler handler, const char* node_type) {
  if (!s) throw std::logic_error("clutch::channel: send on an empty channel");
  if (h && h.what() == handle::kind::none) {
    // Only stream sockets travel: Node's receiving side could not make anything else of them.
    if (handler) complete(s->io, std::move(handler), error_code(errno_error(EINVAL)));
    return s->under_high_water_mark();
  }
  if (!h) return s->send_value(msg, std::move(handler));
  boost::json::object wrapped;
  wrapped["cmd"] = "NODE_HANDLE";
  wrapped["type"] = node_type ? node_type : h.node_type();
  wrapped["msg"] = msg;
  return s->send(boost::json::serialize(wrapped), std::move(h), std::move(handler));
}

}  // namespace detail

channel::channel(asio::io_context& io, int fd, const channel_options& opts)
    : state_(std::make_shared<detail::channel_state>(io, fd, opts)) {
  state_->start_reading();
}

void channel::on_message(message_handler handler) {
  if (!state_) throw std::logic_error("clutch::channel: on_message on an empty channel");
  state_->message_handlers.add(std::move(handler));
}

void channel::on_internal_message(internal_handler handler) {
  if (!state_) throw std::logic_error("clutch::channel: on_internal_message on an empty channel");
  state_->internal_handlers.add(std::move(handler));
}

void channel::on_disconnect(std::function<void(error_code)> handler) {
  if (!state_) throw std::logic_error("clutch::channel: on_disconnect on an empty channel");
  if (!state_->open) {  // closed already (or never opened): the handler still hears it, once
    asio::post(state_->io, [h = std::move(handler), why = state_->close_reason] { h(why); });
    return;
  }
  state_->disconnect_handlers.push_back(std::move(handler));
}

void channel::disconnect() {
  if (!state_ || !state_->open) return;
  state_->disconnecting = true;
  state_->maybe_finish_disconnect();
}

bool channel::connected() const noexcept { return state_ && state_->open && !state_->disconnecting; }

std::size_t channel::queued_bytes() const noexcept { return state_ ? state_->queued : 0; }

}  // namespace clutch
