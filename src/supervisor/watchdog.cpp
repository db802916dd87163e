// The watchdog (run_settings::watchdog, systemd's WatchdogSec): a worker that does not send WATCHDOG=1 in time
// gets SIGABRT, then SIGKILL at kill_timeout, and is replaced.
#include <signal.h>

#include "process/held_child.hpp"
#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

// (Re)arms a worker's watchdog: it must say WATCHDOG=1 again before this runs out.
void feed_watchdog(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (e->cfg.watchdog.count() == 0 || w->exited || w->asked_to_stop) return;
  if (!w->watchdog_timer) w->watchdog_timer.emplace(e->io);
  w->watchdog_timer->expires_after(e->cfg.watchdog);
  w->watchdog_timer->async_wait([we = std::weak_ptr(e), ww = std::weak_ptr(w)](error_code ec) {
    auto e = we.lock();
    auto w = ww.lock();
    if (ec || !e || !w || w->exited || w->asked_to_stop) return;
    e->say("clutch: " + who(*w) + " missed its watchdog (" + std::to_string(e->cfg.watchdog.count()) +
           " ms): SIGABRT");
    // SIGABRT first, so that it can leave a core dump or a stack trace; then the group goes.
    ::clutch::detail::signal_process(w->proc, SIGABRT);
    kill_at_deadline(*e, *w);
  });
}

}  // namespace clutch::supervisor::detail
