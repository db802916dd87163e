// Shared by the tests: the helper programs the test binary runs as its own children, and process/fd probes.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace clutch_test {

void set_self(const char* argv0);
// The absolute path of the test binary, for re-running it as a helper.
const std::string& self();
// {self(), "--helper", name, args…} split as exec_file wants it.
std::vector<std::string> helper_args(const std::string& name, std::vector<std::string> args = {});

int run_helper(int argc, char** argv);
// cluster_helpers.cpp: the cluster-* helpers.
int run_cluster_helper(std::string_view name, int argc, char** argv);
// app_helpers.cpp: the app-* helpers.
int run_app_helper(std::string_view name, int argc, char** argv);

// The descriptors open in this process right now.
std::set<int> open_fds();
// Pids of this process's children that are zombies.
std::vector<pid_t> zombie_children();
// Every live process (not zombie) whose process group is pgid.
std::vector<pid_t> processes_in_group(pid_t pgid);
bool process_alive(pid_t pid);

}  // namespace clutch_test
