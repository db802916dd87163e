// The primary: starting workers into slots, their events, restarts with back-off, reload and graceful stop.
#include <unistd.h>

#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <stdexcept>

#include "cluster/primary_state.hpp"
#include "cluster/protocol.hpp"
#include "common/completion.hpp"
#include "os/self.hpp"

namespace clutch::cluster {

namespace detail {

namespace {

namespace json = boost::json;
using ::clutch::detail::complete;

// This executable and its own arguments.
void default_command(primary_state& p) {
  auto me = os::self_command();
  if (p.program.empty()) {
    p.program = me.exe;
    if (!me.argv.empty()) p.argv0 = me.argv.front();
  }
  if (!p.cfg.args) p.args.assign(me.argv.empty() ? me.argv.end() : me.argv.begin() + 1, me.argv.end());
}

void emit_fork(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) {
  if (std::exchange(w->fork_emitted, true)) return;
  worker wk(w);
  p->on_fork.call(wk);
}

void emit_error(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w, error_code ec) {
  emit_fork(p, w);
  worker wk(w);
  w->on_error.call(ec);
  p->on_error.call(wk, ec);
}

void emit_disconnect(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) {
  if (std::exchange(w->disconnect_emitted, true)) return;
  emit_fork(p, w);
  if (w->state != worker_state::dead) w->state = worker_state::disconnected;
  stop_routing(p, w);
  worker wk(w);
  w->on_disconnect.call();
  p->on_disconnect.call(wk);
}

void on_worker_exit(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                    const exit_status& status) {
  if (std::exchange(w->exit_emitted, true)) return;
  emit_disconnect(p, w);
  w->state = worker_state::dead;
  p->live.erase(w->id);
  // The replacement (if any) starts first: it loads while the exit handlers run.
  const bool given_up = p->pool.exited(w->id, status) == exit_outcome::given_up;
  worker wk(w);
  w->on_exit.call(status);
  p->on_exit.call(wk, status);
  if (given_up) emit_error(p, w, make_error_code(errc::crash_loop));
}

// A handler for the worker's process and channel events, which hold both weakly (the records own the process):
// f(p, w, args…) runs only while the primary and the worker are both still there.
template <typename F>
auto while_both(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w, F f) {
  return [wp = std::weak_ptr(p), ww = std::weak_ptr(w), f](auto&&... args) {
    auto p = wp.lock();
    auto w = ww.lock();
    if (p && w) f(p, w, std::forward<decltype(args)>(args)...);
  };
}

void on_internal(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                 const json::value& msg) {
  const std::string_view cmd = command_of(msg);
  emit_fork(p, w);
  worker wk(w);
  if (cmd == "CLUTCH_online") {
    if (w->state != worker_state::none) return;
    w->state = worker_state::online;
    w->on_online.call();
    p->on_online.call(wk);
  } else if (cmd == "CLUTCH_listen") {
    handle_listen(p, w, msg);
  } else if (cmd == "CLUTCH_listening") {
    asio::ip::tcp::endpoint at;
    if (!endpoint_from(msg, at)) return;
    if (w->state == worker_state::online || w->state == worker_state::none) w->state = worker_state::listening;
    w->on_listening.call(at);
    p->on_listening.call(wk, at);
    if (!p->cfg.wait_ready) p->pool.ready(w->id);  // once per worker: the pool ignores a repeat
  } else if (cmd == "CLUTCH_ready") {
    p->pool.ready(w->id);
  } else if (cmd == "CLUTCH_leaving") {
    // It leaves by itself (disconnect_self): its exit was asked for, and its slot is retired, not restarted.
    let_go(*p, w);
  } else if (cmd == "CLUTCH_accepted" || cmd == "CLUTCH_refused") {
    handle_handoff_answer(p, w, msg, cmd == "CLUTCH_accepted");
  }
}

// A process for the slot: the pool's start().
void start_worker(const std::shared_ptr<primary_state>& p, std::size_t slot, int id) {
  auto w = std::make_shared<worker_record>();
  w->owner = p;
  w->id = id;
  w->slot = slot;

  const auto& cfg = p->cfg;
  auto vars = p->slot_vars[slot];
  vars[std::string(worker_id_variable)] = std::to_string(w->id);
  options o;
  o.cwd = cfg.cwd;
  o.silent = cfg.silent;
  // The listeners its slot's earlier workers used come with it, above the channel at fd 3: a replacement then
  // serves without waiting for a reply from us.
  const auto std_slot = cfg.silent ? stdio::pipe : stdio::inherit;
  o.stdio = {std_slot, std_slot, cfg.pipe_stderr ? stdio::pipe : std_slot, stdio::ipc};
  if (cfg.pipe_stderr && !cfg.silent) o.close_grace = std::chrono::seconds(1);
  json::array inherited;
  for (auto& l : listeners_for(p, slot, 4)) {
    o.stdio.push_back(stdio::fd(l.fd));
    inherited.push_back(std::move(l.entry));
  }
  if (!inherited.empty()) vars[std::string(listeners_variable)] = json::serialize(inherited);
  o.env = cfg.env.plus(vars);
  o.kill_tree = true;  // its own process group: kill() and the deadline reach the worker's children
  o.death_signal = cfg.death_signal;
  o.argv0 = p->argv0;
  w->proc = clutch::fork(p->io, p->program, p->args, o);
  p->live.emplace(w->id, w);

  std::weak_ptr<primary_state> wp = p;
  w->proc.on_message(while_both(p, w, [](auto& p, auto& w, const json::value& msg, handle h) {
    emit_fork(p, w);
    // A handle has one owner: the first handler gets it.
    for (std::size_t i = 0; i < w->on_message.size(); ++i) w->on_message[i](msg, std::exchange(h, handle{}));
    worker wk(w);
    for (std::size_t i = 0; i < p->on_message.size(); ++i) p->on_message[i](wk, msg, std::exchange(h, handle{}));
  }));
  w->proc.channel().on_internal_message(
      while_both(p, w, [](auto& p, auto& w, const json::value& msg, handle&) { on_internal(p, w, msg); }));
  w->proc.on_disconnect(while_both(p, w, [](auto& p, auto& w, error_code) { emit_disconnect(p, w); }));

  // Node emits 'fork' on the next tick; the worker's other events, which may come first when the io_context
  // runs them before this post, emit it first themselves (emit_fork), so the order holds either way.
  asio::post(p->io, [w, wp] {
    auto p = wp.lock();
    if (!p) return;
    emit_fork(p, w);
    if (auto ec = w->proc.spawn_error()) {
      emit_error(p, w, ec);
      on_worker_exit(p, w, exit_status{});
    }
  });
  w->proc.on_exit(
      while_both(p, w, [](auto& p, auto& w, const exit_status& st) { on_worker_exit(p, w, st); }));
}

}  // namespace

void let_go(primary_state& p, const std::shared_ptr<worker_record>& w) {
  w->asked_to_exit = true;
  p.pool.let_go(w->id);
  stop_routing(p.shared_from_this(), w);
}

primary_state::primary_state(asio::io_context& io, settings s)
    : io(io),
      cfg(std::move(s)),
      pool(io, *this,
           pool_settings{cfg.restart,
                         {cfg.restart_delay, cfg.restart_backoff, cfg.max_restart_delay, cfg.stable_uptime,
                          cfg.max_restarts},
                         cfg.ready_timeout,
                         cfg.kill_timeout}) {}

void primary_state::start(std::size_t slot, int id) { start_worker(shared_from_this(), slot, id); }

bool primary_state::stop(int id) {
  auto it = live.find(id);
  if (it == live.end()) return true;
  let_go(*this, it->second);
  it->second->proc.send(json::object{{"cmd", "CLUTCH_disconnect"}});
  return true;
}

void primary_state::kill(int id) {
  auto it = live.find(id);
  if (it == live.end()) return;
  let_go(*this, it->second);
  it->second->proc.kill(SIGKILL);
}

void primary_state::retired(std::size_t slot) { release_slot(shared_from_this(), slot); }

void primary_state::reload_done(error_code ec) {
  if (!reload_waiter) return;
  auto h = std::move(reload_waiter);
  complete(io, std::move(*h), ec);
}

void primary_state::stopped() {
  close_listeners(*this);
  for (auto& h : std::exchange(stop_waiters, {})) complete(io, std::move(h), error_code{});
}

void disconnect_worker(const std::shared_ptr<worker_record>& w) {
  if (!w->alive()) return;
  if (auto p = w->owner.lock()) p->pool.stop_worker(w->id);
}

void reload(const std::shared_ptr<primary_state>& p, done_handler h) {
  if (p->pool.reloading()) return complete(p->io, std::move(h), make_error_code(errc::reload_in_progress));
  if (p->pool.stopping()) return complete(p->io, std::move(h), make_error_code(asio::error::operation_aborted));
  p->reload_waiter = std::make_unique<done_handler>(std::move(h));
  p->pool.reload();
}

void disconnect_all(const std::shared_ptr<primary_state>& p, done_handler h) {
  p->stop_waiters.push_back(std::move(h));
  p->pool.stop();
}

}  // namespace detail

// ---- worker ----

int worker::id() const noexcept { return rec_ ? rec_->id : 0; }
std::size_t worker::slot() const noexcept { return rec_ ? rec_->slot : 0; }
forked_child& worker::process() noexcept { return rec_->proc; }
worker_state worker::state() const noexcept { return rec_ ? rec_->state : worker_state::none; }
bool worker::exited_after_disconnect() const noexcept { return rec_ && rec_->asked_to_exit; }
bool worker::send(const boost::json::value& message) { return rec_->proc.send(message); }
bool worker::send(const boost::json::value& message, handle h) { return rec_->proc.send(message, std::move(h)); }
void worker::disconnect() { detail::disconnect_worker(rec_); }

error_code worker::kill(signal_spec sig) {
  if (!rec_->alive()) return {};
  if (auto p = rec_->owner.lock()) detail::let_go(*p, rec_);
  else rec_->asked_to_exit = true;
  auto ec = rec_->proc.kill(std::move(sig));
  if (!ec) rec_->proc.disconnect();
  return ec;
}

void worker::on_message(channel::message_handler h) { rec_->on_message.add(std::move(h)); }
void worker::on_online(std::function<void()> h) { rec_->on_online.add(std::move(h)); }
void worker::on_listening(std::function<void(const asio::ip::tcp::endpoint&)> h) {
  rec_->on_listening.add(std::move(h));
}
void worker::on_disconnect(std::function<void()> h) { rec_->on_disconnect.add(std::move(h)); }
void worker::on_exit(std::function<void(const exit_status&)> h) { rec_->on_exit.add(std::move(h)); }
void worker::on_error(std::function<void(error_code)> h) { rec_->on_error.add(std::move(h)); }

// ---- primary ----

primary::primary(asio::io_context& io, settings s) : state_(std::make_shared<detail::primary_state>(io, std::move(s))) {
  auto& p = *state_;
  p.program = p.cfg.program;
  if (p.cfg.args) p.args = *p.cfg.args;
  if (p.program.empty() || !p.cfg.args) detail::default_command(p);
}

primary::~primary() {
  auto& p = *state_;
  p.pool.abandon();
  // The workers see their channel close and exit, as they would if this process ended.
  for (auto& [id, w] : p.live) w->proc.disconnect();
  detail::close_listeners(p);
}

worker primary::fork() { return fork({}); }

worker primary::fork(const environment::map& vars) {
  auto& p = *state_;
  p.slot_vars.push_back(vars);
  const std::size_t slot = p.pool.add_slot();
  return worker(p.live.at(p.pool.current(slot)));
}

void primary::set_restart(restart_policy r) noexcept { state_->cfg.restart = state_->pool.settings().restart = r; }

std::vector<worker> primary::workers() const {
  std::vector<worker> out;
  for (auto& [id, w] : state_->live) out.emplace_back(w);
  return out;
}

const settings& primary::config() const noexcept { return state_->cfg; }

void primary::on_fork(std::function<void(worker&)> h) { state_->on_fork.add(std::move(h)); }
void primary::on_online(std::function<void(worker&)> h) { state_->on_online.add(std::move(h)); }
void primary::on_listening(std::function<void(worker&, const asio::ip::tcp::endpoint&)> h) {
  state_->on_listening.add(std::move(h));
}
void primary::on_disconnect(std::function<void(worker&)> h) { state_->on_disconnect.add(std::move(h)); }
void primary::on_exit(std::function<void(worker&, const exit_status&)> h) { state_->on_exit.add(std::move(h)); }
void primary::on_message(std::function<void(worker&, const boost::json::value&, handle)> h) {
  state_->on_message.add(std::move(h));
}
void primary::on_error(std::function<void(worker&, error_code)> h) { state_->on_error.add(std::move(h)); }

}  // namespace clutch::cluster
