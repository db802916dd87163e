// How a process ended, as a log line says it: "exited with code 3", "killed by SIGSEGV".
#pragma once

#include <string>

#include "clutch/child_process.hpp"

namespace clutch::detail {

inline std::string describe(const exit_status& st) {
  if (st.signal) {
    const char* name = signal_name(*st.signal);
    return "killed by " + (name ? std::string(name) : "signal " + std::to_string(*st.signal));
  }
  return "exited with code " + std::to_string(st.code.value_or(-1));
}

}  // namespace clutch::detail
