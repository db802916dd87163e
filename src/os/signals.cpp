#include "os/signals.hpp"

#include <pthread.h>
#include <unistd.h>

#include <cstdio>

#include <array>

namespace clutch::os {

namespace {
// Linux's numbering, the same on every architecture clutch builds for (x86-64, arm64). Real-time signals have no
// name of their own; Node accepts only these names, and so do we.
constexpr std::array<std::string_view, 32> names = {
    "",          "SIGHUP",  "SIGINT",    "SIGQUIT", "SIGILL",    "SIGTRAP", "SIGABRT",  "SIGBUS",
    "SIGFPE",    "SIGKILL", "SIGUSR1",   "SIGSEGV", "SIGUSR2",   "SIGPIPE", "SIGALRM",  "SIGTERM",
    "SIGSTKFLT", "SIGCHLD", "SIGCONT",   "SIGSTOP", "SIGTSTP",   "SIGTTIN", "SIGTTOU",  "SIGURG",
    "SIGXCPU",   "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH",  "SIGIO",   "SIGPWR",   "SIGSYS",
};
static_assert(SIGTERM == 15 && SIGCHLD == 17 && SIGSYS == 31, "signal numbers differ from Linux's generic ones");
}  // namespace

int signal_number(std::string_view name) noexcept {
  if (name.starts_with("SIG")) name.remove_prefix(3);
  if (name.empty()) return -1;
  for (int n = 1; n < static_cast<int>(names.size()); ++n) {
    if (names[n].substr(3) == name) return n;
  }
  if (name == "IOT") return SIGABRT;  // aliases users write
  if (name == "POLL") return SIGIO;
  return -1;
}

const char* signal_name(int number) noexcept {
  if (number < 1 || number >= static_cast<int>(names.size())) return nullptr;
  return names[number].data();  // each entry is a literal, so it is NUL-terminated
}

all_signals_blocked::all_signals_blocked() noexcept {
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous_);
}

all_signals_blocked::~all_signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

namespace {
bool leads_group() noexcept { return ::getpgrp() == ::getpid(); }
void end_group(int) noexcept { ::kill(0, SIGKILL); }
}  // namespace

void end_group_on(int sig) noexcept {
  if (!leads_group()) return;
  struct sigaction sa {};
  sa.sa_handler = end_group;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(sig, &sa, nullptr);
}

void end_group_and_exit() noexcept {
  std::fflush(nullptr);
  if (leads_group()) end_group(0);
  ::_exit(0);
}

}  // namespace clutch::os
