#include "os/proc_stat.hpp"

#include <fstream>
#include <sstream>
#include <string>

namespace clutch::os {

std::optional<proc_stat> read_proc_stat(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(file, text)) return std::nullopt;
  const auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return std::nullopt;
  // From field 3 on (proc(5)): state 3, ppid 4, pgrp 5, utime 14, stime 15, starttime 22, rss 24.
  std::istringstream fields(text.substr(close + 2));
  proc_stat st;
  std::string skip;
  fields >> st.state >> st.ppid >> st.pgrp;
  for (int i = 6; i < 14; ++i) fields >> skip;
  fields >> st.utime >> st.stime;
  for (int i = 16; i < 22; ++i) fields >> skip;
  fields >> st.starttime >> skip >> st.rss_pages;  // 23 is vsize
  if (!fields) return std::nullopt;
  return st;
}

}  // namespace clutch::os
