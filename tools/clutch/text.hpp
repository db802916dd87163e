// Numbers as the CLI shows them in a narrow column (`clutch ls`, `clutch monit`):
//   human_bytes(3.5 * (1 << 20)) == "3.5M";   human_time(5400) == "1.5h"
#pragma once

#include <cstdio>
#include <string>

namespace clutch_cli {

inline std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1 << 30) std::snprintf(buf, sizeof buf, "%.1fG", b / (1 << 30));
  else if (b >= 1 << 20) std::snprintf(buf, sizeof buf, "%.1fM", b / (1 << 20));
  else std::snprintf(buf, sizeof buf, "%.0fK", b / 1024);
  return buf;
}

inline std::string human_time(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%.0fm", s / 60);
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%.1fh", s / 3600);
  else std::snprintf(buf, sizeof buf, "%.1fd", s / 86400);
  return buf;
}

}  // namespace clutch_cli
