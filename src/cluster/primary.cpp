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

void finish_reload(primary_state& p, error_code ec) {
  if (!p.reloading) return;
  auto r = std::move(p.reloading);
  if (r->timer) r->timer->cancel();
  complete(p.io, std::move(r->done), ec);
}

void reload_next(const std::shared_ptr<primary_state>& p);

void reload_fail(const std::shared_ptr<primary_state>& p, error_code ec) {
  auto& r = *p->reloading;
  if (auto fresh = std::exchange(r.fresh, nullptr)) {
    // The old worker stays in the slot; the new one goes, and is not restarted.
    auto& s = p->slots[fresh->slot];
    if (s.incoming == fresh) s.incoming.reset();
    if (fresh->alive()) {
      fresh->asked_to_exit = true;
      fresh->routable = false;
      stop_routing(p, fresh);
      fresh->proc.kill(SIGKILL);
    }
  }
  finish_reload(*p, ec);
}

void reload_ready(const std::shared_ptr<primary_state>& p) {
  auto& r = *p->reloading;
  if (r.timer) r.timer->cancel();
  auto fresh = std::exchange(r.fresh, nullptr);
  auto& s = p->slots[fresh->slot];
  auto old = std::exchange(s.current, fresh);
  s.incoming.reset();
  if (old && old->alive()) {
    r.old = old;
    disconnect_worker(old);  // its exit moves the reload on
  } else {
    reload_next(p);
  }
}

void reload_next(const std::shared_ptr<primary_state>& p) {
  auto& r = *p->reloading;
  r.old.reset();
  while (!r.todo.empty()) {
    const std::size_t i = r.todo.front();
    r.todo.pop_front();
    auto& s = p->slots[i];
    if (s.retired || !s.current) continue;
    s.incoming = start_worker(p, i);
    r.fresh = s.incoming;
    r.timer.emplace(p->io, p->cfg.ready_timeout);
    r.timer->async_wait([wp = std::weak_ptr(p), fresh = std::weak_ptr(r.fresh)](error_code ec) {
      auto p = wp.lock();
      if (ec || !p || !p->reloading || p->reloading->fresh != fresh.lock()) return;
      reload_fail(p, make_error_code(errc::timed_out));
    });
    return;
  }
  finish_reload(*p, {});
}

void mark_ready(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) {
  if (std::exchange(w->ready, true)) return;
  if (p->reloading && p->reloading->fresh == w) reload_ready(p);
}

void check_stopped(const std::shared_ptr<primary_state>& p) {
  if (!p->stopping || !p->live.empty()) return;
  close_listeners(*p);
  p->stopping = false;
  for (auto& h : std::exchange(p->stop_waiters, {})) complete(p->io, std::move(h), error_code{});
}

void retire(const std::shared_ptr<primary_state>& p, std::size_t slot) {
  auto& s = p->slots[slot];
  s.retired = true;
  s.current.reset();
  if (s.restart_timer) s.restart_timer->cancel();
  release_slot(p, slot);
}

void restart_later(const std::shared_ptr<primary_state>& p, std::size_t slot, std::chrono::milliseconds delay) {
  auto& s = p->slots[slot];
  if (delay.count() == 0) {
    s.current = start_worker(p, slot);
    return;
  }
  s.restart_timer.emplace(p->io, delay);
  s.restart_timer->async_wait([wp = std::weak_ptr(p), slot](error_code ec) {
    auto p = wp.lock();
    if (ec || !p || p->stopping || p->slots[slot].retired) return;
    p->slots[slot].current = start_worker(p, slot);
  });
}

// What the slot does after its current worker exited. Returns crash_loop when the slot was given up.
error_code after_exit(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                      const exit_status& status) {
  auto& s = p->slots[w->slot];
  if (s.incoming == w) {  // a reload's new worker, gone before it was ready
    s.incoming.reset();
    if (p->reloading && p->reloading->fresh == w) reload_fail(p, make_error_code(errc::worker_failed));
    return {};
  }
  if (s.current != w) {  // an old worker that a reload replaced
    if (p->reloading && p->reloading->old == w) reload_next(p);
    return {};
  }
  s.current.reset();
  const auto& cfg = p->cfg;
  const bool failed = !status.ok();
  const bool wanted = cfg.restart == restart_policy::always || (cfg.restart == restart_policy::on_failure && failed);
  if (p->stopping || w->asked_to_exit || !wanted) {
    retire(p, w->slot);
    return {};
  }

  const ::clutch::detail::backoff_policy policy{cfg.restart_delay, cfg.restart_backoff, cfg.max_restart_delay,
                                               cfg.stable_uptime, cfg.max_restarts};
  const auto delay = s.restarts.next(policy, clock::now() - w->started);
  if (!delay) {
    retire(p, w->slot);
    return make_error_code(errc::crash_loop);
  }
  restart_later(p, w->slot, *delay);
  return {};
}

