// The process layer's one interface to the layers above it (child_state.hpp stays private): a child whose
// 'exit' waits for one more thing than the process's end; and a signal to a child's own process alone. The ipc layer's fork() uses it so that on_exit comes
// only once the channel has delivered what the child sent before it exited.
//
//   auto h = detail::start_held_child(io, file, argv, opts);
//   if (h.process.spawn_error()) ...                  // nothing is held: the child never started
//   detail::on_process_end(h.process, [release = h.release] { /* drain what is buffered */ release(); });
//   channel.on_disconnect([release = h.release](error_code) { release(); });   // release() may be called twice
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "clutch/child_process.hpp"

namespace clutch::detail {

struct held_child {
  child process;
  // Lets the exit be reported (at once if the process has ended). Idempotent; safe after the child is gone.
  std::function<void()> release;
};

// Like spawn(), with the exit held until release(). A child that failed to start holds nothing.
held_child start_held_child(asio::io_context& io, const std::string& file, const std::vector<std::string>& args,
                            const options& opts);

// f runs when the process has ended, before its exit is reported (while it is still held).
void on_process_end(child& c, std::function<void()> f);

// A child that never started, with why (for a caller that found the problem before spawning).
child failed_child(asio::io_context& io, error_code why);

// sig to the child's own process only, even when kill() would reach its whole group (kill_tree): a watchdog's
// SIGABRT, for a core dump of the one that hung. Through its pidfd, so never to a process that took the pid
// after it was reaped; not_spawned for a child that never started.
error_code signal_process(const child& c, int sig);

}  // namespace clutch::detail
