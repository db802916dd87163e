// The shared state behind clutch::child: the process's pidfd, the parent's ends of its pipes, the readers that
// deliver on_data/on_end, the exec buffers, and whoever waits for the end.
//
// Lifetime: every pending operation (the pidfd wait, each read, the timer) holds a shared_ptr to this, so the
// process is watched and reaped even after the user dropped every child object, for as long as the io_context runs.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <cstdint>
#include <optional>

#include "clutch/child_process.hpp"
#include "common/handler_list.hpp"
#include "os/fd.hpp"

namespace clutch::detail {

struct output_stream {
  handler_list<std::string_view> on_data;
  handler_list<> on_end;
  bool reading = false;
  bool ended = false;
  // exec: what has been kept, and whether the limit was passed (from then on, chunks are dropped).
  std::string kept;
  bool overflowed = false;
};

struct child_state : std::enable_shared_from_this<child_state> {
  explicit child_state(asio::io_context& io) : io(io), timer(io) {}

  asio::io_context& io;
  pid_t pid = 0;
  error_code spawn_failure;
  std::optional<asio::posix::stream_descriptor> pidfd;
  std::optional<asio::writable_pipe> in;
  std::array<std::optional<asio::readable_pipe>, 3> pipes;  // [1] stdout, [2] stderr
  std::vector<std::optional<asio::local::stream_protocol::socket>> sockets;  // slots from 3 on
  std::array<output_stream, 3> streams;                                       // [1] and [2] used

  int kill_signal = SIGTERM;
  bool kill_tree = false;
  asio::steady_timer timer;
  std::optional<std::chrono::milliseconds> close_grace;
  bool ended_by_us = false;  // a timeout, a limit, a kill() or a cancellation: the output need not be waited for
  std::optional<asio::steady_timer> grace_timer;

  std::optional<exit_status> status;
  bool reaped = false;
  int reap_holds = 0;           // group sweeps that need the exited leader kept unreaped (its pid pins the group id)
  bool exit_reported = false;  // on_exit handlers have run
  bool closed = false;          // async_wait/async_result have completed
  int holds = 0;                // layers above (a fork channel) that must finish before the exit is reported
  handler_list<> on_process_exit;  // for those layers: the exit was just observed
  handler_list<const exit_status&> on_exit;
  error_code failure;  // timed_out, max_buffer_exceeded or operation_aborted: the first one wins

  bool buffering = false;  // started by exec/exec_file
  std::size_t max_buffer = 0;

  std::uint64_t next_waiter = 0;
  std::vector<std::pair<std::uint64_t, wait_handler>> wait_waiters;
  std::vector<result_handler> result_waiters;

  void start(const options& opts);
  void start_reading(int slot);
  void read_more(int slot);
  bool read_ready(int slot);   // reads what a pipe has and waits again; false once its stream has ended
  bool read_now(int slot, int rounds);  // reads what a pipe has, without waiting again
  void end_stream(int slot);
  void on_chunk(int slot, std::string_view chunk);
  void watch_exit();
  void on_exit_ready();
  void maybe_close();
  void release_hold();
  void reap();              // once closed and no sweep holds the leader any more
  bool leader_held();  // exited, not reaped, and still our zombie (checked through the pidfd)
  error_code signal(int sig);
  void fail(error_code ec);  // records the first failure and kills the child
  void arm_grace();          // after the exit: bounds the wait for pipes that others still hold (close_grace)
  error_code result_error() const { return spawn_failure ? spawn_failure : failure; }
};

// spawn, exec and held_child.hpp's start_held_child: a child that starts, with a plan built from file/args/opts.
std::shared_ptr<child_state> start_child(asio::io_context& io, const std::string& file,
                                         const std::vector<std::string>& args, const options& opts, bool buffering);
// child::sweep_group.
bool sweep_group(const std::shared_ptr<child_state>& leader, std::chrono::milliseconds kill_after,
                 std::function<void()> done);

}  // namespace clutch::detail
