// Signal names and the signal mask around a spawn.
//
//   int n = signal_number("SIGTERM");   // 15; "TERM" also works; -1 when there is no such signal
//   const char* s = signal_name(SIGKILL); // "SIGKILL"; nullptr for numbers without a name
//   { all_signals_blocked guard; ... clone() ... }  // the thread's own mask comes back at the end of the scope
//   end_group_on(sig);       // a process-group leader: sig now takes its whole group down (a parent-death signal)
//   end_group_and_exit();    // the parent is gone: end this leader's group, or just exit if it leads none
#pragma once

#include <signal.h>

#include <string_view>

namespace clutch::os {

int signal_number(std::string_view name) noexcept;
const char* signal_name(int number) noexcept;

// Blocks every signal in the calling thread for its lifetime. A handler that ran in a CLONE_VM child before exec
// would run the parent's code on the parent's memory, so the window between clone and the child's reset of the
// handlers must see no signal at all.
class all_signals_blocked {
 public:
  all_signals_blocked() noexcept;
  ~all_signals_blocked();
  all_signals_blocked(const all_signals_blocked&) = delete;
  all_signals_blocked& operator=(const all_signals_blocked&) = delete;
  const sigset_t& previous() const noexcept { return previous_; }

 private:
  sigset_t previous_;
};

// For a process that leads its own process group (a cluster worker, an agent): when sig arrives, SIGKILL the
// whole group, this process included, so that its children do not outlive it. A process that leads no group
// keeps sig's default action. The handler only calls async-signal-safe functions, so it works even while the
// process is stuck elsewhere.
void end_group_on(int sig) noexcept;
// Flushes stdio; then SIGKILLs this process's group if it leads one, else _exit(0). Never returns.
[[noreturn]] void end_group_and_exit() noexcept;

}  // namespace clutch::os
