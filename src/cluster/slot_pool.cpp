#include "cluster/slot_pool.hpp"

#include <algorithm>
#include <deque>

namespace clutch::cluster::detail {

using clock = std::chrono::steady_clock;

namespace {

struct worker_info {
  std::size_t slot = 0;
  clock::time_point started{};
  bool ready = false;
  bool leaving = false;     // its exit retires the slot
  bool stop_sent = false;   // driver.stop() was called
  std::optional<asio::steady_timer> kill_timer;
};

struct slot_info {
  int current = 0, incoming = 0;
  ::clutch::detail::backoff restarts;
  std::optional<asio::steady_timer> restart_timer;
  bool retired = false;
  bool errored = false;
  bool removed = false;  // scaled away (retired too)
  unsigned restarted = 0;
  std::chrono::milliseconds delay{0};  // the back-off chosen at its last exit
};

// A rolling reload under way: the slots still to replace, the replacement loading, the old worker stopping.
struct reload_run {
  std::deque<std::size_t> todo;
  int fresh = 0, old = 0;
  std::optional<asio::steady_timer> timer;
};

}  // namespace

struct slot_pool::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& io, slot_driver& d, pool_settings s) : io(io), driver(d), cfg(std::move(s)) {}

  asio::io_context& io;
  slot_driver& driver;
  pool_settings cfg;
  std::vector<slot_info> slots;
  std::map<int, worker_info> workers;  // started and not yet exited
  int next_id = 1;
  bool stopping = false;
  bool abandoned = false;
  std::optional<reload_run> reload;

  // A slot a reload replaces: in use, with a worker to replace.
  bool replaceable(std::size_t i) const { return !slots[i].retired && !slots[i].removed && slots[i].current; }

  worker_info* find(int id) {
    auto it = workers.find(id);
    return it == workers.end() ? nullptr : &it->second;
  }

  // A new worker for the slot, as its current one or as a reload's replacement; the slot knows it before the
  // driver is asked, so that the driver can ask the pool what it is starting.
  int start(std::size_t slot, bool incoming) {
    const int id = next_id++;
    auto& w = workers[id];
    w.slot = slot;
    w.started = clock::now();
    (incoming ? slots[slot].incoming : slots[slot].current) = id;
    driver.start(slot, id);
    return id;
  }

  void stop_worker(int id) {
    auto* w = find(id);
    if (!w || w->stop_sent) return;
    w->leaving = w->stop_sent = true;
    if (driver.stop(id)) arm_deadline(id);
  }

  // The kill deadline, once per worker: kill() at kill_timeout unless it has exited by then.
  void arm_deadline(int id) {
    auto* w = find(id);
    if (!w || w->kill_timer) return;
    w->kill_timer.emplace(io, cfg.kill_timeout);
    w->kill_timer->async_wait([wi = weak_from_this(), id](error_code ec) {
      auto i = wi.lock();
      if (!ec && i && i->find(id)) i->driver.kill(id);
    });
  }

  void kill_worker(int id) {
    auto* w = find(id);
    if (!w) return;
    w->leaving = true;
    driver.kill(id);
  }

  void retire(std::size_t slot, bool errored) {
    auto& s = slots[slot];
    s.retired = true;
    s.errored = s.errored || errored;
    s.current = 0;
    if (s.restart_timer) s.restart_timer->cancel();
    driver.retired(slot);
  }

  void finish_reload(error_code ec) {
    if (!reload) return;
    if (reload->timer) reload->timer->cancel();
    reload.reset();
    driver.reload_done(ec);
  }

  void reload_fail(error_code ec) {
    if (const int fresh = std::exchange(reload->fresh, 0)) {
      // The old worker stays in the slot; the new one goes, and is not restarted.
      if (auto* w = find(fresh)) {
        auto& s = slots[w->slot];
        if (s.incoming == fresh) s.incoming = 0;
        kill_worker(fresh);
      }
    }
    finish_reload(ec);
  }

  void reload_next() {
    reload->old = 0;
    while (!reload->todo.empty()) {
      const std::size_t i = reload->todo.front();
      reload->todo.pop_front();
      if (!replaceable(i)) continue;
      const int fresh = reload->fresh = next_id;  // known before the driver's start() runs
      start(i, true);
      // start() may not come back to a pool that still reloads: a driver must not re-enter, but be sure.
      if (!reload) return;
      if (cfg.ready_timeout.count() > 0) {
        reload->timer.emplace(io, cfg.ready_timeout);
        reload->timer->async_wait([wi = weak_from_this(), fresh](error_code ec) {
          auto i = wi.lock();
          if (ec || !i || !i->reload || i->reload->fresh != fresh) return;
          i->reload_fail(make_error_code(errc::timed_out));
        });
      }
      return;
    }
    finish_reload({});
  }

  void reload_ready(int fresh) {
    if (reload->timer) reload->timer->cancel();
    reload->fresh = 0;
    auto& s = slots[workers.at(fresh).slot];
    const int old = std::exchange(s.current, fresh);
    s.incoming = 0;
    if (old && find(old)) {
      reload->old = old;
      stop_worker(old);  // its exit moves the reload on
    } else {
      reload_next();
    }
  }

  void restart_later(std::size_t slot, std::chrono::milliseconds delay) {
    auto& s = slots[slot];
    s.delay = delay;
    if (delay.count() == 0) {
      ++s.restarted;
      start(slot, false);
      return;
    }
    s.restart_timer.emplace(io, delay);
    s.restart_timer->async_wait([wi = weak_from_this(), slot](error_code ec) {
      auto i = wi.lock();
      if (ec || !i || i->stopping || i->slots[slot].retired) return;
      ++i->slots[slot].restarted;
      i->start(slot, false);
    });
  }

  exit_outcome after_exit(int id, const worker_info& w, const exit_status& status) {
    auto& s = slots[w.slot];
    if (s.incoming == id) {  // a reload's new worker, gone before it was ready
      s.incoming = 0;
      if (reload && reload->fresh == id) {
        // A slot removed meanwhile (its replacement was asked to stop) is skipped; anything else fails the reload.
        if (s.removed) {
          reload->fresh = 0;
          if (reload->timer) reload->timer->cancel();
          reload_next();
        } else {
          reload_fail(make_error_code(errc::worker_failed));
        }
      }
      return exit_outcome::none;
    }
    if (s.current != id) {  // an old worker that a reload replaced, or a removed slot's
      if (reload && reload->old == id) reload_next();
      return exit_outcome::none;
    }
    s.current = 0;
    const bool wanted =
        cfg.restart == restart_policy::always || (cfg.restart == restart_policy::on_failure && !status.ok());
    if (stopping || w.leaving || s.retired || !wanted) {
      retire(w.slot, false);
      return exit_outcome::retired;
    }
    const auto delay = s.restarts.next(cfg.backoff, clock::now() - w.started);
    if (!delay) {
      retire(w.slot, true);
      return exit_outcome::given_up;
    }
    restart_later(w.slot, *delay);
    return exit_outcome::restarting;
  }

  // A stop ends once every worker has exited; then the pool takes new slots and reloads again (as Node's
  // cluster forks again after disconnect()).
  void check_stopped() {
    if (!stopping || abandoned || !workers.empty()) return;
    stopping = false;
    driver.stopped();
  }

  void end_restarts() {
    for (auto& s : slots)
      if (s.restart_timer) s.restart_timer->cancel();
  }

  // Slots from `from` on are removed: their workers are asked to stop, and they are not restarted.
  void remove_from(std::size_t from) {
    for (std::size_t i = from; i < slots.size(); ++i) {
      auto& s = slots[i];
      if (s.removed) continue;
      s.removed = true;
      const bool had_worker = s.current != 0;
      if (s.restart_timer) s.restart_timer->cancel();
      if (s.incoming) stop_worker(s.incoming);
      if (s.current) stop_worker(s.current);
      if (!had_worker) retire(i, false);
    }
  }
};

