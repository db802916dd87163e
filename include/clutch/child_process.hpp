// clutch/child_process.hpp — Node's child_process for C++20: exec, exec_file, spawn and their synchronous twins.
//
//   boost::asio::io_context io;
//   // exec: through /bin/sh -c; the result is buffered, and the same output can be streamed while it runs.
//   clutch::child c = clutch::exec(io, "ls -l", {.cwd = "log"},
//       [](clutch::error_code ec, clutch::exec_result r) { fmt::print("{}", r.out); });
//   c.on_data(clutch::child::out, [](std::string_view chunk) { fmt::print("chunk: {}", chunk); });
//   io.run();
//
//   // The same with a coroutine (any Asio completion token works: callbacks, use_awaitable, deferred, use_future):
//   clutch::exec_result r = co_await clutch::exec(io, "ls -l", {}, asio::use_awaitable);
//
//   // spawn: streams only, nothing is buffered.
//   clutch::child p = clutch::spawn(io, "grep", {"x"}, {});
//   asio::async_write(p.std_in(), asio::buffer(text), ...);  p.on_data(clutch::child::out, ...);
//   p.async_wait([](clutch::error_code ec, clutch::exit_status s) { ... });
//
//   // Synchronous, no io_context needed:
//   clutch::sync_result s = clutch::exec_file_sync("git", {"rev-parse", "HEAD"}, {.timeout = 2s});
//
// Errors. A program that cannot be started (missing, not executable, bad cwd) is never thrown: spawn() returns a
// child whose spawn_error() is set, and its async_wait/async_result complete with that error, which compares equal
// to the errno condition (std::errc::no_such_file_or_directory) and names the failed step (clutch::spawn_stage_of).
// A non-zero exit is not an error: it is in exit_status. Errors are clutch::timed_out, clutch::max_buffer_exceeded,
// asio::error::operation_aborted (cancelled), or the spawn failure.
//
// Threads. A child and its callbacks belong to one io_context, which must run on one thread (docs/ARCHITECTURE.md:
// one io_context, one thread per process), and are not thread-safe; different io_contexts in different threads may
// spawn concurrently. The synchronous functions may be called from any thread.
//
// Signals. Like Node, the child starts with every signal at its default disposition and an empty signal mask,
// whatever the parent has blocked or ignored; and the first spawn sets SIGPIPE to ignored in the parent if it was
// at its default, so that writing to a child that has gone fails with EPIPE instead of killing the parent.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "clutch/error.hpp"

namespace clutch {

namespace asio = boost::asio;

// A signal by number (SIGTERM) or by Node's name ("SIGTERM"; "TERM" also works). An unknown name is reported as
// std::errc::invalid_argument by whatever uses it, never thrown.
struct signal_spec {
  signal_spec(int number) : number(number) {}  // NOLINT: implicit on purpose, like Node's kill(15) or kill("SIGTERM")
  signal_spec(const char* name) : name(name) {}                  // NOLINT
  signal_spec(std::string_view name) : name(name) {}             // NOLINT
  signal_spec(std::string name) : name(std::move(name)) {}       // NOLINT
  int number = 0;
  std::string name{};
  // The signal's number, or -1 with ec set to invalid_argument.
  int resolve(error_code& ec) const;
};
// -1 for a name Linux does not know.
int signal_number(std::string_view name) noexcept;
// "SIGTERM"; nullptr for a number without a name.
const char* signal_name(int number) noexcept;

// What one of the child's descriptors is connected to. Slots 0–2 are stdin, stdout, stderr; more are allowed.
struct stdio_slot {
  enum class kind { pipe, inherit, ignore, fd, ipc };
  kind what = kind::pipe;
  int fd = -1;  // for kind::fd
  friend bool operator==(const stdio_slot&, const stdio_slot&) = default;
};
namespace stdio {
// A pipe to the parent (slots 0–2: one-way pipes; higher slots: a bidirectional Unix socket, as in Node).
inline constexpr stdio_slot pipe{stdio_slot::kind::pipe};
// The parent's own descriptor with the same number.
inline constexpr stdio_slot inherit{stdio_slot::kind::inherit};
// /dev/null for slots 0–2; higher slots are left closed.
inline constexpr stdio_slot ignore{stdio_slot::kind::ignore};
// This descriptor of the parent's (it is duplicated; the parent keeps its own).
constexpr stdio_slot fd(int descriptor) { return {stdio_slot::kind::fd, descriptor}; }
// Where fork() puts the message channel (clutch/ipc.hpp). spawn() and exec() refuse it: only fork makes channels.
inline constexpr stdio_slot ipc{stdio_slot::kind::ipc};
}  // namespace stdio

// The child's environment: the parent's (the default), a replacement, or the parent's with some variables added
// or overridden.
class environment {
 public:
  using map = std::map<std::string, std::string>;
  enum class mode { inherit, replace, add };
  environment() = default;
  static environment inherit() { return {}; }
  static environment replace(map vars) { return {mode::replace, std::move(vars)}; }
  static environment add(map vars) { return {mode::add, std::move(vars)}; }
  mode how() const noexcept { return mode_; }
  const map& vars() const noexcept { return vars_; }
  // The same environment with `more` set on top (a replacement stays one; otherwise they add to the parent's).
  environment plus(const map& more) const {
    map all = vars_;
    for (const auto& [k, v] : more) all[k] = v;
    return {mode_ == mode::replace ? mode::replace : mode::add, std::move(all)};
  }

