#include "os/proc_stat.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <unordered_set>
#include <cerrno>
#include <string>

#include "os/fd.hpp"

namespace clutch::os {

namespace {

// The whole stat file in one read(2): a process's line is far shorter than the buffer, and one read keeps its
// fields from one moment.
std::optional<std::string> read_stat_text(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  unique_fd file(fd);
  std::string text(1024, '\0');
  ssize_t n;
  do n = ::read(fd, text.data(), text.size());
  while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  text.resize(static_cast<std::size_t>(n));
  return text;
}

}  // namespace

std::optional<proc_stat> parse_proc_stat(pid_t pid, std::string_view text) {
  const auto close = text.rfind(')');
  if (close == std::string_view::npos || close + 2 >= text.size()) return std::nullopt;
  // From field 3 on (proc(5)): state 3, ppid 4, pgrp 5, flags 9, utime 14, stime 15, cutime 16, cstime 17, starttime 22,
  // rss 24. Field k is fields[k - 3].
  std::string_view rest = text.substr(close + 2);
  std::string_view fields[22];
  std::size_t count = 0;
  while (count < 22 && !rest.empty()) {
    const auto sp = rest.find(' ');
    fields[count++] = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
  }
  if (count < 22 || fields[0].size() != 1) return std::nullopt;
  bool ok = true;
  auto number = [&](std::string_view f, auto& out) {
    const auto r = std::from_chars(f.data(), f.data() + f.size(), out);
    ok = ok && r.ec == std::errc{};
  };
  proc_stat st;
  st.pid = pid;
  st.state = fields[0][0];
  number(fields[1], st.ppid);
  number(fields[2], st.pgrp);
  number(fields[6], st.flags);
  number(fields[11], st.utime);
  number(fields[12], st.stime);
  std::int64_t cutime = 0, cstime = 0;  // signed in proc(5)
  number(fields[13], cutime);
  number(fields[14], cstime);
  st.cutime = cutime > 0 ? static_cast<std::uint64_t>(cutime) : 0;
  st.cstime = cstime > 0 ? static_cast<std::uint64_t>(cstime) : 0;
  number(fields[19], st.starttime);
  std::int64_t rss = 0;
  number(fields[21], rss);
  st.rss_pages = rss > 0 ? static_cast<std::uint64_t>(rss) : 0;
  if (!ok) return std::nullopt;
  return st;
}

std::optional<proc_stat> read_proc_stat(pid_t pid) {
  const auto text = read_stat_text(pid);
  return text ? parse_proc_stat(pid, *text) : std::nullopt;
}

namespace {

// f(pid, stat) for every process /proc lists, until f returns false. False when /proc cannot be read.
template <typename F>
bool for_each_process(F&& f) {
  DIR* dir = ::opendir("/proc");
  if (!dir) return false;
  while (const dirent* e = ::readdir(dir)) {
    pid_t pid = 0;
    const std::string_view name(e->d_name);
    const auto r = std::from_chars(name.data(), name.data() + name.size(), pid);
    if (r.ec != std::errc{} || r.ptr != name.data() + name.size() || pid <= 0) continue;
    const auto text = read_stat_text(pid);
    if (!text) continue;  // gone since readdir
    if (auto st = parse_proc_stat(pid, *text); st && !f(*st)) break;
  }
  ::closedir(dir);
  return true;
}

}  // namespace

process_table process_table::scan() {
  process_table t;
  for_each_process([&t](const proc_stat& st) {
    t.children_.emplace(st.ppid, st.pid);
    t.procs_.emplace(st.pid, st);
    return true;
  });
  return t;
}

std::optional<bool> others_in_group(pid_t leader, std::chrono::steady_clock::time_point since) {
  // A pass at most this old answers: a member that left since it was taken is seen gone on the sweep's next look.
  constexpr auto fresh = std::chrono::milliseconds(5);
  thread_local struct {
    std::chrono::steady_clock::time_point at{};
    std::unordered_set<pid_t> groups;  // groups with a member besides their leader
    bool valid = false;
  } pass;
  const auto now = std::chrono::steady_clock::now();
  if (!pass.valid || pass.at < since || now - pass.at > fresh) {
    pass.groups.clear();
    pass.valid = for_each_process([](const proc_stat& st) {
      if (st.pid != st.pgrp) pass.groups.insert(st.pgrp);
      return true;
    });
    pass.at = std::chrono::steady_clock::now();
    if (!pass.valid) return std::nullopt;
  }
  return pass.groups.contains(leader);
}

const proc_stat* process_table::find(pid_t pid) const {
  const auto it = procs_.find(pid);
  return it == procs_.end() ? nullptr : &it->second;
}

}  // namespace clutch::os