void on_worker_exit(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                    const exit_status& status) {
  if (std::exchange(w->exit_emitted, true)) return;
  emit_disconnect(p, w);
  w->state = worker_state::dead;
  if (w->kill_timer) w->kill_timer->cancel();
  p->live.erase(w->id);
  // The replacement (if any) starts first: it loads while the exit handlers run.
  const error_code given_up = after_exit(p, w, status);
  worker wk(w);
  w->on_exit.call(status);
  p->on_exit.call(wk, status);
  if (given_up) emit_error(p, w, given_up);
  check_stopped(p);
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
    if (!p->cfg.wait_ready) mark_ready(p, w);
  } else if (cmd == "CLUTCH_ready") {
    mark_ready(p, w);
  } else if (cmd == "CLUTCH_leaving") {
    // It leaves by itself (disconnect_self): its exit was asked for, and its slot is retired, not restarted.
    w->asked_to_exit = true;
    stop_routing(p, w);
  } else if (cmd == "CLUTCH_accepted" || cmd == "CLUTCH_refused") {
    handle_handoff_answer(p, w, msg, cmd == "CLUTCH_accepted");
  }
}

}  // namespace

std::shared_ptr<worker_record> start_worker(const std::shared_ptr<primary_state>& p, std::size_t slot) {
  auto w = std::make_shared<worker_record>();
  w->owner = p;
  w->id = p->next_id++;
  w->slot = slot;
  w->started = clock::now();

  const auto& cfg = p->cfg;
  auto vars = p->slots[slot].vars;
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
  return w;
}

void disconnect_worker(const std::shared_ptr<worker_record>& w) {
  if (!w->alive() || w->kill_timer) return;
  auto p = w->owner.lock();
  if (!p) return;
  w->asked_to_exit = true;
  w->routable = false;
  stop_routing(p, w);
  w->proc.send(json::object{{"cmd", "CLUTCH_disconnect"}});
  w->kill_timer.emplace(p->io, p->cfg.kill_timeout);
  w->kill_timer->async_wait([ww = std::weak_ptr(w)](error_code ec) {
    auto w = ww.lock();
    if (ec || !w || !w->alive()) return;
    w->proc.kill(SIGKILL);
  });
}

void reload(const std::shared_ptr<primary_state>& p, done_handler h) {
  if (p->reloading) return complete(p->io, std::move(h), make_error_code(errc::reload_in_progress));
  if (p->stopping) return complete(p->io, std::move(h), make_error_code(asio::error::operation_aborted));
  p->reloading = std::make_unique<reload_run>(std::move(h));
  for (std::size_t i = 0; i < p->slots.size(); ++i)
    if (!p->slots[i].retired && p->slots[i].current) p->reloading->todo.push_back(i);
  reload_next(p);
}

void disconnect_all(const std::shared_ptr<primary_state>& p, done_handler h) {
  p->stopping = true;
  if (p->reloading) finish_reload(*p, make_error_code(asio::error::operation_aborted));
  for (auto& s : p->slots)
    if (s.restart_timer) s.restart_timer->cancel();
  p->stop_waiters.push_back(std::move(h));
  auto live = p->live;  // disconnect_worker may change the map
  for (auto& [id, w] : live) disconnect_worker(w);
  check_stopped(p);
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
  rec_->asked_to_exit = true;
  if (auto p = rec_->owner.lock()) detail::stop_routing(p, rec_);
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
  p.stopping = true;
  for (auto& s : p.slots)
    if (s.restart_timer) s.restart_timer->cancel();
  if (p.reloading) detail::finish_reload(p, make_error_code(asio::error::operation_aborted));
  // The workers see their channel close and exit, as they would if this process ended.
  for (auto& [id, w] : p.live) w->proc.disconnect();
  detail::close_listeners(p);
}

worker primary::fork() { return fork({}); }

worker primary::fork(const environment::map& vars) {
  auto& p = *state_;
  p.slots.emplace_back();
  p.slots.back().vars = vars;
  const std::size_t slot = p.slots.size() - 1;
  p.slots[slot].current = detail::start_worker(state_, slot);
  return worker(p.slots[slot].current);
}

void primary::set_restart(restart_policy r) noexcept { state_->cfg.restart = r; }

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