 private:
  environment(mode m, map vars) : mode_(m), vars_(std::move(vars)) {}
  mode mode_ = mode::inherit;
  map vars_;
};

struct options {
  std::string cwd{};  // empty: the parent's
  environment env{};
  // Slots 0–2 missing from the list are pipes. Empty (the default) for fork: inherit (pipes when silent), and the
  // channel at fd 3.
  std::vector<stdio_slot> stdio{};
  // 0: none. When it passes, the child gets kill_signal and the operation fails with errc::timed_out; the output
  // read so far is kept.
  std::chrono::milliseconds timeout{0};
  signal_spec kill_signal{SIGTERM};
  // exec, exec_file and the sync functions: bytes kept per output stream. One byte more kills the child (with
  // kill_signal) and fails with errc::max_buffer_exceeded; the output is cut exactly at the limit.
  std::size_t max_buffer = 1024 * 1024;
  // setsid(): the child leads its own session, so it survives its parent's process group being signalled and has
  // no controlling terminal. Downside: Ctrl-C in the parent's terminal no longer reaches it.
  bool detached = false;
  // The child leads its own process group, and kill(), timeouts and max_buffer signal the whole group, so that
  // grandchildren die with it. Downside, as for detached: the terminal's Ctrl-C no longer reaches it. Unset: yes
  // for exec (what a shell command starts in the background ends with it), no for exec_file, spawn and fork.
  std::optional<bool> kill_tree{};
  // Once the process has exited, how long other processes still holding its stdout or stderr (something it left
  // running in the background) may keep the call from completing; then it completes with what was read, and the
  // pipes are closed. Unset: as long as they hold them (as Node does: everything written is read), except after
  // a timeout, a kill() or a cancellation, when the wait is 100 ms.
  std::optional<std::chrono::milliseconds> close_grace{};
  // Linux's PR_SET_PDEATHSIG: the child gets this signal when its parent dies, even by SIGKILL (0: none). It is
  // tied to the thread that spawned the child, so spawn from a thread that lives as long as the process (the
  // io_context's thread is one). A child whose parent is already gone when it starts fails to spawn (ESRCH).
  signal_spec death_signal{0};
  std::optional<uid_t> uid{};
  std::optional<gid_t> gid{};
  std::optional<std::string> argv0{};  // argv[0] as the child sees it; default: the program as given
  // The name of an environment variable the child sets to its own pid just before it runs the program, replacing
  // any inherited one: systemd's socket-activation protocol needs LISTEN_PID to name the process that reads it.
  std::string pid_variable{};
  std::string shell = "/bin/sh";     // exec and exec_sync: run as `shell -c command`
  std::string input{};               // the sync functions: written to the child's stdin, which is then closed
  // fork only (clutch/ipc.hpp): how a .js program is run, and whether the child's stdout/stderr come to us.
  std::string exec_path = "node";
  std::vector<std::string> exec_argv{};
  bool silent = false;
};

// How a child ended: code for a normal exit, signal when a signal ended it (then code is empty).
struct exit_status {
  std::optional<int> code{};
  std::optional<int> signal{};
  bool ok() const noexcept { return code == 0; }
  friend bool operator==(const exit_status&, const exit_status&) = default;
};

struct exec_result {
  std::string out{};  // stdout, up to max_buffer bytes
  std::string err{};  // stderr, likewise
  exit_status status{};
};

struct sync_result {
  pid_t pid = 0;
  exit_status status{};
  std::string out{};
  std::string err{};
  error_code error{};  // spawn failure, errc::timed_out, or errc::max_buffer_exceeded (which equals ENOBUFS)
};

namespace detail {
struct child_state;
using wait_handler = asio::any_completion_handler<void(error_code, exit_status)>;
using result_handler = asio::any_completion_handler<void(error_code, exec_result)>;
void async_wait(const std::shared_ptr<child_state>& state, wait_handler handler);
void async_result(const std::shared_ptr<child_state>& state, result_handler handler);
}  // namespace detail

// A started (or failed-to-start) child process. Copies share the same process. The process is watched from the
// moment it starts: it is reaped when it exits, even if every copy of this object is gone, as long as the
// io_context runs.
class child {
 public:
  static constexpr int in = 0, out = 1, err = 2;

