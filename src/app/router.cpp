// The master's router: where each message goes, what waits for a role that is not ready, and what happens to a
// message whose receiver died (master_state.hpp).
#include <boost/json/object.hpp>

#include "app/master_state.hpp"
#include "app/protocol.hpp"
#include "os/fd.hpp"

namespace clutch::app::detail {

namespace json = boost::json;

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


void fail_queues(const std::shared_ptr<master_state>& m) {
  auto fail_all = [&](queue& q) {
    for (auto& env : std::exchange(q, {})) fail_copy(m, env, errc::undeliverable);
  };
  fail_all(m->agent_queue);
  fail_all(m->random_queue);
  for (auto& [s, q] : m->slot_queues) fail_all(q);
}

}  // namespace clutch::app::detail
