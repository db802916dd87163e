// How log lines name a process and say how it ended: "worker 3 (pid 812)", "agent (pid 811)"; "exited with code
// 3", "killed by SIGSEGV".
#pragma once

#include <string>

#include "clutch/child_process.hpp"

namespace clutch::detail {

// An agent is "agent"; a worker "worker N", or "app worker N" where its role is named (the app layer's).
inline std::string process_label(bool agent, int id, int pid, const char* worker = "worker") {
  return (agent ? std::string("agent") : std::string(worker) + " " + std::to_string(id)) + " (pid " +
         std::to_string(pid) + ")";
}

inline std::string describe(const exit_status& st) {
  if (st.signal) {
    const char* name = signal_name(*st.signal);
    return "killed by " + (name ? std::string(name) : "signal " + std::to_string(*st.signal));
  }
  return "exited with code " + std::to_string(st.code.value_or(-1));
}

}  // namespace clutch::detail