  child() = default;
  // 0 when the process did not start.
  pid_t pid() const noexcept;
  // Why the process did not start; empty when it did.
  error_code spawn_error() const noexcept;
  // Set once the exit has been observed.
  std::optional<exit_status> exit() const noexcept;

  // The parent's ends of slots 0–2 when they are pipes. Throw std::system_error with the spawn's error when the
  // process did not start, std::logic_error for a slot that is not a pipe.
  asio::writable_pipe& std_in();
  asio::readable_pipe& std_out();
  asio::readable_pipe& std_err();
  // A pipe slot from 3 on (a Unix stream socket).
  asio::local::stream_protocol::socket& stdio_socket(int slot);
  // Lets the child see end-of-file on its stdin.
  void close_stdin();

  // Node's 'data' and 'end' events for stdout (child::out) or stderr (child::err). Registering the first handler
  // starts reading that stream; from then on the stream belongs to clutch (do not also read std_out() yourself).
  // Handlers run on the io_context; a chunk is only valid during the call.
  void on_data(int slot, std::function<void(std::string_view)> handler);
  void on_end(int slot, std::function<void()> handler);

  // Node's 'exit': the process has exited, and everything it sent on a fork() channel, and what it wrote to its
  // stdout and stderr pipes, has been delivered (a grandchild holding the pipes may still write; async_wait waits
  // for those too). Runs once, before async_wait completes.
  void on_exit(std::function<void(const exit_status&)> handler);

  // Sends a signal (with kill_tree, to the whole group). After the child has been reaped this does nothing and
  // succeeds: a pidfd can never reach a stranger that was given the same pid.
  error_code kill(signal_spec sig = SIGTERM);

  // With kill_tree, once the process has exited: ends what it left behind in its process group (SIGTERM now,
  // SIGKILL after kill_after) and calls done when the group is empty, or a second after the SIGKILL. The exited
  // leader stays unreaped meanwhile, so the group's id cannot be given to another process. Returns false, and
  // never calls done, when nothing of ours is there to sweep: not started, no kill_tree, not exited yet, already
  // reaped (by us or by someone else), or the group is empty. No other process group is ever signalled.
  bool sweep_group(std::chrono::milliseconds kill_after, std::function<void()> done);

