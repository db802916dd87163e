#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <tuple>

#include "common/completion.hpp"
#include "common/error_detail.hpp"
#include "os/pidfd.hpp"
#include "os/proc_stat.hpp"
#include "os/signals.hpp"
#include "process/child_state.hpp"
#include "process/held_child.hpp"
#include "process/plan.hpp"

namespace clutch {

int signal_number(std::string_view name) noexcept { return os::signal_number(name); }
const char* signal_name(int number) noexcept { return os::signal_name(number); }

int signal_spec::resolve(error_code& ec) const {
  ec.clear();
  if (name.empty()) {
    if (number >= 0 && number < 65) return number;  // 0 is kill()'s "does it exist" probe
  } else if (int n = os::signal_number(name); n > 0) {
    return n;
  }
  ec = detail::errno_error(EINVAL);
  return -1;
}

namespace detail {

namespace {

constexpr std::size_t read_chunk = 64 * 1024;

// Memory for a read only while it happens, as libuv lends its alloc_cb buffer: a pipe waits for data with no
// buffer of its own, so a daemon with 400 idle children does not hold 2 × 64 KiB for each. One buffer per thread,
// lent for one read and the handlers of its chunk; a read nested in such a handler (one that runs an io_context
// itself) gets a buffer of its own.
class lent_buffer {
 public:
  lent_buffer() {
    if (!std::exchange(in_use(), true)) {
      data_ = shared();
      owner_ = true;
    } else {
      own_ = std::make_unique<char[]>(read_chunk);
      data_ = own_.get();
    }
  }
  ~lent_buffer() {
    if (owner_) in_use() = false;
  }
  lent_buffer(const lent_buffer&) = delete;
  lent_buffer& operator=(const lent_buffer&) = delete;
  char* data() const noexcept { return data_; }

 private:
  static char* shared() {
    thread_local std::unique_ptr<char[]> b = std::make_unique<char[]>(read_chunk);
    return b.get();
  }
  static bool& in_use() {
    thread_local bool busy = false;
    return busy;
  }
  std::unique_ptr<char[]> own_;
  char* data_ = nullptr;
  bool owner_ = false;
};

}  // namespace

void child_state::start(const options& opts) {
  kill_tree = opts.kill_tree.value_or(false);
  close_grace = opts.close_grace;
  max_buffer = opts.max_buffer;
  watch_exit();
  if (opts.timeout.count() > 0) {
    timer.expires_after(opts.timeout);
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || self->closed) return;
      // A leader that exited on its own did not time out, even if a grandchild still holds its pipes; with
      // kill_tree that grandchild is still ours to end (the leader is kept unreaped for that, see on_exit_ready).
      if (!self->status || !self->reaped) self->fail(clutch::errc::timed_out);
    });
  }
}

void child_state::watch_exit() {
  pidfd->async_wait(asio::posix::descriptor_base::wait_read,
                    [self = shared_from_this()](boost::system::error_code ec) {
                      if (ec == asio::error::operation_aborted) return;
                      self->on_exit_ready();
                    });
}

void child_state::on_exit_ready() {
  // With kill_tree the exit is read without reaping (WNOWAIT): while the zombie exists its pid, which is also its
  // process group's id, cannot be given to anyone else, so a timeout that fires after the leader exited but while
  // grandchildren still hold its pipes can still signal the group safely. It is reaped in maybe_close().
  os::child_exit e;
  int rc = os::wait_pidfd(pidfd->native_handle(), /*reap=*/!kill_tree, e);
  if (rc == EAGAIN) {  // readable without an exit to report: not expected from Linux, but harmless to wait again
    watch_exit();
    return;
  }
  exit_status st;
  if (rc == 0) {
    if (e.signal != 0) {
      st.signal = e.signal;
    } else {
      st.code = e.code;
    }
  } else if (!failure) {
    // ECHILD: someone else reaped it (a SIGCHLD handler calling waitpid(-1), or SIGCHLD set to SIG_IGN). The exit
    // status is lost; say so rather than report an exit without code or signal as success.
    failure = errno_error(rc);
  }
  reaped = !kill_tree || rc != 0;
  status = st;
  // What the process wrote before it exited is in its pipes already, but their readiness may be seen after the
  // exit's: read it now, so that on_exit's handlers have all of it. (A grandchild's later writes still follow; the
  // pending wait goes on, and sees the end.) Bounded, in case a grandchild keeps writing.
  for (int slot : {1, 2})
    if (streams[slot].reading && !streams[slot].ended) read_now(slot, 16);
  on_process_exit.call();
  maybe_close();
  arm_grace();
}

