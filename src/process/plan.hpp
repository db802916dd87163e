// Turns (file, args, options) into an os::spawn_plan: validates the input, builds argv, envp and the PATH
// candidates, and creates the pipes. All allocation for a spawn happens here, in the parent.
#pragma once

#include <string>
#include <vector>

#include "clutch/child_process.hpp"
#include "os/spawn.hpp"

namespace clutch::detail {

struct built_plan {
  os::spawn_plan plan;
  std::vector<std::string> storage;           // what argv, envp and candidates point into
  std::vector<os::unique_fd> parent_ends;     // per slot: our end of a pipe, else empty
  std::vector<os::unique_fd> child_ends;      // per slot: descriptors opened only to be handed to the child
  int kill_signal = SIGTERM;
};

// Fills out, or returns why not (invalid_argument for NUL bytes, '=' in a variable name, an unknown signal).
error_code build_plan(const std::string& file, const std::vector<std::string>& args, const options& opts,
                      built_plan& out);

}  // namespace clutch::detail