  // Completes once the child has exited and every stream clutch reads (on_data, exec) has ended: all output has
  // been delivered before this. Signature void(error_code, exit_status); error_code is the spawn failure,
  // timed_out or max_buffer_exceeded, else empty. Cancelling it stops the wait, not the child.
  template <typename CompletionToken>
  auto async_wait(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, exit_status)>(
        [](auto handler, std::shared_ptr<detail::child_state> s) { detail::async_wait(s, std::move(handler)); },
        token, state_);
  }

  // For a child started by exec or exec_file: completes like async_wait, with the buffered output.
  // Cancelling it kills the child (kill_signal) and completes with operation_aborted, like Node's AbortSignal.
  template <typename CompletionToken>
  auto async_result(CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, exec_result)>(
        [](auto handler, std::shared_ptr<detail::child_state> s) { detail::async_result(s, std::move(handler)); },
        token, state_);
  }

  explicit child(std::shared_ptr<detail::child_state> state) : state_(std::move(state)) {}
  const std::shared_ptr<detail::child_state>& state() const noexcept { return state_; }

 private:
  std::shared_ptr<detail::child_state> state_;
};

// Starts file with args (argv[1…]); file without a '/' is searched in PATH (the child's PATH when env sets one).
child spawn(asio::io_context& io, std::string_view file, const std::vector<std::string>& args, const options& opts);
child spawn(asio::io_context& io, std::string_view file, const std::vector<std::string>& args);
child spawn(asio::io_context& io, std::string_view file);

// Like spawn, and also buffers stdout and stderr for async_result (up to max_buffer each).
child exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args,
                const options& opts);
child exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args);
child exec_file(asio::io_context& io, std::string_view file);
// exec_file(opts.shell, {"-c", command}).
child exec(asio::io_context& io, std::string_view command, const options& opts);
child exec(asio::io_context& io, std::string_view command);

namespace detail {
// A callback gets the child back (the seed's `const child = exec(cmd, callback)`); any other token gets what it
// makes (an awaitable, a deferred operation, a future).
template <typename CompletionToken>
auto result_or_child(child c, CompletionToken&& token) {
  using R = decltype(c.async_result(std::forward<CompletionToken>(token)));
  if constexpr (std::is_void_v<R>) {
    c.async_result(std::forward<CompletionToken>(token));
    return c;
  } else {
    return c.async_result(std::forward<CompletionToken>(token));
  }
}
}  // namespace detail

// GCC 12 destroys a temporary that has a destructor twice when it stands in a co_await expression (fixed in GCC 13).
// So in a coroutine, write `co_await exec(io, cmd, use_awaitable)`, or name the options (and a braced list of
// arguments, and a child you call async_wait on) in a variable first, rather than `co_await exec(io, cmd,
// {.cwd = d}, use_awaitable)`. For the same reason the overloads without options take no default argument.
template <asio::completion_token_for<void(error_code, exec_result)> CompletionToken>
auto exec(asio::io_context& io, std::string_view command, const options& opts, CompletionToken&& token) {
  return detail::result_or_child(exec(io, command, opts), std::forward<CompletionToken>(token));
}
template <asio::completion_token_for<void(error_code, exec_result)> CompletionToken>
auto exec(asio::io_context& io, std::string_view command, CompletionToken&& token) {
  return detail::result_or_child(exec(io, command), std::forward<CompletionToken>(token));
}

template <asio::completion_token_for<void(error_code, exec_result)> CompletionToken>
auto exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args,
               const options& opts, CompletionToken&& token) {
  return detail::result_or_child(exec_file(io, file, args, opts), std::forward<CompletionToken>(token));
}
template <asio::completion_token_for<void(error_code, exec_result)> CompletionToken>
auto exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args,
               CompletionToken&& token) {
  return detail::result_or_child(exec_file(io, file, args), std::forward<CompletionToken>(token));
}

// Run to completion in the calling thread, with a private io_context. opts.input is written to stdin.
sync_result spawn_sync(std::string_view file, const std::vector<std::string>& args, const options& opts = {});
sync_result exec_file_sync(std::string_view file, const std::vector<std::string>& args, const options& opts = {});
sync_result exec_sync(std::string_view command, const options& opts = {});

}  // namespace clutch
