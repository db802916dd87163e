// One process as /proc/PID/stat tells it: the fields the supervisor reads (state, CPU time, start, RSS), taken
// after the command name, which may itself hold spaces and parentheses.
//
//   if (auto st = os::read_proc_stat(pid); st && st->state != 'Z') ...   // alive, not a zombie
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace clutch::os {

struct proc_stat {
  char state = '?';              // R, S, D, Z, T…
  pid_t ppid = 0, pgrp = 0;
  std::uint64_t utime = 0, stime = 0;  // clock ticks
  std::uint64_t starttime = 0;         // clock ticks after boot
  std::uint64_t rss_pages = 0;
};

// nullopt when the process does not exist (any more) or its line cannot be read.
std::optional<proc_stat> read_proc_stat(pid_t pid);

}  // namespace clutch::os