void child_state::maybe_close() {
  if (closed || !status) return;
  // Node's 'exit', held back while a channel (fork) still has messages from the child to deliver.
  if (!exit_reported) {
    if (holds > 0) return;
    exit_reported = true;
    on_exit.call(*status);
  }
  for (const auto& s : streams) {
    if (s.reading && !s.ended) return;
  }
  closed = true;
  timer.cancel();
  reap();
  auto waiters = std::move(wait_waiters);
  for (auto& [id, h] : waiters) complete(io, std::move(h), result_error(), *status);
  auto results = std::move(result_waiters);
  for (auto& h : results) {
    complete(io, std::move(h), result_error(), exec_result{streams[1].kept, streams[2].kept, *status});
  }
}

void child_state::reap() {
  if (!closed || reap_holds > 0 || !pidfd || !pidfd->is_open()) return;
  if (!reaped) {
    os::child_exit ignored;
    os::wait_pidfd(pidfd->native_handle(), /*reap=*/true, ignored);
    reaped = true;
  }
  pidfd->close();
}

bool child_state::leader_held() {
  if (pid <= 1 || !kill_tree || !status || reaped || !pidfd || !pidfd->is_open()) return false;
  // Someone else may have reaped it (a waitpid(-1) of the program's own): then its pid, and so the group id, is
  // free to be given to a stranger, and we must not signal it.
  os::child_exit e;
  return os::wait_pidfd(pidfd->native_handle(), /*reap=*/false, e) == 0;
}

void child_state::release_hold() {
  if (holds > 0) --holds;
  maybe_close();
}

error_code child_state::signal(int sig) {
  // 0 would mean our own group and 1 init's: never a target, whatever went wrong before.
  if (pid <= 1) return clutch::errc::not_spawned;
  if (reaped) return {};
  if (kill_tree) {
    // The group's id is the leader's pid, which is ours until we reap it (see on_exit_ready).
    if (::kill(-pid, sig) != 0 && errno != ESRCH) return errno_error(errno);
    // A member stopped by job control (SIGTTIN from reading the terminal in a background group) would keep the
    // signal pending forever; SIGCONT lets it act on it.
    if (sig != SIGCONT && sig != 0) ::kill(-pid, SIGCONT);
    return {};
  }
  if (int e = os::send_signal(pidfd->native_handle(), sig); e != 0 && e != ESRCH) return errno_error(e);
  return {};
}

void child_state::fail(error_code ec) {
  if (!failure) failure = ec;
  ended_by_us = true;
  signal(kill_signal);
  arm_grace();
}

void child_state::arm_grace() {
  if (closed || !status || grace_timer) return;
  std::optional<std::chrono::milliseconds> wait = close_grace;
  if (ended_by_us && !wait) wait = std::chrono::milliseconds(100);
  if (!wait) return;  // Node's way: wait for every writer, however long
  grace_timer.emplace(io, *wait);
  grace_timer->async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closed) return;
    // Whoever still holds the pipes is not the process we started (it has exited): stop reading. The reads
    // complete with operation_aborted, which ends each stream, and then the call.
    for (int slot : {1, 2}) {
      if (!self->pipes[slot] || self->streams[slot].ended) continue;
      boost::system::error_code ignored;
      self->pipes[slot]->close(ignored);
    }
  });
}