slot_pool::slot_pool(asio::io_context& io, slot_driver& driver, pool_settings s)
    : impl_(std::make_shared<impl>(io, driver, std::move(s))) {}

// The timers go with impl (it has no other owner), and their handlers hold it weakly: nothing runs after this.
slot_pool::~slot_pool() = default;

pool_settings& slot_pool::settings() noexcept { return impl_->cfg; }

std::size_t slot_pool::add_slot() {
  auto& i = *impl_;
  i.slots.emplace_back();
  const std::size_t slot = i.slots.size() - 1;
  i.start(slot, false);
  return slot;
}

void slot_pool::scale(std::size_t n) {
  auto& i = *impl_;
  if (n == 0 || i.stopping) return;
  std::size_t have = wanted();
  if (n < have) {
    // Slots are kept in order: the first n that are not removed stay.
    std::size_t kept = 0, at = 0;
    for (; at < i.slots.size() && kept < n; ++at)
      if (!i.slots[at].removed) ++kept;
    i.remove_from(at);
    return;
  }
  // Removed slots come back first (a worker of theirs still stopping is no longer theirs), then new ones.
  for (std::size_t at = 0; at < i.slots.size() && have < n; ++at) {
    auto& s = i.slots[at];
    if (!s.removed) continue;
    s = slot_info{};
    ++have;
    i.start(at, false);
  }
  while (have++ < n) add_slot();
}

