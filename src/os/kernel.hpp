// Whether this kernel has what clutch is built on, asked once at a program's start:
//
//   if (auto missing = os::missing_kernel_features()) { std::cerr << *missing; return 1; }
//
// clutch follows its children through pidfds: spawned with CLONE_PIDFD (Linux 5.2), opened with pidfd_open (5.3),
// waited for with waitid(P_PIDFD) (5.4), signalled with pidfd_send_signal (5.1). So it needs Linux 5.4 or later.
// The check asks the kernel itself (it does not read the version, which distributions' backports make unreliable),
// on this very process: nothing is signalled or waited for.
#pragma once

#include <optional>
#include <string>

namespace clutch::os {

// The oldest kernel clutch runs on.
inline constexpr const char* oldest_kernel = "5.4";

// nullopt when every feature is there; otherwise one sentence naming the first one missing, the kernel's release
// and the oldest kernel clutch supports.
std::optional<std::string> missing_kernel_features();

}  // namespace clutch::os
