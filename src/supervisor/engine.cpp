// The engine: its API, the slot pools' driver (start, stop, kill), a worker's launch and exit, and the stop.
// Its other concerns have files of their own (engine_state.hpp lists them).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include <boost/asio/post.hpp>
#include <algorithm>

#include "common/exit_text.hpp"
#include "process/held_child.hpp"
#include "supervisor/accepting.hpp"
#include "supervisor/engine_state.hpp"
#include "supervisor/node_preload.hpp"

namespace clutch::supervisor {

namespace detail {

std::string who(const worker& w) {
  return ::clutch::detail::process_label(w.agent, w.id, w.pid);
}

void start_worker(const std::shared_ptr<engine_state>& e, std::size_t slot, int id);
void start_agent(const std::shared_ptr<engine_state>& e, int id);

void check_stopped(const std::shared_ptr<engine_state>& e) {
  if (!e->stopping) return;
  // The agent goes last: the workers may need it while they finish.
  if (e->agent && !e->agent->exited && e->live.size() == 1) stop_worker(e, e->agent);
  if (!e->live.empty() || !e->sweeping.empty()) return;
  for (auto& done : std::exchange(e->stop_waiters, {})) done();
}

// A worker asked to end (stop signal, watchdog) that is still there after kill_timeout: its pool's kill(), SIGKILL
// to its group.
void kill_at_deadline(engine_state& e, const worker& w) { (w.agent ? e.agent_pool : e.pool).kill_at_deadline(w.id); }

// The stop signal (once), and the kill deadline from now.
void send_stop_signal(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (w->exited || std::exchange(w->signalled, true)) return;
  if (w->grace_timer) w->grace_timer->cancel();
  if (e->cfg.kill_mixed) {
    error_code ec;
    const int sig = signal_spec(e->cfg.stop_signal).resolve(ec);
    if (!ec) ::clutch::detail::signal_process(w->proc, sig);  // its main process only
  } else {
    w->proc.kill(e->cfg.stop_signal);  // kill_tree: its whole group
  }
  kill_at_deadline(*e, *w);
}

void stop_worker(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (w->exited || w->asked_to_stop) return;
  w->asked_to_stop = true;
  if (w->watchdog_timer) w->watchdog_timer->cancel();
  if (w->drain_timer) w->drain_timer->cancel();
  resteer(e);
  if (speaks_node(*w)) {
    if (e->cfg.shutdown_message) w->chan->send(boost::json::value("shutdown"));  // PM2's shutdown_with_message
    // clutch's preload in the worker stops it the right way for the app: the stop signal if it handles it, else
    // its servers closed for it (node_preload.cjs).
    if (w->preloaded && e->cfg.disconnect_first) return stop_through_preload(e, w);
    // Without it, Node's disconnect first, so that an app with no handler for the stop signal (it would die at once, in the
    // middle of its requests) finishes them. Not for one that took its sockets from LISTEN_FDS alone: written
    // for clutch, it handles the stop signal as docs/pm2-migration.md shows, which loses nothing even under
    // keep-alive, where Node's disconnect (http.Server.close) drops the connections idle at that moment.
    const bool fds_only = !w->servers.empty() && !w->asked_port;
    if (e->cfg.disconnect_first && !fds_only) return disconnect_then_signal(e, w);
  }
  send_stop_signal(e, w);
}

// The pools' kill(): SIGKILL to its group now (a worker that never started has no process: child refuses).
void kill_now(const std::shared_ptr<worker>& w) {
  if (w && !w->exited) w->proc.kill(SIGKILL);
}

// A slot or the agent is not started again: why, for last_error and the log, with the last failure that led here.
void give_up(engine_state& e, const std::string& what) {
  e.last_error = what + (e.last_failure.empty() ? std::string() : " (last: " + e.last_failure + ")");
  e.announce("given_up", e.last_error);
}

process_tag tag_of(const worker& w) { return {w.agent ? 0 : w.id, w.agent, w.pid, w.agent ? 0 : w.slot}; }

void on_exit(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, const exit_status& st) {
  if (std::exchange(w->exited, true)) return;
  for (auto* t : {&w->ready_timer, &w->watchdog_timer, &w->drain_timer, &w->probe_timer, &w->grace_timer})
    if (*t) (*t)->cancel();
  if (w->pid > 0) {  // else it never started, and start_failed has told why
    e->live.erase(w->pid);
    e->say("clutch: " + who(*w) + " " + ::clutch::detail::describe(st));
    if (!w->asked_to_stop && !st.ok()) e->last_failure = who(*w) + " " + ::clutch::detail::describe(st);
    if (e->exited) e->exited(tag_of(*w), st, w->asked_to_stop);
  }
  // What it left in its group goes too (nothing, for a worker that never started: it has no group).
  const int pid = w->pid;
  if (w->proc.sweep_group(e->cfg.kill_timeout, [we = std::weak_ptr(e), pid] {
        auto e = we.lock();
        if (!e) return;
        e->sweeping.erase(pid);
        check_stopped(e);
      }))
    e->sweeping.insert(pid);

  if (w->agent) {
    const auto outcome = e->agent_pool.exited(w->id, st);
    if (outcome == cluster::detail::exit_outcome::restarting) {
      const auto delay = e->agent_pool.restart_delay(0);
      e->say("clutch: the agent starts again in " +
             (delay.count() % 1000 == 0 ? std::to_string(delay.count() / 1000) + " s"
                                        : std::to_string(delay.count()) + " ms"));
    } else if (outcome == cluster::detail::exit_outcome::given_up) {
      give_up(*e, "the agent exited " + std::to_string(e->cfg.backoff.limit) +
                      " times in a row; it is not started again");
    }
    return check_stopped(e);
  }
  auto& s = e->slot_of(w->slot);
  if (e->pool.current(w->slot) == w->id || e->pool.incoming(w->slot) == w->id) {
    // the slot's last word (an old worker a reload replaced is not)
    s.last_code = st.signal ? 128 + *st.signal : st.code.value_or(0);
    s.last_exit = clock::now();
  }
  e->by_id.erase(w->id);
  // The pool restarts the slot (after its back-off), moves a reload on or fails it, or retires the slot.
  if (e->pool.exited(w->id, st) == cluster::detail::exit_outcome::given_up)
    give_up(*e, "worker slot " + std::to_string(w->slot + 1) + " crashed too often in a row; given up");
  release_sockets(e, w);
  resteer(e);
  check_stopped(e);
  bool none_left = true;
  for (std::size_t i = 0; i < e->pool.size(); ++i) none_left = none_left && e->pool.retired(i);
  if (!e->stopping && none_left && e->live.empty() && e->all_gone) e->all_gone();
}

// A start that failed before the program ran (spawn failed at chdir, no socket, EMFILE, …): for its slot, an exit
// like any other, restarted with back-off and given up after the crash-loop limit. It has no process, so
// nothing is signalled and nothing is swept.
void start_failed(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, const std::string& why) {
  const std::string what = (w->agent ? std::string("the agent") : "worker " + std::to_string(w->id)) +
                           " could not start: " + why;
  e->say("clutch: " + what);
  e->last_error = e->last_failure = what;
  if (e->start_failed) e->start_failed(tag_of(*w), what);
  asio::post(e->io, [e, w] { on_exit(e, w, exit_status{.code = 127}); });
}

// Starts w's process (a worker or the agent) and watches it: its exit, its watchdog, its readiness.
void launch(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, const std::string& program,
            const std::vector<std::string>& args, options o, environment::map vars) {
  if (e->notify) vars["NOTIFY_SOCKET"] = e->notify->address();
  if (e->cfg.watchdog.count() > 0) vars["WATCHDOG_USEC"] = std::to_string(e->cfg.watchdog.count() * 1000);
  if (e->cfg.base_env) o.env = environment::replace(*e->cfg.base_env).plus(o.env.vars());
  o.env = o.env.plus(e->cfg.env).plus(vars);
  o.cwd = e->cfg.cwd;
  o.uid = e->cfg.uid;
  o.gid = e->cfg.gid;
  pipe_output(*e, o);
  o.kill_tree = true;        // its own group: the stop signal and SIGKILL reach its children
  o.death_signal = SIGKILL;  // and it does not outlive clutch
  w->started = clock::now();
  const bool node = e->cfg.node_cluster && !w->agent;
  if (node) {
    const auto& preload = node_preload_path();
    if (preload.empty() && !std::exchange(e->preload_missing_said, true))
      e->say("clutch: no place for its Node preload in $TMPDIR or /tmp: Node workers stop with Node's disconnect");
    if (!preload.empty()) {
      const auto& set = o.env.vars();
      const auto it = set.find("NODE_OPTIONS");
      const char* own = o.env.how() == environment::mode::replace ? nullptr : std::getenv("NODE_OPTIONS");
      o.env = o.env.plus({{"NODE_OPTIONS", with_node_preload(it != set.end() ? it->second : own ? own : "", preload)}});
    }
    // The channel after the sockets (fds 3, 4, … stay LISTEN_FDS's), as Node's primary would fork it.
    while (o.stdio.size() < 3) o.stdio.push_back(stdio::inherit);
    o.stdio.push_back(stdio::ipc);
  }
  try {
    if (node) {
      auto forked = fork(e->io, program, args, o);
      w->chan = forked.channel();
      w->proc = std::move(forked);
    } else {
      w->proc = spawn(e->io, program, args, o);
    }
  } catch (const std::exception& x) {  // std::bad_alloc, or an Asio object that could not be made (EMFILE)
    return start_failed(e, w, x.what());  // w->proc stays empty: no process, nothing to signal
  }
  if (auto ec = w->proc.spawn_error()) return start_failed(e, w, ec.message());
  w->pid = w->proc.pid();
  e->live[w->pid] = w;
  e->say("clutch: " + who(*w) + " started");
  if (e->started) e->started(tag_of(*w));
  feed_watchdog(e, w);  // from the start, as systemd counts it
  pass_output(e, w);
  if (node) serve_node(e, w);
  // At the exit itself, not when the pipes end: a grandchild may hold them open for longer.
  w->proc.on_exit([we = std::weak_ptr(e), ww = std::weak_ptr(w)](const exit_status& st) {
    auto e = we.lock();
    auto w = ww.lock();
    if (e && w) on_exit(e, w, st);
  });
  watch_readiness(e, w);
}

// The pool's start(): worker `id` for the slot, its current one or a reload's replacement (pool.incoming).
void start_worker(const std::shared_ptr<engine_state>& e, std::size_t slot, int id) {
  auto w = std::make_shared<worker>();
  w->id = id;
  w->slot = slot;
  e->by_id[id] = w;
  const bool incoming = e->pool.incoming(slot) == id;
  // Its members of the steered groups: new ones for a reload's replacement (the old worker keeps its own until
  // it is gone), else the slot's, so that a restarted worker takes over what waits in them.
  for (std::size_t g = 0; g < e->groups.size(); ++g) {
    error_code ec;
    member_for(e, w, g, ec);
    if (ec) {
      if (incoming) drop_sockets(*e, w->socks);
      w->socks.clear();
      return start_failed(e, w, "no socket on " + address_text(e->groups[g].bound()) + ": " + ec.message());
    }
  }
  std::vector<std::pair<int, std::string>> fds;
  for (const auto& src : e->sources)
    fds.emplace_back(src.steered ? w->socks[src.index] : e->listeners[src.index].fd.get(), src.name);
  options o;
  pass_sockets(o, fds);
  std::vector<int> numbers;
  for (const auto& [fd, name] : fds) numbers.push_back(fd);
  w->inodes = socket_inodes(numbers);
  environment::map vars{{"CLUTCH_WORKER_ID", std::to_string(w->id)}};
  if (!e->cfg.instance_var.empty()) vars[e->cfg.instance_var] = std::to_string(slot);
  if (e->cfg.node_cluster) vars["NODE_UNIQUE_ID"] = std::to_string(w->id);
  launch(e, w, e->cfg.program, e->cfg.args, std::move(o), std::move(vars));
  if (incoming) resteer(e);  // the slot next in line changed
}

void start_workers(const std::shared_ptr<engine_state>& e) { e->pool.scale(e->cfg.workers); }

// The agent pool's start().
void start_agent(const std::shared_ptr<engine_state>& e, int id) {
  e->agent = std::make_shared<worker>();
  e->agent->agent = true;
  e->agent->id = id;
  launch(e, e->agent, "/bin/sh", {"-c", e->cfg.agent}, {}, {{"CLUTCH_AGENT", "1"}});
}

}  // namespace detail

using namespace detail;

void engine_state::start(std::size_t slot, int id) { start_worker(shared_from_this(), slot, id); }

// A reload's old worker and a scale-down's: the drain first; a replacement not yet serving, or everyone at a stop:
// the stop signal at once.
bool engine_state::stop(int id) {
  auto w = worker_of(id);
  if (!w || w->exited || w->pid <= 0) return true;  // never started: no process to signal
  if (stopping || pool.incoming(w->slot) == id) {
    stop_worker(shared_from_this(), w);  // which arms the deadline with the stop signal
    return false;
  }
  drain_then_stop(shared_from_this(), w);  // stop_worker once drained: the deadline counts from then
  return false;
}

void engine_state::kill(int id) { kill_now(worker_of(id)); }

void engine_state::reload_done(error_code ec) {
  auto done = std::exchange(reload_cb, nullptr);
  if (destroyed) return;
  resteer(shared_from_this());
  announce("reloaded", ec ? "reload failed: " + ec.message() : std::string("reload done"));
  if (done) done(ec);
}

void engine_state::stopped() { check_stopped(shared_from_this()); }

void agent_driver::start(std::size_t, int id) {
  if (auto s = e.lock()) start_agent(s, id);
}
// Asked when the engine's stop begins (no restart from then on); check_stopped stops the agent after the workers,
// and the deadline counts from then.
bool agent_driver::stop(int) {
  if (auto s = e.lock()) check_stopped(s);
  return false;
}
void agent_driver::kill(int) {
  if (auto s = e.lock()) kill_now(s->agent);
}

engine::engine(asio::io_context& io, run_settings s) : state_(std::make_shared<engine_state>(io, std::move(s))) {
  state_->agent_driver_.e = state_;
}

engine::~engine() {
  auto& e = *state_;
  e.stopping = e.destroyed = true;
  e.pool.abandon();  // no restart from now on
  e.agent_pool.abandon();
  for (auto& [pid, w] : e.live) w->proc.kill(SIGKILL);  // kill_tree: the group, and only while it is ours
  for (const auto& l : e.listeners) remove_socket_file(l);  // the Unix socket files it made, if still those
}

void engine::adopt(std::vector<listener> ls) {
  for (auto& l : ls) {
    state_->say("clutch: given " + address_text(l) + " by our parent (LISTEN_FDS)");
    state_->sources.push_back({false, state_->listeners.size(), l.spec.name});
    state_->listeners.push_back(std::move(l));
  }
}

error_code engine::start() {
  auto& e = *state_;
  e.slots.resize(e.cfg.workers);
  for (const auto& spec : e.cfg.listen) {
    error_code ec;
    if (e.cfg.steer && !spec.unix_socket) {
      // A member per slot now: the first binds (and learns the port, if 0 was asked for).
      reuseport_group g(spec.tcp);
      for (auto& s : e.slots) {
        s.socks.push_back(g.add(ec));
        if (ec) return e.failed_to_bind(spec, ec);
      }
      e.say("clutch: listening on " + address_text(g.bound()) + " (a socket per worker, steered)");
      e.sources.push_back({true, e.groups.size(), spec.name});
      e.groups.push_back(std::move(g));
      continue;
    }
    auto l = open_listener(spec, ec);
    if (ec) return e.failed_to_bind(spec, ec);
    e.say("clutch: listening on " + address_text(l));
    e.sources.push_back({false, e.listeners.size(), spec.name});
    e.listeners.push_back(std::move(l));
  }
  // Names by position where none was given (LISTEN_FDNAMES).
  for (std::size_t i = 0; i < e.sources.size(); ++i)
    if (e.sources[i].name.empty()) e.sources[i].name = "listen" + std::to_string(i);
  try {
    e.notify = std::make_unique<notify_socket>(e.io);
  } catch (const std::system_error& x) {  // EMFILE, ENOBUFS: this app fails to start, nothing else
    return error_code(x.code().value(), boost::system::system_category());
  }
  e.notify->on_message([we = std::weak_ptr(state_)](pid_t from, const notify_message& m) {
    if (auto e = we.lock()) on_notify(e, from, m);
  });
  // With an agent, the workers start once it is ready (mark_ready).
  if (e.cfg.agent.empty()) {
    e.workers_started = true;
    start_workers(state_);
  } else {
    e.agent_pool.add_slot();  // start_agent
  }
  if (e.cfg.max_memory > 0) {
    e.memory_timer.emplace(e.io);
    check_memory(state_);
  }
  return {};
}

void engine::reload(std::function<void(error_code)> done) {
  auto& e = *state_;
  if (e.pool.reloading()) {
    if (done) done(make_error_code(errc::reload_in_progress));
    return;
  }
  if (e.stopping) {
    if (done) done(make_error_code(asio::error::operation_aborted));
    return;
  }
  e.announce("reload", "reload");
  e.reload_cb = std::move(done);
  e.pool.reload();  // slot 0 first; reload_done() tells how it ended
}

void engine::set_settings(const run_settings& next) {
  auto& e = *state_;
  const auto listen = std::move(e.cfg.listen);
  const auto agent = std::move(e.cfg.agent);
  const bool steer = e.cfg.steer;
  const unsigned workers = e.cfg.workers;
  const bool had_memory_limit = e.cfg.max_memory > 0;
  e.cfg = next;
  e.cfg.listen = listen;
  e.cfg.agent = agent;
  e.cfg.steer = steer;
  e.cfg.workers = workers;
  e.pool.settings().restart = e.cfg.restart;
  e.pool.settings().backoff = e.cfg.backoff;
  e.pool.settings().kill_timeout = e.agent_pool.settings().kill_timeout = e.cfg.kill_timeout;
  if (!had_memory_limit && e.cfg.max_memory > 0 && !e.stopping) {
    e.memory_timer.emplace(e.io);
    check_memory(state_);
  }
}

void engine::stop(std::function<void()> done) {
  auto& e = *state_;
  e.stop_waiters.push_back(std::move(done));
  if (!std::exchange(e.stopping, true)) {
    if (e.memory_timer) e.memory_timer->cancel();
    e.agent_pool.stop();  // no restart of the agent; it is stopped after the workers (check_stopped)
    // The reload ends (operation_aborted), no slot restarts, and every worker gets the stop signal (stop()).
    e.pool.stop();
  }
  check_stopped(state_);
}

void engine::signal_all(int sig) {
  for (auto& [pid, w] : state_->live) w->proc.kill(sig);
}

std::vector<std::string> engine::addresses() const {
  std::vector<std::string> out;
  for (const auto& src : state_->sources)
    out.push_back(src.steered ? address_text(state_->groups[src.index].bound())
                              : address_text(state_->listeners[src.index]));
  return out;
}
std::vector<int> engine::pids() const {
  std::vector<int> out;
  for (auto& [pid, w] : state_->live) out.push_back(pid);
  // Exited leaders held while their groups are swept are ours too: a subreaper must not take them.
  out.insert(out.end(), state_->sweeping.begin(), state_->sweeping.end());
  return out;
}
int engine::exit_code() const noexcept {
  const slot* last = nullptr;
  for (const auto& s : state_->slots)
    if (s.last_code != 0 && (!last || s.last_exit > last->last_exit)) last = &s;
  return last ? last->last_code : 0;
}
void engine::on_log(std::function<void(const std::string&)> h) { state_->log = std::move(h); }
void engine::on_all_gone(std::function<void()> h) { state_->all_gone = std::move(h); }
void engine::on_ready(std::function<void()> h) { state_->ready = std::move(h); }
void engine::on_output(std::function<void(const process_tag&, int, std::string_view, bool)> h) {
  state_->output = std::move(h);
}
void engine::on_start(std::function<void(const process_tag&)> h) { state_->started = std::move(h); }
void engine::on_event(std::function<void(std::string_view, const std::string&)> h) { state_->event = std::move(h); }
void engine::on_exit(std::function<void(const process_tag&, const exit_status&, bool)> h) {
  state_->exited = std::move(h);
}
void engine::on_start_failed(std::function<void(const process_tag&, const std::string&)> h) {
  state_->start_failed = std::move(h);
}
std::string engine::last_error() const { return state_->last_error; }
unsigned engine::errored_slots() const noexcept {
  const auto& pool = state_->pool;
  unsigned n = 0;
  for (std::size_t i = 0; i < pool.size(); ++i)
    n += pool.state(i) == cluster::detail::slot_state::errored && !pool.removed(i);
  return n;
}

std::vector<process_info> engine::processes() const {
  const auto& e = *state_;
  std::vector<process_info> out;
  auto add = [&](const worker& w, std::size_t slot, unsigned restarts) {
    process_info p;
    p.tag = tag_of(w);
    p.slot = slot;
    p.state = w.asked_to_stop ? process_info::state::stopping
              : w.ready       ? process_info::state::ready
                              : process_info::state::starting;
    p.started = w.started;
    p.restarts = restarts;
    for (std::size_t g = 0; g < w.socks.size() && g < e.groups.size(); ++g) {
      tcp_info info{};
      socklen_t len = sizeof info;
      if (w.socks[g] >= 0 && ::getsockopt(w.socks[g], IPPROTO_TCP, TCP_INFO, &info, &len) == 0)
        // For a listener the kernel puts the accept queue's length in tcpi_unacked and its size in tcpi_sacked.
        p.queues.push_back({address_text(e.groups[g].bound()), info.tcpi_unacked, info.tcpi_sacked});
    }
    out.push_back(p);
  };
  if (e.agent && !e.agent->exited && e.agent->pid) add(*e.agent, 0, e.agent_pool.size() ? e.agent_pool.restarts(0) : 0);
  // By slot: its worker, then a reload's replacement; then the workers a reload or a scale-down is stopping.
  std::vector<const worker*> listed;
  for (std::size_t i = 0; i < e.pool.size(); ++i)
    for (const int id : {e.pool.current(i), e.pool.incoming(i)})
      if (auto w = e.worker_of(id); w && !w->exited && w->pid) {
        add(*w, i, e.pool.restarts(i));
        listed.push_back(w.get());
      }
  for (const auto& [pid, w] : e.live)
    if (!w->agent && std::find(listed.begin(), listed.end(), w.get()) == listed.end())
      add(*w, w->slot, w->slot < e.pool.size() ? e.pool.restarts(w->slot) : 0);
  return out;
}

unsigned engine::workers() const noexcept {
  // Until the agent is ready no slot is in the pool yet: the number asked for.
  return state_->workers_started ? static_cast<unsigned>(state_->pool.wanted()) : state_->cfg.workers;
}

void engine::scale(unsigned n) {
  auto& e = *state_;
  if (n == 0 || e.stopping) return;
  e.cfg.workers = n;
  if (!e.workers_started) return;  // start_workers starts n once the agent is ready
  // Down: the last slots' workers are drained and stopped; up: removed slots come back first, then new ones.
  e.pool.scale(n);
  // A removed slot without a worker has nobody to take over what waits in its sockets: they go (that is reset).
  for (std::size_t i = 0; i < e.pool.size() && i < e.slots.size(); ++i)
    if (e.pool.removed(i) && !e.pool.current(i) && !e.pool.incoming(i)) {
      drop_sockets(e, e.slots[i].socks);
      e.slots[i].socks.clear();
    }
}

}  // namespace clutch::supervisor
