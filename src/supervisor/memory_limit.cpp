// The memory limit (run_settings::max_memory): a ready worker past it is replaced as in a reload of its slot.
#include <unistd.h>

#include "os/proc_stat.hpp"
#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

// Resident bytes of one process, 0 if it cannot be read.
namespace {

std::uint64_t resident_bytes(int pid) {
  const auto st = os::read_proc_stat(pid);
  return st ? st->rss_pages * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

}  // namespace

void check_memory(const std::shared_ptr<engine_state>& e) {
  e->memory_timer->expires_after(e->cfg.memory_check);
  e->memory_timer->async_wait([we = std::weak_ptr(e)](error_code ec) {
    auto e = we.lock();
    if (ec || !e || e->stopping || e->cfg.max_memory == 0) return;  // 0: the limit was taken away (set_settings)
    for (std::size_t i = 0; i < e->pool.size() && !e->pool.reloading(); ++i) {
      auto w = e->worker_of(e->pool.current(i));
      if (!w || !w->ready || w->asked_to_stop || w->exited) continue;
      const auto rss = resident_bytes(w->pid);
      if (rss <= e->cfg.max_memory) continue;
      e->announce("memory", who(*w) + " uses " + std::to_string(rss >> 20) + " MiB, over --max-memory " +
                                std::to_string(e->cfg.max_memory >> 20) + " MiB: replacing it");
      // A reload of that one slot: the replacement is ready before this worker gets its stop signal.
      e->pool.reload({i});
    }
    check_memory(e);
  });
}

}  // namespace clutch::supervisor::detail