void slot_pool::ready(int id) {
  auto& i = *impl_;
  auto* w = i.find(id);
  if (!w || std::exchange(w->ready, true)) return;
  if (i.reload && i.reload->fresh == id) i.reload_ready(id);
}

exit_outcome slot_pool::exited(int id, const exit_status& status) {
  auto& i = *impl_;
  auto it = i.workers.find(id);
  if (it == i.workers.end()) return exit_outcome::none;
  if (it->second.kill_timer) it->second.kill_timer->cancel();
  const worker_info w = std::move(it->second);
  i.workers.erase(it);
  const auto outcome = i.after_exit(id, w, status);
  i.check_stopped();
  return outcome;
}

void slot_pool::stop_worker(int id) { impl_->stop_worker(id); }

void slot_pool::kill_at_deadline(int id) { impl_->arm_deadline(id); }

void slot_pool::not_ready(int id) {
  auto& i = *impl_;
  if (i.reload && i.reload->fresh == id) i.reload_fail(make_error_code(errc::timed_out));
}

void slot_pool::let_go(int id) {
  if (auto* w = impl_->find(id)) w->leaving = true;
}

bool slot_pool::reload() {
  std::vector<std::size_t> all(impl_->slots.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  return reload(all);
}

bool slot_pool::reload(const std::vector<std::size_t>& slots) {
  auto& i = *impl_;
  if (i.reload || i.stopping) return false;
  i.reload.emplace();
  for (const auto s : slots)
    if (s < i.slots.size() && i.replaceable(s)) i.reload->todo.push_back(s);
  i.reload_next();
  return true;
}

void slot_pool::stop() {
  auto& i = *impl_;
  if (!std::exchange(i.stopping, true)) {
    i.finish_reload(make_error_code(asio::error::operation_aborted));
    i.end_restarts();
    std::vector<int> ids;
    for (auto& [id, w] : i.workers) ids.push_back(id);
    for (const int id : ids) i.stop_worker(id);
  }
  i.check_stopped();
}

void slot_pool::abandon() {
  auto& i = *impl_;
  i.stopping = i.abandoned = true;
  i.end_restarts();
  i.finish_reload(make_error_code(asio::error::operation_aborted));
}

std::size_t slot_pool::size() const noexcept { return impl_->slots.size(); }

std::size_t slot_pool::wanted() const noexcept {
  return static_cast<std::size_t>(
      std::count_if(impl_->slots.begin(), impl_->slots.end(), [](const slot_info& s) { return !s.removed; }));
}

slot_state slot_pool::state(std::size_t slot) const {
  const auto& i = *impl_;
  const auto& s = i.slots.at(slot);
  if (s.errored) return slot_state::errored;
  if (s.current) {
    const auto& w = i.workers.at(s.current);
    if (w.leaving) return slot_state::stopping;
    return w.ready ? slot_state::ready : slot_state::starting;
  }
  if (s.retired) return slot_state::exited;
  return slot_state::starting;  // a restart waits for its back-off
}

bool slot_pool::removed(std::size_t slot) const { return impl_->slots.at(slot).removed; }
bool slot_pool::retired(std::size_t slot) const { return impl_->slots.at(slot).retired; }

std::optional<std::size_t> slot_pool::next_in_reload() const {
  const auto& i = *impl_;
  if (!i.reload) return std::nullopt;
  for (const auto s : i.reload->todo)
    if (i.replaceable(s)) return s;
  return std::nullopt;
}
int slot_pool::current(std::size_t slot) const { return impl_->slots.at(slot).current; }
int slot_pool::incoming(std::size_t slot) const { return impl_->slots.at(slot).incoming; }
unsigned slot_pool::restarts(std::size_t slot) const { return impl_->slots.at(slot).restarted; }
std::chrono::milliseconds slot_pool::restart_delay(std::size_t slot) const { return impl_->slots.at(slot).delay; }

bool slot_pool::reloading() const noexcept { return impl_->reload.has_value(); }
bool slot_pool::stopping() const noexcept { return impl_->stopping; }

bool slot_pool::all_ready() const noexcept {
  const auto& i = *impl_;
  return std::all_of(i.slots.begin(), i.slots.end(), [&](const slot_info& s) {
    if (s.removed || s.retired) return true;
    auto it = i.workers.find(s.current);
    return it != i.workers.end() && it->second.ready;
  });
}

}  // namespace clutch::cluster::detail
