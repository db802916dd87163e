// Processes as /proc/PID/stat tells them: the fields the supervisor reads (state, parent, CPU time, start, RSS),
// taken after the command name, which may itself hold spaces and parentheses.
//
//   if (auto st = os::read_proc_stat(pid); st && st->state != 'Z') ...   // alive, not a zombie
//
//   if (os::others_in_group(leader, exited_at).value_or(true)) ...   // members besides the (exited) leader
//
//   auto table = os::process_table::scan();        // every process, one pass over /proc
//   table.for_each_in_tree(pid, [&](const os::proc_stat& p) { rss += p.rss_pages; });
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <chrono>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace clutch::os {

struct proc_stat {
  pid_t pid = 0;
  char state = '?';              // R, S, D, Z, T…
  pid_t ppid = 0, pgrp = 0;
  std::uint32_t flags = 0;               // the kernel's PF_* flags: PF_EXITING (0x4) once it has begun to exit
  std::uint64_t utime = 0, stime = 0;    // clock ticks
  std::uint64_t cutime = 0, cstime = 0;  // clock ticks of the children it has waited for
  std::uint64_t starttime = 0;           // clock ticks after boot
  std::uint64_t rss_pages = 0;
};

inline constexpr std::uint32_t pf_exiting = 0x4;

// nullopt when the process does not exist (any more) or its line cannot be read.
std::optional<proc_stat> read_proc_stat(pid_t pid);
// The same from the text of a stat file.
std::optional<proc_stat> parse_proc_stat(pid_t pid, std::string_view text);

// Whether a process other than its leader is in the process group `leader` leads (a zombie counts: it is there
// until reaped). kill(-leader, 0) cannot tell: it also succeeds for a group whose only member is its exited leader,
// still unreaped. By a pass over /proc that notes every group with such a member; later calls on the same thread
// use that pass too while it is a few milliseconds old and was taken at or after `since`, so that a daemon ending
// 100 groups at once (a reload of every app) reads /proc once, not 100 times. Give as `since` the time the leader
// was known to have exited: a group seen empty after that stays empty (only a member can fork into it), so the
// shared pass never misses a member. nullopt when /proc cannot be read.
std::optional<bool> others_in_group(pid_t leader, std::chrono::steady_clock::time_point since);

// Every process at one moment (as near as /proc allows: processes come and go while it is read), to answer
// questions about many process trees with one pass over /proc instead of one per tree.
class process_table {
 public:
  static process_table scan();
  const proc_stat* find(pid_t pid) const;
  // f(proc_stat) for pid and each of its descendants (by parent pid), pid first; nothing when pid is not here.
  template <typename F>
  void for_each_in_tree(pid_t pid, F&& f) const {
    const auto* root = find(pid);
    if (!root) return;
    std::vector<const proc_stat*> todo{root};
    // A pid reused during the scan could make a cycle of parents; no tree has more members than the table.
    for (std::size_t seen = 0; !todo.empty() && seen < procs_.size(); ++seen) {
      const auto* p = todo.back();
      todo.pop_back();
      f(*p);
      if (p->pid == 0) continue;
      const auto [from, to] = children_.equal_range(p->pid);
      for (auto it = from; it != to; ++it)
        if (const auto* c = find(it->second)) todo.push_back(c);
    }
  }
  std::size_t size() const noexcept { return procs_.size(); }

 private:
  std::unordered_map<pid_t, proc_stat> procs_;
  std::unordered_multimap<pid_t, pid_t> children_;  // parent → child
};

}  // namespace clutch::os
