// The master's lifecycle: start order, the agent's pool, the app workers' cluster, the roles' stderr, and the
// ordered stop. Where messages go is router.cpp's (master_state.hpp).
#include <signal.h>
#include <unistd.h>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "app/master_state.hpp"
#include "app/protocol.hpp"
#include "cluster/slot_pool.hpp"
#include "common/completion.hpp"
#include "common/exit_text.hpp"
#include "os/fd.hpp"
#include "os/self.hpp"

namespace clutch::app {

namespace json = boost::json;

namespace detail {

using ::clutch::detail::complete;

namespace {

std::string describe(const proc& p) {
  return ::clutch::detail::process_label(p.r == role::agent, p.id, p.pid, "app worker");
}

using ::clutch::detail::describe;

// ---- processes ----

std::shared_ptr<link> attach(const std::shared_ptr<master_state>& m, const std::shared_ptr<proc>& p, channel ch) {
  auto l = link::make(m->io, std::move(ch));
  std::weak_ptr<master_state> wm = m;
  l->on_envelope = [wm](const json::object& env) {
    auto m = wm.lock();
    if (!m) return;
    ++m->stats.forwarded;
    route(m, env);
  };
  l->on_acked = [wm](const frame& f) {
    if (auto m = wm.lock()) copy_settled(m, f.from, f.id, f.track, {});
  };
  // By value: the process record may be gone by the time the channel reports what it never delivered.
  l->on_lost = [wm, r = p->r, slot = p->slot](std::deque<frame> lost) {
    if (auto m = wm.lock()) requeue(m, r, slot, std::move(lost));
  };
  return l;
}

void fail_start(const std::shared_ptr<master_state>& m, std::string why);
void role_ready(const std::shared_ptr<master_state>& m, const std::shared_ptr<proc>& p);
void start_agent(const std::shared_ptr<master_state>& m, int id);
void agent_gone(const std::shared_ptr<master_state>& m, int id, const exit_status& st);
void check_stopped(const std::shared_ptr<master_state>& m);
void pass_on_stderr(const std::shared_ptr<master_state>& m, proc& p);

void on_role_control(const std::shared_ptr<master_state>& m, const std::shared_ptr<proc>& p,
                     const json::object& msg) {
  if (command_of(msg) == "CLUTCH_ready") role_ready(m, p);
}

// Whatever a role left in its process group goes with it; a process that never started has no group to sweep.
void sweep_group(const std::shared_ptr<master_state>& m, child& process) {
  if (process.sweep_group(m->cfg.kill_timeout, [wm = std::weak_ptr(m)] {
        auto m = wm.lock();
        if (m && --m->sweeping == 0) check_stopped(m);
      }))
    ++m->sweeping;  // done is posted: it cannot have run yet
}

void role_exited(const std::shared_ptr<master_state>& m, std::shared_ptr<proc> p, const exit_status& st) {
  if (std::exchange(p->exited, true)) return;
  m->procs.erase(p->pid);
  if (p->l) p->l->close();
  for (auto& env : std::exchange(p->held, {})) fail_copy(m, env, errc::no_such_process);
  sweep_group(m, p->process);
  m->on_exit.call(p->r, p->pid, st);

  if (m->ph == phase::agent || m->ph == phase::apps) {
    m->failed_tail = p->tail;
    fail_start(m, describe(*p) + " " + describe(st) + " during start-up");
  }
  if (p->r == role::agent && m->agent == p) {
    m->agent.reset();
    agent_gone(m, p->id, st);
  }
  check_stopped(m);
}

// What the agent's pool makes of its exit (or of a start that failed): a restart after its back-off (what is sent
// to the agent meanwhile waits here), nothing during a stop, or giving up after a crash loop.
void agent_gone(const std::shared_ptr<master_state>& m, int id, const exit_status& st) {
  if (m->agent_pool.exited(id, st) != cluster::detail::exit_outcome::given_up) return;
  m->agent_given_up = true;
  for (auto& env : std::exchange(m->agent_queue, {})) fail_copy(m, env, errc::undeliverable);
  std::fprintf(stderr, "clutch::app: the agent exited %u times in a row; it is not started again\n",
               m->cfg.cluster.max_restarts);
}

void start_agent(const std::shared_ptr<master_state>& m, int id) {
  auto p = std::make_shared<proc>();
  p->r = role::agent;
  p->id = id;
  options o;
  o.cwd = m->cfg.cwd;
  o.silent = m->cfg.silent;
  if (!m->cfg.silent) {
    o.stdio = {stdio::inherit, stdio::inherit, stdio::pipe, stdio::ipc};
    o.close_grace = stderr_grace;
  }
  o.env = m->cfg.env.plus({{std::string(role_variable), "agent"}});
  o.kill_tree = true;
  o.death_signal = death_signal();
  std::string program = m->cfg.agent_program;
  std::vector<std::string> args;
  if (m->cfg.agent_args) args = *m->cfg.agent_args;
  if (program.empty() || !m->cfg.agent_args) {
    if (program.empty()) {
      program = m->agent_cmd.exe;
      if (!m->agent_cmd.argv.empty()) o.argv0 = m->agent_cmd.argv.front();
    }
    if (!m->cfg.agent_args && !m->agent_cmd.argv.empty())
      args.assign(m->agent_cmd.argv.begin() + 1, m->agent_cmd.argv.end());
  }
  p->agent_child = clutch::fork(m->io, program, args, o);
  if (auto ec = p->agent_child.spawn_error()) {
    // Later, as an exit would come: the pool is not re-entered from inside its own start().
    asio::post(m->io, [wm = std::weak_ptr(m), id, why = "the agent could not be started: " + ec.message()] {
      auto m = wm.lock();
      if (!m) return;
      if (m->ph == phase::agent) fail_start(m, why);
      else std::fprintf(stderr, "clutch::app: %s\n", why.c_str());
      agent_gone(m, id, exit_status{.code = 127});  // for its pool, an exit like any other
      check_stopped(m);
    });
    return;
  }
  p->pid = p->agent_child.pid();
  p->process = p->agent_child;
  if (!m->cfg.silent) pass_on_stderr(m, *p);
  if (m->ph == phase::running) ++m->stats.agent_restarts;
  m->agent = p;
  m->procs[p->pid] = p;
  p->l = attach(m, p, p->agent_child.channel());
  std::weak_ptr<master_state> wm = m;
  std::weak_ptr<proc> wp = p;
  p->l->on_control = [wm, wp](const json::object& msg, handle) {
    auto m = wm.lock();
    auto p = wp.lock();
    if (m && p) on_role_control(m, p, msg);
  };
  p->agent_child.on_exit([wm, wp](const exit_status& st) {
    auto m = wm.lock();
    auto p = wp.lock();
    if (m && p) role_exited(m, p, st);
  });
  m->on_start.call(role::agent, p->pid);
}

void start_apps(const std::shared_ptr<master_state>& m) {
  m->ph = phase::apps;
  m->start_timer.expires_after(m->cfg.app_start_timeout);
  m->start_timer.async_wait([wm = std::weak_ptr(m)](error_code ec) {
    auto m = wm.lock();
    if (ec || !m || m->ph != phase::apps) return;
    std::string who;
    for (auto& [pid, p] : m->procs)
      if (p->r == role::app && !p->ready) who += (who.empty() ? "" : ", ") + describe(*p);
    fail_start(m, (who.empty() ? std::string("app workers") : who) + " not ready within " +
                      std::to_string(m->cfg.app_start_timeout.count()) + " ms");
  });
  for (unsigned i = 0; i < m->workers; ++i) m->apps->fork();
}

void finish_start(const std::shared_ptr<master_state>& m, error_code ec) {
  m->start_timer.cancel();
  if (!m->starting) return;
  // A failed start completes once every role's stderr has ended (check_stopped), so these are its last lines.
  if (ec && m->failed_tail && !m->failed_tail->kept.lines().empty())
    m->why += "; the last lines of its stderr:" + std::exchange(m->failed_tail, {})->text();
  ready_info info;
  if (!ec) {
    info.listening = m->listening;
    info.agent_pid = m->agent ? m->agent->pid : 0;
    for (auto& [pid, p] : m->procs)
      if (p->r == role::app) info.app_pids.push_back(pid);
  }
  auto h = std::move(m->starting);
  complete(m->io, std::move(*h), ec, std::move(info));
}

void role_ready(const std::shared_ptr<master_state>& m, const std::shared_ptr<proc>& p) {
  if (p->exited || std::exchange(p->ready, true)) return;
  if (p->r == role::agent) {
    flush(m->agent_queue, *p);
    flush(p->held, *p);
    for (auto& [pid, w] : m->procs)
      if (w->r == role::app && deliverable(*w)) {
        tell_agent(m, *w);
        pair_up(m, *w);
      }
    set_agent(m->own, p->pid);
    if (m->ph == phase::agent) {
      m->start_timer.cancel();
      start_apps(m);
    }
    return;
  }
  flush(m->slot_queues[p->slot], *p);
  flush(m->random_queue, *p);
  flush(p->held, *p);
  tell_agent(m, *p);
  pair_up(m, *p);
  if (m->ph != phase::apps) return;
  unsigned ready = 0;
  for (auto& [pid, w] : m->procs) ready += w->r == role::app && w->ready;
  if (ready >= m->workers) {
    m->ph = phase::running;
    m->apps->set_restart(m->restart);
    finish_start(m, {});
  }
}

void watch_apps(const std::shared_ptr<master_state>& m) {
  std::weak_ptr<master_state> wm = m;
  auto& c = *m->apps;
  c.on_fork([wm](cluster::worker& w) {
    auto m = wm.lock();
    if (!m || w.process().spawn_error()) return;
    auto p = std::make_shared<proc>();
    p->r = role::app;
    p->pid = w.process().pid();
    p->process = w.process();
    if (!m->cfg.silent) pass_on_stderr(m, *p);
    p->id = w.id();
    p->slot = w.slot();
    m->slots = std::max(m->slots, p->slot + 1);
    m->procs[p->pid] = p;
    p->l = attach(m, p, w.process().channel());
    p->l->on_control = [wm, wp = std::weak_ptr(p)](const json::object& msg, handle) {
      auto m = wm.lock();
      auto p = wp.lock();
      if (m && p) on_role_control(m, p, msg);
    };
    m->on_start.call(role::app, p->pid);
  });
  c.on_listening([wm](cluster::worker&, const asio::ip::tcp::endpoint& at) {
    auto m = wm.lock();
    if (m && std::find(m->listening.begin(), m->listening.end(), at) == m->listening.end())
      m->listening.push_back(at);
  });
  c.on_exit([wm](cluster::worker& w, const exit_status& st) {
    auto m = wm.lock();
    if (!m) return;
    auto it = m->procs.find(w.process().pid());
    if (it != m->procs.end()) role_exited(m, it->second, st);
    else check_stopped(m);
  });
  c.on_error([wm](cluster::worker& w, error_code ec) {
    auto m = wm.lock();
    if (!m) return;
    const std::string who = "app worker " + std::to_string(w.id());
    if (m->ph == phase::apps) return fail_start(m, who + " could not be started: " + ec.message());
    if (ec == errc::crash_loop) {  // nobody will serve that slot again
      m->given_up.insert(w.slot());
      for (auto& env : std::exchange(m->slot_queues[w.slot()], {})) fail_copy(m, env, errc::undeliverable);
      std::fprintf(stderr, "clutch::app: %s: %s\n", who.c_str(), ec.message().c_str());
    }
  });
}


bool everything_gone(const master_state& m) { return m.procs.empty() && m.sweeping == 0 && m.reading == 0; }

// Passes a role's stderr on to ours, keeping its last lines. The pipe ends when every process holding it has
// exited, or a second after the role's own exit (close_grace) if something it left behind keeps it open.
void pass_on_stderr(const std::shared_ptr<master_state>& m, proc& p) {
  p.tail = std::make_shared<err_tail>();
  ++m->reading;
  p.process.on_data(child::err, [wm = std::weak_ptr(m), tail = p.tail](std::string_view chunk) {
    std::size_t written = 0;
    os::write_all(STDERR_FILENO, chunk, written);  // our stderr gone or full: the lines are still kept
    auto m = wm.lock();
    if (!m || chunk.empty()) return;
    m->stderr_mid_line = chunk.back() != '\n';
    // Only a start's failure reports lines; afterwards they are passed on and no more.
    if (m->ph == phase::agent || m->ph == phase::apps || m->ph == phase::failed)
      tail->split.feed(chunk, [&tail](std::string_view line) { tail->kept.add(line); });
  });
  p.process.on_end(child::err, [wm = std::weak_ptr(m), tail = p.tail] {
    tail->split.finish([&tail](std::string_view line) { tail->kept.add(line); });
    auto m = wm.lock();
    if (m && --m->reading == 0) check_stopped(m);
  });
}

// Stops the agent once every app worker is gone: the workers may still need it while they finish.
void check_stopped(const std::shared_ptr<master_state>& m) {
  if (m->ph != phase::stopping && m->ph != phase::failed) return;
  bool apps_left = false;
  for (auto& [pid, p] : m->procs) apps_left |= p->r == role::app;
  if (!apps_left && m->agent && !m->agent->exited && !std::exchange(m->agent->asked_to_stop, true)) {
    if (m->ph == phase::failed || !m->agent->l || !m->agent->l->up()) {
      m->agent->agent_child.kill(SIGKILL);
    } else {
      m->agent->l->chan().send(json::object{{"cmd", "CLUTCH_stop"}});
      m->agent_pool.kill_at_deadline(m->agent->id);  // its pool's kill() (SIGKILL) at kill_timeout
    }
    return;
  }
  if (!everything_gone(*m)) return;
  if (m->ph == phase::failed) finish_start(m, make_error_code(errc::worker_failed));
  m->ph = phase::stopped;
  for (auto& h : std::exchange(m->stop_waiters, {})) complete(m->io, std::move(h), error_code{});
}

// Start-up failed: everything started is stopped at once, then start() completes with the reason.
void fail_start(const std::shared_ptr<master_state>& m, std::string why) {
  if (m->ph != phase::agent && m->ph != phase::apps) return;
  m->why = std::move(why);
  m->ph = phase::failed;
  m->start_timer.cancel();
  fail_queues(m);
  m->agent_pool.stop();  // no restart; the agent is killed below
  m->apps->disconnect([](error_code) {});
  for (auto& w : m->apps->workers()) w.kill(SIGKILL);
  if (m->agent && !m->agent->exited) m->agent->agent_child.kill(SIGKILL);
  check_stopped(m);
}

}  // namespace

void start(const std::shared_ptr<master_state>& m, start_handler h) {
  if (m->ph != phase::idle)
    return complete(m->io, std::move(h), make_error_code(asio::error::already_started), ready_info{});
  m->starting = std::make_unique<start_handler>(std::move(h));
  m->ph = phase::agent;
  m->start_timer.expires_after(m->cfg.agent_start_timeout);
  m->start_timer.async_wait([wm = std::weak_ptr(m)](error_code ec) {
    auto m = wm.lock();
    if (ec || !m || m->ph != phase::agent) return;
    fail_start(m, (m->agent ? describe(*m->agent) : std::string("the agent")) + " not ready within " +
                      std::to_string(m->cfg.agent_start_timeout.count()) + " ms");
  });
  m->agent_pool.add_slot();  // start_agent, through the pool
}

void stop(const std::shared_ptr<master_state>& m, done_handler h) {
  if (m->ph == phase::stopped) return complete(m->io, std::move(h), error_code{});
  m->stop_waiters.push_back(std::move(h));
  if (m->ph == phase::stopping || m->ph == phase::failed) return;
  if (m->ph == phase::agent || m->ph == phase::apps) {
    fail_start(m, "stopped during start-up");
    return;
  }
  m->ph = phase::stopping;
  // No restart from now on; the agent itself is asked to stop once the app workers are gone (check_stopped).
  m->agent_pool.stop();
  fail_queues(m);
  m->apps->disconnect([wm = std::weak_ptr(m)](error_code) {
    if (auto m = wm.lock()) check_stopped(m);
  });
  check_stopped(m);
}

void agent_driver::start(std::size_t, int id) {
  if (auto s = m.lock()) start_agent(s, id);
}
// The pool's stop comes when the master's begins: check_stopped asks the agent once the app workers are gone, and
// the deadline counts from then.
bool agent_driver::stop(int) {
  if (auto s = m.lock()) check_stopped(s);
  return false;
}
void agent_driver::kill(int) {
  if (auto s = m.lock(); s && s->agent && !s->agent->exited) s->agent->agent_child.kill(SIGKILL);
}

}  // namespace detail

std::string ready_info::url() const {
  if (listening.empty()) return {};
  auto at = listening.front();
  std::string host = at.address().is_unspecified() ? "127.0.0.1" : at.address().to_string();
  if (at.address().is_v6() && !at.address().is_unspecified()) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(at.port()) + "/";
}

master::master(asio::io_context& io, settings s) : state_(std::make_shared<detail::master_state>(io, std::move(s))) {
  auto& m = *state_;
  if (current_role() != role::master) throw std::logic_error("clutch::app::master: this process is a role");
  m.agent_driver_.m = state_;
  m.workers = m.cfg.workers;
  if (m.workers == 0) m.workers = std::max(1u, std::thread::hardware_concurrency() - 1);
  m.slots = m.workers;
  m.agent_cmd = os::self_command();

  cluster::settings cs = m.cfg.cluster;
  cs.program = m.cfg.app_program;
  cs.args = m.cfg.app_args;
  cs.env = m.cfg.env.plus({{std::string(detail::role_variable), "app"}});
  cs.cwd = m.cfg.cwd;
  cs.silent = m.cfg.silent;
  cs.pipe_stderr = !m.cfg.silent;  // passed on by the master, which keeps the last lines (pass_on_stderr)
  cs.wait_ready = true;
  cs.kill_timeout = m.cfg.kill_timeout;
  cs.death_signal = detail::death_signal();
  // No restart while the start is under way: a worker that dies then is the start's failure (egg-cluster's
  // way), reported once. The configured policy takes over once every worker is ready.
  m.restart = cs.restart;
  cs.restart = cluster::restart_policy::never;
  m.apps = std::make_unique<cluster::primary>(io, std::move(cs));
  detail::watch_apps(state_);

  m.own = std::make_shared<detail::messenger_state>(io, role::master, static_cast<int>(::getpid()));
  m.own->route = [wm = std::weak_ptr(state_)](json::object env) {
    if (auto m = wm.lock()) detail::route(m, std::move(env));
  };
  m.facade.emplace(m.own);
  detail::install(m.own);

  // Forked by another process with a channel: send_to_parent goes there, and its messages come here (with "to",
  // they are routed on, as if sent from the parent).
  if (auto pc = parent_channel(io)) {
    m.parent = *pc;
    m.parent->on_message([wm = std::weak_ptr(state_)](const json::value& msg, handle) {
      auto m = wm.lock();
      const auto* o = msg.if_object();
      if (!m || !o || !o->contains("action")) return;
      json::object env{{"cmd", "CLUTCH_msg"},
                       {"to", o->contains("to") ? o->at("to") : json::value(m->own->pid)},
                       {"action", detail::string_field(*o, "action")},
                       {"data", o->contains("data") ? o->at("data") : nullptr},
                       {"from", static_cast<int>(::getppid())},
                       {"role", "parent"}};
      detail::route(m, std::move(env));
    });
  }
}

master::~master() {
  auto& m = *state_;
  m.agent_pool.abandon();  // no restart of the agent
  m.start_timer.cancel();
  if (m.agent && !m.agent->exited) m.agent->agent_child.kill(SIGKILL);
  for (auto& [pid, p] : m.procs) p->process.kill(SIGKILL);  // kill_tree: its group, only while it is ours
  m.own->route = nullptr;
}

int master::run(std::function<void(const ready_info&)> on_ready) {
  auto& io = state_->io;
  int code = 0;
  asio::signal_set signals(io, SIGTERM, SIGINT, SIGQUIT);
  auto finish = [&io, &signals](int) {
    signals.cancel();
    io.stop();
  };
  signals.async_wait([this, &finish](error_code ec, int) {
    if (ec) return;
    stop([&finish](error_code) { finish(0); });
  });
  start([&, this](error_code ec, const ready_info& info) {
    if (ec) {
      std::fprintf(stderr, "%sclutch::app: start-up failed: %s\n", state_->stderr_mid_line ? "\n" : "",
                   failure().c_str());
      code = 1;
      return finish(1);
    }
    if (on_ready) on_ready(info);
    else std::printf("clutch::app: ready at %s (agent %d, %zu app workers)\n", info.url().c_str(), info.agent_pid,
                     info.app_pids.size());
    std::fflush(stdout);
  });
  io.restart();
  io.run();
  return code;
}

std::string master::failure() const { return state_->why; }
messenger& master::messenger() noexcept { return *state_->facade; }
cluster::primary& master::app_workers() noexcept { return *state_->apps; }
int master::agent_pid() const noexcept { return state_->agent && state_->agent->ready ? state_->agent->pid : 0; }
master_stats master::stats() const noexcept {
  auto s = state_->stats;
  s.queued = detail::queued(*state_);
  return s;
}
const settings& master::config() const noexcept { return state_->cfg; }
void master::on_start(std::function<void(role, int)> h) { state_->on_start.add(std::move(h)); }
void master::on_exit(std::function<void(role, int, const exit_status&)> h) { state_->on_exit.add(std::move(h)); }

}  // namespace clutch::app
