// Log files that only the supervisor writes: the processes' stdout and stderr reach it through pipes, it cuts
// them into lines and appends whole lines, so a rotation never splits or loses one.
//
//   supervisor::log_file out("/var/log/web.out.log", 10 << 20, 5);  // rotated past 10 MiB, 5 old files kept
//   if (auto ec = out.open()) { ... }
//   supervisor::line_splitter split;
//   split.feed(chunk, [&](std::string_view line) { out.append("[3] ", line); });
//   split.finish([&](std::string_view line) { out.append("[3] ", line); });  // the stream ended mid-line
//   out.flush();       // after each chunk: one write(2) for every line it held
//   out.reopen();      // SIGUSR1: after an outside tool moved the file away
//
// Rotation renames FILE.(k-1) → FILE.k … FILE → FILE.1 and starts FILE anew, before a line would pass the size.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "clutch/error.hpp"
#include "common/lines.hpp"
#include "os/fd.hpp"

namespace clutch::supervisor {

class log_file {
 public:
  log_file(std::string path, std::uint64_t max_bytes, unsigned keep);
  // Creates the file's folder if needed, and opens the file for appending.
  error_code open();
  // Buffers prefix + line + '\n'; flush() writes them.
  void append(std::string_view prefix, std::string_view line);
  // Writes what append() buffered, rotating between two lines wherever the next would take the file past
  // max_bytes. A write error is returned (the lines are dropped then, as there is nowhere to put them).
  error_code flush();
  error_code reopen();
  const std::string& path() const noexcept { return path_; }

 private:
  void rotate();
  error_code write_all(std::string_view bytes);
  std::string path_;
  std::uint64_t max_bytes_;
  unsigned keep_;
  os::unique_fd fd_;
  std::uint64_t size_ = 0;
  std::string pending_;
};

// The line tools are shared with the app master (common/lines.hpp); here under the supervisor's names.
using ::clutch::detail::last_lines;
using ::clutch::detail::line_splitter;

// PM2's log_date_format: t in local time, written as the format says with moment.js's tokens (YYYY YY M MM D DD
// H HH h hh m mm s ss SSS A a Z ZZ X x; "[text]" is literal, any other character is itself), as PM2 writes it
// before each line ("2026-12-07 12:00:01: …"). For example date_text("YYYY-MM-DD HH:mm:ss Z", now).
std::string date_text(std::string_view format, std::chrono::system_clock::time_point t);

// The last n lines of a file (fewer if it has fewer), read from its end.
std::deque<std::string> tail_file(const std::string& path, std::size_t n);

}  // namespace clutch::supervisor
