// The shared state behind clutch::channel: the socket, the write queue, the handle hand-shake, the decoder.
//
// Writes. The first send() of a burst writes at once; later ones are appended to the queue and leave together in
// one sendmsg when the deferred flush runs (Node writes once per message). A frame that carries a descriptor
// starts its own sendmsg, so the descriptor arrives with the frame's first bytes.
//
// Handles. After a frame with a descriptor, later user messages wait in `held` until the peer's NODE_HANDLE_ACK
// (Node's rule, which keeps every handle attached to its own message); NACK resends the frame, up to three times.
// ACK and NACK themselves never wait.
#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/json/serializer.hpp>

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "clutch/ipc.hpp"
#include "common/handler_list.hpp"
#include "ipc/frame_decoder.hpp"
#include "ipc/text_frame.hpp"
#include "os/fd.hpp"

namespace clutch::detail {

struct out_segment {
  std::string bytes;
  std::size_t sent = 0;
  int fd = -1;  // sent with the first byte; owned by the pending handle, not by the segment
  std::vector<std::pair<std::size_t, send_handler>> done;  // completes once `sent` reaches the offset
};

struct pending_handle {
  std::string frame;  // the NODE_HANDLE text, for a resend
  handle h;           // kept open until the ACK, as Node keeps _pendingHandle
  send_handler handler;
  int resends = 0;
};

struct held_message {
  std::string frame;
  handle h;
  send_handler handler;
};

struct channel_state : std::enable_shared_from_this<channel_state> {
  channel_state(asio::io_context& io, int fd, const channel_options& opts);

  asio::io_context& io;
  asio::local::stream_protocol::socket sock;
  channel_options opts;
  frame_decoder decoder;
  message_parser parser;
  std::deque<os::unique_fd> received_fds;

  std::deque<out_segment> out;
  std::string spare;  // the buffer of the last segment written, kept for the next one
  boost::json::serializer serializer;
  std::size_t queued = 0;  // bytes in out and held, not yet written
  bool flush_posted = false;
  bool in_burst = false;  // a message was written at once since the last read or deferred flush
  bool waiting_writable = false;

  std::optional<pending_handle> pending;
  std::deque<held_message> held;

  bool open = true;
  error_code close_reason;  // what on_disconnect handlers hear
  bool disconnecting = false;
  handler_list<const boost::json::value&, handle> message_handlers;
  handler_list<const boost::json::value&, handle&> internal_handlers;
  std::vector<std::function<void(error_code)>> disconnect_handlers;

  void start_reading();
  void on_readable();
  // Dispatches every complete line the decoder holds; false once the channel has closed.
  bool dispatch_lines();
  // Reads (and dispatches) up to max_reads times, until EAGAIN, EOF, or a short read if that is enough.
  void read_some(int max_reads, bool short_read_is_enough);
  // Reads everything the socket holds now. fork() calls it when the child has exited: all it sent is there.
  void drain();
  void dispatch(std::string_view line);
  void on_node_message(const boost::json::object& msg);
  void deliver(const boost::json::value& msg, handle h);

  // is_ack: our NODE_HANDLE_ACK/NACK, which neither waits behind a pending handle nor is refused while
  // disconnecting.
  // accepted: a held message, taken before any disconnect(), which must still go out.
  bool send(std::string frame, handle h, send_handler handler, bool is_ack = false, bool accepted = false);
  out_segment& tail_segment(int fd);
  void enqueue(std::string_view frame, int fd, send_handler handler);
  void end_frame(out_segment& seg, std::size_t frame_start, send_handler handler);
  // send() for a plain message: serialized into the queue when it can go now.
  bool send_value(const boost::json::value& v, send_handler handler);
  // Whether a frame may be queued now: the channel is open and not disconnecting, unless the frame is our ACK/NACK
  // or a held message accepted before the disconnect.
  bool accepting(bool is_ack, bool accepted) const noexcept { return open && (!disconnecting || is_ack || accepted); }
  void schedule_flush();
  void flush();
  void release_held();
  void maybe_finish_disconnect();
  void close(error_code why);
  bool under_high_water_mark() const noexcept { return accepting(false, false) && queued <= opts.high_water_mark; }
};


}  // namespace clutch::detail
