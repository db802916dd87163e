// Signal names and the signal mask around a spawn.
//
//   int n = signal_number("SIGTERM");   // 15; "TERM" also works; -1 when there is no such signal
//   const char* s = signal_name(SIGKILL); // "SIGKILL"; nullptr for numbers without a name
//   { all_signals_blocked guard; ... clone() ... }  // the thread's own mask comes back at the end of the scope
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

}  // namespace clutch::os
