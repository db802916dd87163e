// The master: start order, routing with queues for roles that are not ready, the agent's pool, the direct
// agent↔worker channels, and the ordered stop.
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

#include "app/messenger_state.hpp"
#include "app/protocol.hpp"
#include "cluster/slot_pool.hpp"
#include "common/completion.hpp"
#include "common/exit_text.hpp"
#include "common/lines.hpp"
#include "os/fd.hpp"
#include "os/self.hpp"

namespace clutch::app {

namespace json = boost::json;

namespace detail {

using ::clutch::detail::complete;
using ::clutch::detail::last_lines;
using ::clutch::detail::line_splitter;
using queue = std::deque<json::object>;

// What a role writes to stderr comes through the master (unless settings::silent gives the pipes to the user):
// it is passed on to the master's own stderr as it comes, and while a start is under way (or failing) its last
// lines are kept, so that a role that dies then is reported with them instead of leaving the user to find them
// among everyone's output.
struct err_tail {
  line_splitter split;
  last_lines kept{10, 512};
  std::string text() const {
    std::string out;
    for (const auto& l : kept.lines()) out += "\n  | " + l;
    return out;
  }
};

// One agent or app worker process, from the master's side.
struct proc {
  role r = role::app;
  int pid = 0;
  int id = 0;  // the cluster's worker id
  std::size_t slot = 0;
  std::shared_ptr<link> l;
  bool ready = false;
  bool exited = false;
  bool asked_to_stop = false;
  queue held;                // messages for this pid, until it is ready
  forked_child agent_child;  // the agent's process
  child process;             // its process, whatever its role: what sweep_group ends its group through
  std::shared_ptr<err_tail> tail;  // when its stderr comes through us
};

// How long a role's stderr is still read after it exits, while something it left behind holds the pipe.
constexpr std::chrono::milliseconds stderr_grace{1000};

enum class phase { idle, agent, apps, running, stopping, stopped, failed };

struct master_state;

// The agent is a pool of one slot (cluster/slot_pool.hpp): its restarts back off from agent_restart_delay and
// are given up after the cluster's max_restarts in a row. The pool asks; the master starts and stops the process.
struct agent_driver final : cluster::detail::slot_driver {
  std::weak_ptr<master_state> m;
  void start(std::size_t slot, int id) override;
  void stop(int id) override;
  void kill(int id) override;
};

struct master_state : std::enable_shared_from_this<master_state> {
  master_state(asio::io_context& io, settings s)
      : io(io),
        cfg(std::move(s)),
        start_timer(io),
        agent_timer(io),
        rng(static_cast<unsigned>(::getpid())),
        agent_pool(io, agent_driver_,
                   cluster::detail::pool_settings{
                       .restart = cluster::restart_policy::always,
                       .backoff = {.first = cfg.agent_restart_delay,
                                   .factor = cfg.cluster.restart_backoff,
                                   .max = std::max(cfg.cluster.max_restart_delay, cfg.agent_restart_delay),
                                   .stable_uptime = cfg.cluster.stable_uptime,
                                   .limit = cfg.cluster.max_restarts,
                                   .first_at_once = false},
                       .ready_timeout = std::chrono::milliseconds(0),
                       // 0: the master keeps the deadline, which starts once the app workers are gone
                       .kill_timeout = std::chrono::milliseconds(0)}) {}

  asio::io_context& io;
  settings cfg;
  unsigned workers = 1;
  os::command agent_cmd;
  std::unique_ptr<cluster::primary> apps;
  std::shared_ptr<messenger_state> own;
  std::optional<clutch::app::messenger> facade;  // master::messenger()
  std::optional<channel> parent;

  std::shared_ptr<proc> agent;
  bool agent_given_up = false;  // crashed max_restarts times in a row: messages for it fail at once
  std::map<int, std::shared_ptr<proc>> procs;  // by pid, until they exit
  queue agent_queue, random_queue;
  std::map<std::size_t, queue> slot_queues;
  cluster::restart_policy restart = cluster::restart_policy::always;  // the apps' own, once started
  std::size_t slots = 0;              // app worker slots: settings::workers, more if app_workers().fork() adds some
  std::set<std::size_t> given_up;     // slots the cluster gave up (crash loop): nobody will read their messages
  struct tracker {
    int remaining = 0;
    error_code ec;
  };
  std::map<std::pair<int, std::int64_t>, tracker> trackers;  // (sender pid, id) of tracked messages in flight
  master_stats stats;

  phase ph = phase::idle;
  std::unique_ptr<start_handler> starting;
  std::string why;
  asio::steady_timer start_timer, agent_timer;
  std::vector<done_handler> stop_waiters;
  int sweeping = 0;  // process groups of exited roles still being emptied
  int reading = 0;   // roles' stderr pipes not yet at their end: a failed start waits for their last lines
  bool stderr_mid_line = false;  // what was last passed on to our stderr did not end a line
  std::shared_ptr<err_tail> failed_tail;  // the last lines of the role whose death failed the start
  std::minstd_rand rng;
  std::vector<asio::ip::tcp::endpoint> listening;