void child_state::start_reading(int slot) {
  auto& s = streams[slot];
  if (s.reading || !pipes[slot]) return;
  s.reading = true;
  read_more(slot);
}

void child_state::read_more(int slot) {
  // Wait until there is something to read (null_buffers: no buffer while waiting), then read it (read_ready).
  pipes[slot]->async_read_some(asio::null_buffers(), [self = shared_from_this(), slot](boost::system::error_code ec,
                                                                                     std::size_t) {
    if (ec || !self->read_ready(slot)) self->end_stream(slot);  // closed (close_grace), EOF, or the pipe broke
  });
}

// What is there, a few reads at most so that one talkative child does not keep the others waiting. The descriptor
// is non-blocking (Asio made it so for the wait). false once the stream has ended.
bool child_state::read_ready(int slot) {
  if (!read_now(slot, 4)) return false;
  read_more(slot);
  return true;
}

// Up to `rounds` reads of what the pipe holds now, without waiting. false once the stream has ended (EOF, a broken
// pipe, or closed).
bool child_state::read_now(int slot, int rounds) {
  lent_buffer buf;
  for (int round = 0; round < rounds; ++round) {
    if (!pipes[slot] || !pipes[slot]->is_open()) return false;
    const auto n = ::read(pipes[slot]->native_handle(), buf.data(), read_chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return false;
    on_chunk(slot, std::string_view(buf.data(), static_cast<std::size_t>(n)));
    if (static_cast<std::size_t>(n) < read_chunk) break;  // drained, most likely
  }
  return pipes[slot] && pipes[slot]->is_open();
}

// EOF, or the pipe broke or was closed: either way this stream has ended.
void child_state::end_stream(int slot) {
  auto& st = streams[slot];
  if (std::exchange(st.ended, true)) return;
  st.on_end.call();
  maybe_close();
}

void child_state::on_chunk(int slot, std::string_view chunk) {
  auto& s = streams[slot];
  if (buffering) {
    if (s.overflowed) return;
    std::size_t room = max_buffer - s.kept.size();
    if (chunk.size() > room) {
      chunk = chunk.substr(0, room);
      s.overflowed = true;
    }
    s.kept.append(chunk);
  }
  if (!chunk.empty()) s.on_data.call(chunk);
  if (s.overflowed) fail(clutch::errc::max_buffer_exceeded);
}

void async_wait(const std::shared_ptr<child_state>& state, wait_handler handler) {
  if (!state) throw std::logic_error("clutch::child: async_wait on an empty child");
  auto& s = *state;
  if (s.closed || s.spawn_failure) {
    complete(s.io, std::move(handler), s.result_error(), s.status.value_or(exit_status{}));
    return;
  }
  auto id = s.next_waiter++;
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) {
    // Cancelling a wait forgets the waiter; the child runs on.
    slot.assign([weak = std::weak_ptr(state), id](asio::cancellation_type) {
      auto st = weak.lock();
      if (!st) return;
      auto& ws = st->wait_waiters;
      for (auto it = ws.begin(); it != ws.end(); ++it) {
        if (it->first != id) continue;
        auto h = std::move(it->second);
        ws.erase(it);
        complete(st->io, std::move(h), error_code(asio::error::operation_aborted), exit_status{});
        return;
      }
    });
  }
  s.wait_waiters.emplace_back(id, std::move(handler));
}

