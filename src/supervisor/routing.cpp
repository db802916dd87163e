// Routing new connections (cluster/reuseport_group.hpp): which workers' sockets may get them, and the drain
// of a worker about to stop.
#include <algorithm>

#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

// New connections go only to the members of workers that are ready and not asked to stop. During a reload, not
// to the worker being replaced nor to the one next in line either, while others can take them: a connection
// sent there would be cut if that worker dies at once on its stop signal, soon.
void resteer(const std::shared_ptr<engine_state>& e) {
  std::vector<const worker*> serving, replaced_now, replaced_next;
  const auto& pool = e->pool;
  const auto next = pool.next_in_reload();
  for (std::size_t i = 0; i < pool.size(); ++i) {
    const auto w = e->worker_of(pool.current(i));
    if (pool.removed(i) || !w || !w->ready || w->exited || w->asked_to_stop) continue;
    serving.push_back(w.get());
    if (pool.reloading() && pool.incoming(i)) replaced_now.push_back(w.get());
    if (next == i) replaced_next.push_back(w.get());
  }
  auto without = [](std::vector<const worker*> from, const std::vector<const worker*>& drop) {
    std::erase_if(from, [&](const worker* w) { return std::find(drop.begin(), drop.end(), w) != drop.end(); });
    return from;
  };
  auto chosen = without(without(serving, replaced_now), replaced_next);
  if (chosen.empty()) chosen = without(serving, replaced_now);
  if (chosen.empty()) chosen = serving;
  for (std::size_t g = 0; g < e->groups.size(); ++g) {
    std::vector<int> fds;
    for (const auto* w : chosen)
      if (g < w->socks.size() && w->socks[g] >= 0 && !w->closed.contains(g)) fds.push_back(w->socks[g]);
    if (auto ec = e->groups[g].steer(std::move(fds))) e->say("clutch: cannot steer connections: " + ec.message());
  }
}

// A worker that new connections no longer reach (resteer) gets its stop signal once it has accepted what was
// already waiting in its own sockets, so that even one that dies at once loses none of those. Bounded: at most
// kill_timeout (and 2 s) of waiting.
void drain_then_stop(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (e->groups.empty() || w->socks.empty()) return stop_worker(e, w);
  resteer(e);
  const auto deadline = clock::now() + std::min<clock::duration>(e->cfg.kill_timeout, std::chrono::seconds(2));
  w->drain_timer.emplace(e->io);
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [we = std::weak_ptr(e), ww = std::weak_ptr(w), deadline, poll] {
    auto w = ww.lock();
    if (!w || !w->drain_timer) {
      *poll = nullptr;  // the closure held itself: let it go
      return;
    }
    // The first look comes after a connection whose handshake began before the change has had time to land.
    w->drain_timer->expires_after(std::chrono::milliseconds(2));
    w->drain_timer->async_wait([we, ww, deadline, poll](error_code ec) {
      auto e = we.lock();
      auto w = ww.lock();
      if (ec || !e || !w || w->exited || w->asked_to_stop) {
        *poll = nullptr;
        return;
      }
      std::size_t waiting = 0;
      for (std::size_t g = 0; g < w->socks.size() && g < e->groups.size(); ++g)
        if (w->socks[g] >= 0) waiting += e->groups[g].queued(w->socks[g]);
      if (waiting == 0 || clock::now() >= deadline) {
        *poll = nullptr;
        return stop_worker(e, w);
      }
      (*poll)();
    });
  };
  (*poll)();
}

// Sockets (one per steered group, in group order) leave their groups.
void drop_sockets(engine_state& e, const std::vector<int>& socks) {
  for (std::size_t g = 0; g < socks.size() && g < e.groups.size(); ++g)
    if (socks[g] >= 0) e.groups[g].remove(socks[g]);
}

// A worker that has exited: its sockets leave their groups unless its slot's next worker is to take them over.
void release_sockets(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (w->agent || w->socks.empty()) return;
  auto& s = e->slot_of(w->slot);
  const bool slot_keeps = w->socks == s.socks && !e->pool.removed(w->slot) && !e->pool.retired(w->slot);
  if (slot_keeps) return;
  drop_sockets(*e, w->socks);
  if (w->socks == s.socks) s.socks.clear();
}

}  // namespace clutch::supervisor::detail
