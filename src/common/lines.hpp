// Output as lines: a byte stream cut into whole lines, and the last few of them kept.
//
//   detail::line_splitter split;
//   detail::last_lines recent(10);
//   split.feed(chunk, [&](std::string_view line) { recent.add(line); });   // each chunk as it is read
//   split.finish([&](std::string_view line) { recent.add(line); });        // at the end: a last line without '\n'
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

namespace clutch::detail {

// Chunks of a byte stream in, whole lines out ('\n' cut off, a '\r' before it too). A line longer than max_line
// comes out in pieces of max_line bytes, so that a process that never writes '\n' cannot grow us without bound.
class line_splitter {
 public:
  static constexpr std::size_t max_line = 64 * 1024;
  template <typename F>
  void feed(std::string_view chunk, F&& line) {
    while (!chunk.empty()) {
      const auto nl = chunk.find('\n');
      const auto take = nl == std::string_view::npos ? chunk.size() : nl;
      partial_.append(chunk.substr(0, take));
      chunk.remove_prefix(nl == std::string_view::npos ? chunk.size() : nl + 1);
      if (nl != std::string_view::npos) {
        emit(line);
      } else {
        while (partial_.size() >= max_line) {
          line(std::string_view(partial_).substr(0, max_line));
          partial_.erase(0, max_line);
        }
      }
    }
  }
  // The stream ended: what is left (a last line without '\n') comes out.
  template <typename F>
  void finish(F&& line) {
    if (!partial_.empty()) emit(line);
  }

 private:
  template <typename F>
  void emit(F& line) {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    line(std::string_view(partial_));
    partial_.clear();
  }
  std::string partial_;
};

// The last `keep` lines of a stream, each cut at max_line bytes: for a process's exit event in `clutch status`,
// and for the report of an app role that died during start-up.
class last_lines {
 public:
  explicit last_lines(std::size_t keep = 20, std::size_t max_line = 1024) : keep_(keep), max_line_(max_line) {}
  void add(std::string_view line) {
    if (lines_.size() == keep_) lines_.pop_front();
    lines_.emplace_back(line.substr(0, max_line_));
  }
  const std::deque<std::string>& lines() const noexcept { return lines_; }

 private:
  std::size_t keep_, max_line_;
  std::deque<std::string> lines_;
};

}  // namespace clutch::detail