void async_result(const std::shared_ptr<child_state>& state, result_handler handler) {
  if (!state) throw std::logic_error("clutch::child: async_result on an empty child");
  auto& s = *state;
  if (s.closed || s.spawn_failure) {
    complete(s.io, std::move(handler), s.result_error(),
             exec_result{s.streams[1].kept, s.streams[2].kept, s.status.value_or(exit_status{})});
    return;
  }
  auto slot = asio::get_associated_cancellation_slot(handler);
  if (slot.is_connected()) {
    // Cancelling an exec ends the child, as Node's AbortSignal does; the result still waits for its exit.
    slot.assign([weak = std::weak_ptr(state)](asio::cancellation_type) {
      if (auto st = weak.lock(); st && !st->closed) st->fail(asio::error::operation_aborted);
    });
  }
  s.result_waiters.push_back(std::move(handler));
}

namespace {

// Polled, as a process group has no descriptor to wait on. The exited leader is held unreaped for the whole
// sweep, so its pid, which is the group's id, cannot be handed to another process while we signal it.
class group_sweep : public std::enable_shared_from_this<group_sweep> {
 public:
  group_sweep(std::shared_ptr<child_state> leader, std::chrono::milliseconds kill_after, std::function<void()> done)
      : leader_(std::move(leader)),
        timer_(leader_->io),
        started_(std::chrono::steady_clock::now()),
        kill_at_(started_ + kill_after),
        done_(std::move(done)) {
    ++leader_->reap_holds;
  }

  void poll() {
    const auto now = std::chrono::steady_clock::now();
    const bool ours = leader_->leader_held();
    // The exited leader we hold is a member itself: kill(-pgid, 0) would always find someone left.
    const bool left = ours && os::others_in_group(leader_->pid, started_).value_or(true);
    if (left && !killed_ && now >= kill_at_) {
      ::kill(-leader_->pid, SIGKILL);
      killed_ = true;
    }
    // A second after the SIGKILL, what is left can only be zombies that nobody reaps (under a PID 1 that does not).
    if (!left || now >= kill_at_ + std::chrono::seconds(1)) return finish();
    // Each look is a pass over /proc: often at first (most members go at the SIGTERM), then less.
    auto next = now + interval_;
    if (!killed_) next = std::min(next, kill_at_);  // the SIGKILL on time
    timer_.expires_at(next);
    interval_ = std::min(interval_ * 2, std::chrono::milliseconds(160));
    timer_.async_wait([self = shared_from_this()](boost::system::error_code) { self->poll(); });
  }

 private:
  void finish() {
    --leader_->reap_holds;
    leader_->reap();
    if (auto d = std::exchange(done_, nullptr)) d();
  }

  std::shared_ptr<child_state> leader_;
  asio::steady_timer timer_;
  std::chrono::steady_clock::time_point started_;  // after the leader's exit: a look at /proc must be as new
  std::chrono::steady_clock::time_point kill_at_;
  bool killed_ = false;
  std::chrono::milliseconds interval_{10};
  std::function<void()> done_;
};

}  // namespace

bool sweep_group(const std::shared_ptr<child_state>& leader, std::chrono::milliseconds kill_after,
                 std::function<void()> done) {
  if (!leader || !leader->leader_held()) return false;
  if (::kill(-leader->pid, SIGTERM) != 0) return false;  // the group is empty already
  ::kill(-leader->pid, SIGCONT);  // a member stopped by job control acts on the SIGTERM only once continued
  // Posted, so that done never runs before the caller has recorded that a sweep is under way.
  asio::post(leader->io, [sweep = std::make_shared<group_sweep>(leader, kill_after, std::move(done))] { sweep->poll(); });
  return true;
}

