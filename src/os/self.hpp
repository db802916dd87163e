// How this process was started, to run it again (a cluster worker, an agent).
//
//   os::command me = os::self_command();   // me.exe: "/usr/bin/app"; me.argv: {"app", "--port", "80"}
#pragma once

#include <string>
#include <vector>

namespace clutch::os {

struct command {
  // This executable by its path, so that a re-run after a deploy runs the new binary; "/proc/self/exe" when the
  // file was deleted.
  std::string exe;
  std::vector<std::string> argv;  // as it was started, argv[0] included
};

command self_command();

}  // namespace clutch::os