  ::clutch::detail::handler_list<role, int> on_start;
  ::clutch::detail::handler_list<role, int, const exit_status&> on_exit;

  agent_driver agent_driver_;
  cluster::detail::slot_pool agent_pool;  // after its driver: it goes first
};

namespace {

std::string describe(const proc& p) {
  if (p.r == role::agent) return "agent (pid " + std::to_string(p.pid) + ")";
  return "app worker " + std::to_string(p.id) + " (pid " + std::to_string(p.pid) + ")";
}

using ::clutch::detail::describe;

std::size_t queued(const master_state& m) {
  std::size_t n = m.agent_queue.size() + m.random_queue.size();
  for (auto& [s, q] : m.slot_queues) n += q.size();
  for (auto& [pid, p] : m.procs) n += p->held.size();
  return n;
}

// ---- tracking: a tracked message completes its sender's token once every copy is settled ----

void notify_sender(const std::shared_ptr<master_state>& m, int origin, std::int64_t id, error_code ec) {
  if (origin == m->own->pid) return settle(m->own, id, ec);
  auto it = m->procs.find(origin);
  if (it == m->procs.end() || !it->second->l) return;
  json::object done{{"cmd", "CLUTCH_done"}, {"id", id}};
  if (ec) done["error"] = error_name(ec);
  it->second->l->chan().send(done);
}

void copy_settled(const std::shared_ptr<master_state>& m, int origin, std::int64_t id, bool track, error_code ec) {
  if (!track) return;
  auto it = m->trackers.find({origin, id});
  if (it == m->trackers.end()) return;
  if (ec && !it->second.ec) it->second.ec = ec;
  if (--it->second.remaining > 0) return;
  const error_code result = it->second.ec;
  m->trackers.erase(it);
  notify_sender(m, origin, id, result);
}
void copy_settled(const std::shared_ptr<master_state>& m, const json::object& env, error_code ec) {
  copy_settled(m, static_cast<int>(int_field(env, "from")), int_field(env, "id"), env.contains("track"), ec);
}

void route(const std::shared_ptr<master_state>& m, json::object env);

// A copy that cannot be delivered: counted, its tracker told, and a request answered with the error.
void fail_copy(const std::shared_ptr<master_state>& m, const json::object& env, error_code ec) {
  ++m->stats.undelivered;
  if (env.contains("reply_to")) return;  // a reply nobody can take: its requester is gone
  if (env.contains("req")) {
    json::object reply{{"cmd", "CLUTCH_msg"}, {"to", int_field(env, "from")}, {"reply_to", int_field(env, "id")},
                       {"from", 0},           {"role", "master"},         {"error", error_name(ec)},
                       {"message", ec.message()}};
    return route(m, std::move(reply));
  }
  copy_settled(m, env, ec);
}

void enqueue(const std::shared_ptr<master_state>& m, queue& q, json::object env) {
  if (m->ph == phase::stopping || m->ph == phase::stopped || m->ph == phase::failed)
    return fail_copy(m, env, errc::undeliverable);
  if (q.size() >= m->cfg.queue_limit) return fail_copy(m, env, errc::queue_full);
  q.push_back(std::move(env));
}

bool deliverable(const proc& p) { return p.ready && !p.exited && p.l && p.l->up(); }

void give(const std::shared_ptr<master_state>& m, proc& p, json::object env) {
  if (deliverable(p)) return p.l->send(frame_of(env));
  enqueue(m, p.held, std::move(env));
}

std::shared_ptr<proc> ready_in_slot(const master_state& m, std::size_t slot) {
  for (auto& [pid, p] : m.procs)
    if (p->r == role::app && p->slot == slot && deliverable(*p)) return p;
  return nullptr;
}

void to_agent(const std::shared_ptr<master_state>& m, json::object env) {
  if (m->agent && deliverable(*m->agent)) return m->agent->l->send(frame_of(env));
  if (m->agent_given_up) return fail_copy(m, env, errc::undeliverable);
  enqueue(m, m->agent_queue, std::move(env));
}

void to_slot(const std::shared_ptr<master_state>& m, std::size_t slot, json::object env) {
  if (auto p = ready_in_slot(*m, slot)) return p->l->send(frame_of(env));
  if (m->given_up.contains(slot)) return fail_copy(m, env, errc::undeliverable);
  enqueue(m, m->slot_queues[slot], std::move(env));
}

void to_random(const std::shared_ptr<master_state>& m, json::object env) {
  std::vector<std::shared_ptr<proc>> ready;
  for (auto& [pid, p] : m->procs)
    if (p->r == role::app && deliverable(*p)) ready.push_back(p);
  if (ready.empty()) return enqueue(m, m->random_queue, std::move(env));
  std::uniform_int_distribution<std::size_t> pick(0, ready.size() - 1);
  ready[pick(m->rng)]->l->send(frame_of(env));
}

void to_parent(const std::shared_ptr<master_state>& m, const json::object& env) {
  if (!m->parent || !m->parent->connected()) return fail_copy(m, env, errc::undeliverable);
  // What a Node parent's process.on('message') gets: no CLUTCH_ command, so it is not internal there.
  json::object out{{"action", string_field(env, "action")}, {"data", env.contains("data") ? env.at("data") : nullptr},
                   {"from", int_field(env, "from")}, {"role", string_field(env, "role")}};
  m->parent->send(out);
  copy_settled(m, env, {});
}

void route(const std::shared_ptr<master_state>& m, json::object env) {
  destination to;
  if (!destination_of(env, to)) return fail_copy(m, env, errc::undeliverable);
  const int origin = static_cast<int>(int_field(env, "from"));
  const std::int64_t id = int_field(env, "id");

  // Who gets a copy.
  const bool to_apps = to.what == destination::kind::app || to.what == destination::kind::all;
  const bool to_the_agent = to.what == destination::kind::agent || to.what == destination::kind::all;
  int copies = (to_apps ? static_cast<int>(m->slots) : 0) + (to_the_agent ? 1 : 0);
  if (!to_apps && !to_the_agent) copies = 1;

  if (env.contains("track")) {
    if (copies == 0) return notify_sender(m, origin, id, {});
    m->trackers[{origin, id}] = {copies, {}};
  }
  if (env.contains("req") && to_apps) {
    json::object expect{{"cmd", "CLUTCH_expect"}, {"id", id}, {"count", copies}};
    if (origin == m->own->pid) detail::expect(m->own, id, copies);
    else if (auto it = m->procs.find(origin); it != m->procs.end() && it->second->l)
      it->second->l->chan().send(expect);
  }

  switch (to.what) {
    case destination::kind::agent: return to_agent(m, std::move(env));
    case destination::kind::random: return to_random(m, std::move(env));
    case destination::kind::parent: return to_parent(m, env);
    case destination::kind::app:
    case destination::kind::all:
      if (to_the_agent) to_agent(m, env);
      for (std::size_t s = 0; s < m->slots; ++s) to_slot(m, s, env);
      return;
    case destination::kind::pid:
      if (to.pid == m->own->pid) {
        deliver(m->own, env);
        return copy_settled(m, env, {});
      }
      if (auto it = m->procs.find(to.pid); it != m->procs.end()) return give(m, *it->second, std::move(env));
      return fail_copy(m, env, errc::no_such_process);
  }
}

// A role died with messages it never acknowledged: those for its role go to the role's next process.
void requeue(const std::shared_ptr<master_state>& m, role r, std::size_t slot, std::deque<frame> lost) {
  for (auto& f : lost) {
    json::object env = object_of(f);
    destination to;
    destination_of(env, to);
    switch (to.what) {
      case destination::kind::agent: to_agent(m, std::move(env)); break;
      case destination::kind::random: to_random(m, std::move(env)); break;
      case destination::kind::app:
      case destination::kind::all:
        if (r == role::agent) to_agent(m, std::move(env));
        else to_slot(m, slot, std::move(env));
        break;
      default: fail_copy(m, env, errc::no_such_process); break;
    }
  }
}

void flush(queue& q, proc& p) {
  for (auto pending = std::exchange(q, {}); auto& env : pending) p.l->send(frame_of(env));
}

// ---- direct channels ----

void pair_up(const std::shared_ptr<master_state>& m, proc& worker) {
  if (!m->cfg.direct || !m->agent || !deliverable(*m->agent) || !deliverable(worker)) return;
  os::fd_pair fds;
  if (os::make_socketpair(fds) != 0) return;  // they keep talking through the master
  m->agent->l->chan().send(json::object{{"cmd", "CLUTCH_peer"}, {"pid", worker.pid}, {"role", "app"},
                                        {"id", worker.id}},
                           handle(fds.first.release()));
  worker.l->chan().send(json::object{{"cmd", "CLUTCH_peer"}, {"pid", m->agent->pid}, {"role", "agent"}},
                        handle(fds.second.release()));
}

void tell_agent(const std::shared_ptr<master_state>& m, proc& worker) {
  if (m->agent && m->agent->ready)
    worker.l->chan().send(json::object{{"cmd", "CLUTCH_agent"}, {"pid", m->agent->pid}});
}

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

void fail_queues(const std::shared_ptr<master_state>& m) {
  auto fail_all = [&](queue& q) {
    for (auto& env : std::exchange(q, {})) fail_copy(m, env, errc::undeliverable);
  };
  fail_all(m->agent_queue);
  fail_all(m->random_queue);
  for (auto& [s, q] : m->slot_queues) fail_all(q);
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
      m->agent_timer.expires_after(m->cfg.kill_timeout);
      m->agent_timer.async_wait([wp = std::weak_ptr(m->agent)](error_code ec) {
        auto p = wp.lock();
        if (!ec && p && !p->exited) p->agent_child.kill(SIGKILL);
      });
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
// The pool's stop comes when the master's begins: check_stopped asks the agent once the app workers are gone.
void agent_driver::stop(int) {
  if (auto s = m.lock()) check_stopped(s);
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
  m.agent_timer.cancel();
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