std::shared_ptr<child_state> start_child(asio::io_context& io, const std::string& file,
                                         const std::vector<std::string>& args, const options& opts, bool buffering) {
  // Like Node, a process that spawns children ignores SIGPIPE (if nobody chose otherwise): a child that closes
  // its stdin early must make our write fail with EPIPE, not kill us. Children get the default back.
  static std::once_flag sigpipe_once;
  std::call_once(sigpipe_once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
  });
  auto state = std::make_shared<child_state>(io);
  state->buffering = buffering;
  built_plan built;
  if (auto ec = build_plan(file, args, opts, built)) {
    state->spawn_failure = ec;
    return state;
  }
  state->kill_signal = built.kill_signal;
  os::spawn_result r = os::spawn(built.plan);
  if (r.stage != os::spawn_stage::none) {
    state->spawn_failure = spawn_error(r.stage, r.error);
    return state;
  }
  state->pid = r.pid;
  built.child_ends.clear();  // the child has its copies; ours would keep its pipes from ever reaching EOF
  try {
    // Each descriptor stays owned by its unique_fd until an Asio object has taken it, so a throw here leaks none.
    state->pidfd.emplace(io, r.pidfd.get());
    r.pidfd.release();
    auto& ends = built.parent_ends;
    for (std::size_t i = 0; i < ends.size(); ++i) {
      if (!ends[i]) continue;
      if (i == 0) {
        state->in.emplace(io, ends[i].get());
      } else if (i < 3) {
        state->pipes[i].emplace(io, ends[i].get());
      } else {
        if (state->sockets.size() <= i) state->sockets.resize(i + 1);
        state->sockets[i].emplace(io, asio::local::stream_protocol(), ends[i].get());
      }
      ends[i].release();
    }
    state->start(opts);
  } catch (...) {
    // Nothing watches the child yet: end and reap it here rather than leave a zombie nobody will wait for.
    int fd = state->pidfd ? state->pidfd->native_handle() : r.pidfd.get();
    os::send_signal(fd, SIGKILL);
    siginfo_t info;
    while (::waitid(P_PIDFD, static_cast<id_t>(fd), &info, WEXITED) != 0 && errno == EINTR) {
    }
    throw;
  }
  if (buffering) {
    state->start_reading(1);
    state->start_reading(2);
  }
  return state;
}

held_child start_held_child(asio::io_context& io, const std::string& file, const std::vector<std::string>& args,
                            const options& opts) {
  auto state = start_child(io, file, args, opts, /*buffering=*/false);
  if (state->spawn_failure) return {child(std::move(state)), [] {}};
  ++state->holds;
  auto release = [weak = std::weak_ptr(state), released = std::make_shared<bool>(false)] {
    if (std::exchange(*released, true)) return;
    if (auto s = weak.lock()) s->release_hold();
  };
  return {child(std::move(state)), std::move(release)};
}

void on_process_end(child& c, std::function<void()> f) {
  if (c.state()) c.state()->on_process_exit.add(std::move(f));
}

child failed_child(asio::io_context& io, error_code why) {
  auto state = std::make_shared<child_state>(io);
  state->spawn_failure = why;
  return child(std::move(state));
}

error_code signal_process(const child& c, int sig) {
  const auto& s = c.state();
  if (!s || s->pid <= 1 || !s->pidfd || !s->pidfd->is_open()) return clutch::errc::not_spawned;
  if (s->reaped) return {};
  if (int e = os::send_signal(s->pidfd->native_handle(), sig); e != 0 && e != ESRCH) return errno_error(e);
  return {};
}

}  // namespace detail

pid_t child::pid() const noexcept { return state_ ? state_->pid : 0; }
error_code child::spawn_error() const noexcept {
  return state_ ? state_->spawn_failure : error_code(clutch::errc::not_spawned);
}
std::optional<exit_status> child::exit() const noexcept { return state_ ? state_->status : std::nullopt; }

namespace {
// A stream of a child that never started: the spawn's own error, not a claim about how the slot was set up.
void check_started(const std::shared_ptr<detail::child_state>& s) {
  if (s && s->spawn_failure) throw std::system_error(s->spawn_failure, "clutch::child: the process did not start");
}
}  // namespace

