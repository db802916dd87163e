#include "process/plan.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string_view>

#include "common/error_detail.hpp"

extern char** environ;

namespace clutch::detail {

namespace {

// glibc's execvp falls back to this when PATH is unset.
constexpr std::string_view default_path = "/bin:/usr/bin";

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// Where execvp would look for file, in order.
void path_candidates(const std::string& file, std::string_view path, std::vector<std::string>& out) {
  if (file.find('/') != std::string::npos) {
    out.push_back(file);
    return;
  }
  while (true) {
    auto colon = path.find(':');
    std::string_view dir = path.substr(0, colon);
    // An empty entry means the current directory, as POSIX says.
    std::string candidate = dir.empty() ? std::string(".") : std::string(dir);
    candidate += '/';
    candidate += file;
    out.push_back(std::move(candidate));
    if (colon == std::string_view::npos) break;
    path.remove_prefix(colon + 1);
  }
}

}  // namespace

error_code build_plan(const std::string& file, const std::vector<std::string>& args, const options& opts,
                      built_plan& out) {
  const auto invalid = errno_error(EINVAL);
  if (file.empty() || has_nul(file) || has_nul(opts.cwd) || (opts.argv0 && has_nul(*opts.argv0))) return invalid;
  for (const auto& a : args) {
    if (has_nul(a)) return invalid;
  }
  for (const auto& [k, v] : opts.env.vars()) {
    if (k.empty() || has_nul(k) || has_nul(v) || k.find('=') != std::string::npos) return invalid;
  }
  const std::string& pid_var = opts.pid_variable;
  if (has_nul(pid_var) || pid_var.find('=') != std::string::npos) return invalid;
  error_code ec;
  out.kill_signal = opts.kill_signal.resolve(ec);
  if (ec) return ec;
  const int death_signal = opts.death_signal.resolve(ec);
  if (ec) return ec;

  // The environment: NAME=value strings. For inherit we still copy, because another thread may setenv() while
  // the child reads the array.
  std::vector<std::string> env_strings;
  std::string child_path;
  bool child_path_set = false;
  auto take_path = [&](std::string_view entry) {
    if (entry.starts_with("PATH=")) {
      child_path = entry.substr(5);
      child_path_set = true;
    }
  };
  if (opts.env.how() != environment::mode::replace) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string_view entry(*e);
      auto eq = entry.find('=');
      if (opts.env.how() == environment::mode::add && opts.env.vars().contains(std::string(entry.substr(0, eq))))
        continue;  // overridden below
      if (!pid_var.empty() && entry.substr(0, eq) == pid_var) continue;
      take_path(entry);
      env_strings.emplace_back(entry);
    }
  }
  for (const auto& [k, v] : opts.env.vars()) {
    if (k == pid_var) continue;
    env_strings.push_back(k + "=" + v);
    take_path(env_strings.back());
  }
  // Room for the child to write its pid into (os::spawn_plan::pid_digits).
  const std::size_t pid_entry = env_strings.size();
  if (!pid_var.empty()) env_strings.push_back(pid_var + "=" + std::string(20, ' '));

  std::vector<std::string> candidates;
  // Like libuv: the search uses the PATH the child will have, and execvp's default when it has none.
  path_candidates(file, child_path_set ? std::string_view(child_path) : default_path, candidates);

  // One storage vector, reserved up front, so that the pointers taken below stay valid.
  auto& s = out.storage;
  s.clear();
  s.reserve(1 + args.size() + env_strings.size() + candidates.size() + 1);
  s.push_back(opts.argv0.value_or(file));
  for (const auto& a : args) s.push_back(a);
  const std::size_t env_begin = s.size();
  for (auto& e : env_strings) s.push_back(std::move(e));
  const std::size_t cand_begin = s.size();
  for (auto& c : candidates) s.push_back(std::move(c));
  s.push_back(opts.cwd);
  const std::size_t cwd_index = s.size() - 1;

  auto& plan = out.plan;
  plan.argv.clear();
  for (std::size_t i = 0; i < env_begin; ++i) plan.argv.push_back(s[i].data());
  plan.argv.push_back(nullptr);
  plan.envp.clear();
  for (std::size_t i = env_begin; i < cand_begin; ++i) plan.envp.push_back(s[i].data());
  plan.envp.push_back(nullptr);
  plan.pid_digits = pid_var.empty() ? nullptr : s[env_begin + pid_entry].data() + pid_var.size() + 1;
  plan.candidates.clear();
  for (std::size_t i = cand_begin; i < cwd_index; ++i) plan.candidates.push_back(s[i].c_str());
  plan.cwd = opts.cwd.empty() ? nullptr : s[cwd_index].c_str();
  plan.new_session = opts.detached;
  plan.new_process_group = opts.kill_tree.value_or(false);
  plan.death_signal = death_signal;
  plan.uid = opts.uid;
  plan.gid = opts.gid;

  // Descriptors. Parent ends are made non-blocking later by Asio; the child's ends stay blocking, as programs
  // expect of their stdio.
  // Like Node, a list shorter than three gets pipes for the missing standard slots.
  const auto& slots = opts.stdio;
  const std::size_t n = std::max<std::size_t>(slots.size(), 3);
  plan.fds.assign(n, -1);
  out.parent_ends.clear();
  out.parent_ends.resize(n);
  out.child_ends.clear();
  out.child_ends.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const stdio_slot slot = i < slots.size() ? slots[i] : stdio::pipe;
    switch (slot.what) {
      case stdio_slot::kind::pipe: {
        os::fd_pair p;
        if (i < 3) {
          if (int e = os::make_pipe(p); e != 0) return errno_error(e);
          // stdin: the child reads; stdout/stderr: the child writes.
          if (i == 0) {
            out.child_ends[i] = std::move(p.first);
            out.parent_ends[i] = std::move(p.second);
          } else {
            out.child_ends[i] = std::move(p.second);
            out.parent_ends[i] = std::move(p.first);
          }
        } else {
          if (int e = os::make_socketpair(p); e != 0) return errno_error(e);
          out.parent_ends[i] = std::move(p.first);
          out.child_ends[i] = std::move(p.second);
        }
        plan.fds[i] = out.child_ends[i].get();
        break;
      }
      case stdio_slot::kind::inherit:
        plan.fds[i] = static_cast<int>(i);
        break;
      case stdio_slot::kind::ignore:
        if (i < 3) {
          out.child_ends[i].reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
          if (!out.child_ends[i]) return errno_error(errno);
          plan.fds[i] = out.child_ends[i].get();
        }
        break;
      case stdio_slot::kind::fd:
        if (slot.fd < 0) return invalid;
        plan.fds[i] = slot.fd;
        break;
      case stdio_slot::kind::ipc:
        return invalid;  // fork() replaces it with the channel's socket before it gets here
    }
  }
  return {};
}

}  // namespace clutch::detail
