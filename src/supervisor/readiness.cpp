// Readiness: when a worker counts as ready (run_settings::ready: none, notify, listen, message), within
// ready_timeout; and what it says on NOTIFY_SOCKET (READY=1, WATCHDOG=1, STATUS=). A Node worker's `listening` and
// 'ready' come through node_cluster.cpp.
#include <unistd.h>

#include <boost/asio/post.hpp>

#include "supervisor/accepting.hpp"
#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

void mark_ready(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (w->exited || std::exchange(w->ready, true)) return;
  if (w->ready_timer) w->ready_timer->cancel();
  if (e->cfg.ready != ready_mode::none) e->say("clutch: " + who(*w) + " ready");
  if (w->agent) {
    if (!std::exchange(e->workers_started, true) && !e->stopping) start_workers(e);
    return;
  }
  // A reload's replacement that is ready takes its slot here: the pool then asks for the old worker's stop (the
  // drain first: new connections are the replacement's from now on), or starts the next slot's replacement.
  e->pool.ready(w->id);
  if (e->pool.current(w->slot) == w->id) e->slot_of(w->slot).socks = w->socks;  // a restart takes them over
  if (e->pool.all_ready() && !std::exchange(e->was_ready, true) && e->ready) e->ready();
  resteer(e);
}

// --ready listen: looks every 10 ms until the worker waits for connections on one of its sockets.
void probe_accepting(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (!w->probe_timer) w->probe_timer.emplace(e->io);
  w->probe_timer->expires_after(std::chrono::milliseconds(10));
  w->probe_timer->async_wait([we = std::weak_ptr(e), ww = std::weak_ptr(w)](error_code ec) {
    auto e = we.lock();
    auto w = ww.lock();
    if (ec || !e || !w || w->exited || w->ready) return;
    if (accepting(w->pid, w->inodes)) return mark_ready(e, w);
    probe_accepting(e, w);
  });
}

std::shared_ptr<worker> find_sender(const engine_state& e, pid_t from) {
  if (auto it = e.live.find(from); it != e.live.end()) return it->second;
  // A process of the worker's group (a wrapper's child, a forked server) speaks for it, as NotifyAccess=all.
  if (auto it = e.live.find(::getpgid(from)); it != e.live.end()) return it->second;
  return nullptr;
}

// After a launch: ready at once (none; the agent under listen), or once it says so or accepts, within ready_timeout.
void watch_readiness(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  // The agent has no socket to watch and no channel: ready at once but under notify.
  if (e->cfg.ready == ready_mode::none || (e->cfg.ready != ready_mode::notify && w->agent)) {
    asio::post(e->io, [e, w] { mark_ready(e, w); });
    return;
  }
  if (e->cfg.ready == ready_mode::listen) probe_accepting(e, w);
  w->ready_timer.emplace(e->io, e->cfg.ready_timeout);
  w->ready_timer->async_wait([we = std::weak_ptr(e), ww = std::weak_ptr(w)](error_code ec) {
    auto e = we.lock();
    auto w = ww.lock();
    if (ec || !e || !w || w->ready || w->exited) return;
    e->say("clutch: " + who(*w) + " not ready within " + std::to_string(e->cfg.ready_timeout.count()) + " ms");
    if (!w->agent && e->pool.incoming(w->slot) == w->id) e->pool.not_ready(w->id);  // the reload fails
    if (!w->exited) w->proc.kill(SIGKILL);
  });
}

void on_notify(const std::shared_ptr<engine_state>& e, pid_t from, const notify_message& m) {
  auto w = find_sender(*e, from);
  if (!w) return;
  if (m.status) e->say("clutch: " + who(*w) + " status: " + *m.status);
  if (m.watchdog) feed_watchdog(e, w);
  if (m.ready) mark_ready(e, w);
}

}  // namespace clutch::supervisor::detail