asio::writable_pipe& child::std_in() {
  check_started(state_);
  if (!state_ || !state_->in) throw std::logic_error("clutch::child: stdin is not a pipe");
  return *state_->in;
}
asio::readable_pipe& child::std_out() {
  check_started(state_);
  if (!state_ || !state_->pipes[1]) throw std::logic_error("clutch::child: stdout is not a pipe");
  return *state_->pipes[1];
}
asio::readable_pipe& child::std_err() {
  check_started(state_);
  if (!state_ || !state_->pipes[2]) throw std::logic_error("clutch::child: stderr is not a pipe");
  return *state_->pipes[2];
}
asio::local::stream_protocol::socket& child::stdio_socket(int slot) {
  check_started(state_);
  if (!state_ || slot < 3 || static_cast<std::size_t>(slot) >= state_->sockets.size() ||
      !state_->sockets[static_cast<std::size_t>(slot)]) {
    throw std::logic_error("clutch::child: that stdio slot is not a pipe");
  }
  return *state_->sockets[static_cast<std::size_t>(slot)];
}
void child::close_stdin() {
  if (state_ && state_->in) {
    boost::system::error_code ignored;
    state_->in->close(ignored);
  }
}

void child::on_data(int slot, std::function<void(std::string_view)> handler) {
  if (!state_ || (slot != out && slot != err)) throw std::logic_error("clutch::child: on_data takes child::out or child::err");
  state_->streams[slot].on_data.add(std::move(handler));
  state_->start_reading(slot);
}

void child::on_end(int slot, std::function<void()> handler) {
  if (!state_ || (slot != out && slot != err)) throw std::logic_error("clutch::child: on_end takes child::out or child::err");
  state_->streams[slot].on_end.add(std::move(handler));
  state_->start_reading(slot);
}

void child::on_exit(std::function<void(const exit_status&)> handler) {
  if (!state_) throw std::logic_error("clutch::child: on_exit on an empty child");
  state_->on_exit.add(std::move(handler));
}

bool child::sweep_group(std::chrono::milliseconds kill_after, std::function<void()> done) {
  return detail::sweep_group(state_, kill_after, std::move(done));
}

error_code child::kill(signal_spec sig) {
  if (!state_) return clutch::errc::not_spawned;
  error_code ec;
  int n = sig.resolve(ec);
  if (ec) return ec;
  ec = state_->signal(n);
  if (n != 0 && n != SIGCONT) {  // meant to end it: once it has, what it left holding the pipes is not waited for
    state_->ended_by_us = true;
    state_->arm_grace();
  }
  return ec;
}

child spawn(asio::io_context& io, std::string_view file, const std::vector<std::string>& args, const options& opts) {
  return child(detail::start_child(io, std::string(file), args, opts, /*buffering=*/false));
}

child exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args,
                const options& opts) {
  return child(detail::start_child(io, std::string(file), args, opts, /*buffering=*/true));
}

child exec(asio::io_context& io, std::string_view command, const options& opts) {
  if (opts.kill_tree) return exec_file(io, opts.shell, {"-c", std::string(command)}, opts);
  options o = opts;
  o.kill_tree = true;  // what the command starts in the background ends with it (on a timeout, kill, cancel)
  return exec_file(io, o.shell, {"-c", std::string(command)}, o);
}

// The overloads without options exist because of GCC 12's co_await bug (see the header): a default argument would
// be a temporary in the caller's co_await expression.
namespace {
const options defaults{};
const std::vector<std::string> no_args;
}
child spawn(asio::io_context& io, std::string_view file, const std::vector<std::string>& args) {
  return spawn(io, file, args, defaults);
}
child exec_file(asio::io_context& io, std::string_view file, const std::vector<std::string>& args) {
  return exec_file(io, file, args, defaults);
}
child exec(asio::io_context& io, std::string_view command) { return exec(io, command, defaults); }
child spawn(asio::io_context& io, std::string_view file) { return spawn(io, file, no_args, defaults); }
child exec_file(asio::io_context& io, std::string_view file) { return exec_file(io, file, no_args, defaults); }

}  // namespace clutch
