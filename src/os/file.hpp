// Replacing a file's content as a whole, so that no reader ever sees part of it:
//
//   if (int err = os::replace_file(home + "/apps.json", text, 0600, true)) return err;
//
// The text goes to a new file beside it (PATH.XXXXXX, mkstemp's: two writers never share one), given `mode`
// whatever the umask, flushed to the disk first when `durable` (a table a daemon restores after a crash), then
// renamed over PATH. A reader, or a process after a crash, finds the old content or the new, never half of one.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace clutch::os {

// 0, or the errno of the step that failed; then PATH is as it was and the new file is gone.
int replace_file(const std::string& path, std::string_view text, mode_t mode, bool durable);

}  // namespace clutch::os
