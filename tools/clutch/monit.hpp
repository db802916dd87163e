// `clutch monit`: a live view of the daemon's apps in the terminal (PM2's `pm2 monit`), in plain ANSI:
//   return clutch_cli::monit(socket_path);   // until q or Ctrl-C; the terminal is given back as it was
// Each app with its state, workers, restarts, CPU and memory (with sparklines of the last minute), the selected
// app's last log lines; ↑/↓ (or k/j) select, r reloads it, R restarts it, q quits. It follows the terminal's
// size (SIGWINCH). Asks the daemon once a second (`ls`, and `logs` of the selected app).
#pragma once

#include <string>

namespace clutch_cli {

int monit(const std::string& socket_path);

}  // namespace clutch_cli
