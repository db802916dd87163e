// The spawn plan and the routine that runs in the child between clone() and exec.
//
//   spawn_plan plan;                  // built and validated in the parent: every allocation happens here
//   plan.candidates = {"/bin/ls"};    // tried in order, as execvp would try PATH (see process/plan.cpp)
//   plan.argv = {...}; plan.envp = {...};   // NUL-terminated arrays, last element nullptr
//   plan.fds = {pipe_read_end, -1, 2};      // child fd i <- plan.fds[i]; -1 leaves fd i closed
//   spawn_result r = spawn(plan);     // r.stage == spawn_stage::none on success; else r.error is an errno value
//
// The child is started with clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD): it shares the parent's memory until
// it calls execve, so starting it costs the same from a 10 MB or a 10 GB parent (no page tables are copied), and the
// parent's thread resumes only once exec has succeeded or failed. The child routine therefore may not allocate,
// lock, throw or call anything that touches the parent's state: it uses raw system calls only.
#pragma once

#include <sys/types.h>

#include <optional>
#include <vector>

#include "os/fd.hpp"

namespace clutch::os {

// Where a spawn failed. The order is the order of the steps in the child.
enum class spawn_stage : int {
  none = 0,
  clone,        // in the parent: clone() itself failed (EAGAIN, ENOMEM)
  signals,      // resetting the handlers the parent installed
  session,      // setsid() for a detached child, setpgid() for a process-group leader, the parent-death signal
  credentials,  // setgroups(), setgid(), setuid()
  fds,          // arranging descriptors 0..n-1 as planned
  chdir,
  close_fds,    // closing every other descriptor
  exec,
};
const char* to_string(spawn_stage stage) noexcept;

struct spawn_plan {
  std::vector<const char*> candidates;  // full paths to try with execve, in order
  std::vector<char*> argv;              // ends with nullptr
  std::vector<char*> envp;              // ends with nullptr
  const char* cwd = nullptr;            // nullptr: the parent's
  std::vector<int> fds;                 // child fd i <- fds[i]; -1: closed in the child
  bool new_session = false;             // setsid(): the child leads a new session and process group
  bool new_process_group = false;       // setpgid(0, 0): the child leads a process group in our session
  int death_signal = 0;                 // PR_SET_PDEATHSIG: sent to the child when the spawning thread ends
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  // nullptr, or at least 21 writable bytes inside one of envp's strings: the child writes its own pid there, in
  // decimal and NUL-terminated, just before exec. systemd's LISTEN_PID must name the process that reads it, and
  // only the child knows its pid before it runs the program.
  char* pid_digits = nullptr;
};

struct spawn_result {
  pid_t pid = -1;
  unique_fd pidfd;  // close-on-exec; valid whenever pid is
  spawn_stage stage = spawn_stage::none;
  int error = 0;  // errno value when stage != none
};

// Starts the child. When the failure happened in the child (stage other than clone), the child has already been
// reaped: a failed spawn leaves no zombie.
spawn_result spawn(const spawn_plan& plan) noexcept;

}  // namespace clutch::os
