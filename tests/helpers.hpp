// Shared by the tests: the helper programs the test binary runs as its own children, and process/fd probes.
#pragma once

#include <signal.h>

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>

#include <set>
#include <string>
#include <thread>
#include <utility>
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
// hardening_test.cpp: the hostile-* helpers (another uid squatting, flooding, sending garbage).
int run_hostile_helper(std::string_view name, int argc, char** argv);

// The descriptors open in this process right now.
std::set<int> open_fds();
// Pids of this process's children that are zombies.
std::vector<pid_t> zombie_children();
// Every live process (not zombie) whose process group is pgid.
std::vector<pid_t> processes_in_group(pid_t pgid);
bool process_alive(pid_t pid);
// Zombies whose parent is `parent` (not necessarily this process).
std::vector<pid_t> zombies_of(pid_t parent);
// Live processes whose parent is `parent`.
std::vector<pid_t> children_of(pid_t parent);

// One GET of path on a fresh connection to 127.0.0.1:port: the status code and the body ({0, ""} when nothing
// answered).
std::pair<int, std::string> http_request(unsigned short port, const std::string& path = "/");
// The same to [::1]:port, and over a Unix socket.
std::pair<int, std::string> http_request_v6(unsigned short port, const std::string& path = "/");
std::pair<int, std::string> http_request_unix(const std::string& socket_path, const std::string& path = "/");

// A field of a JSON message, or "" / 0 when it is missing or of another type.
std::string str(const boost::json::object& o, std::string_view name);
std::int64_t num(const boost::json::object& o, std::string_view name);

// A folder of its own under /tmp (short: a Unix socket's path has 107 bytes at most), removed with everything in it.
struct temp_dir {
  std::string path;
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

// The clutch under test: $CLUTCH_TEST_BINARY when set (tests/package/check runs the end-to-end tests against the
// packaged binary that way), else this build's.
inline const std::string& clutch_binary() {
  static const std::string binary = [] {
    const char* chosen = std::getenv("CLUTCH_TEST_BINARY");
    return std::string(chosen && *chosen ? chosen : CLUTCH_BINARY);
  }();
  return binary;
}

// A tool a test needs: true when `program` (an absolute path) is there, else after Debian's `package` is installed
// with apt-get (which waits for the dpkg lock: ctest -j2 may run two installs at once). why: apt-get's error.
bool tool_installed(const std::string& program, const std::string& package, std::string* why = nullptr);

// Signals a process the test started, by a pid it was given (a spawn, an answer, a status): true if sent. A pid
// that is missing or wrong (0, 1, negative: our own group, init, a group) is refused, never signalled.
inline bool signal_ours(std::int64_t pid, int sig) { return pid > 1 && ::kill(static_cast<pid_t>(pid), sig) == 0; }

// A port on 127.0.0.1 that was free a moment ago.
unsigned short free_port();

// Polls pred() every 20 ms until it holds, at most limit; returns pred(). For state another process changes.
template <typename Pred>
bool eventually(Pred pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
  for (auto end = std::chrono::steady_clock::now() + limit; std::chrono::steady_clock::now() < end;) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// Runs io until pred() holds, at most limit; returns pred(). The bound turns a hang into a failed assertion.
template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred pred, std::chrono::seconds limit = std::chrono::seconds(30)) {
  for (auto end = std::chrono::steady_clock::now() + limit; !pred() && std::chrono::steady_clock::now() < end;) {
    io.run_for(std::chrono::milliseconds(5));
    io.restart();
  }
  return pred();
}

}  // namespace clutch_test
