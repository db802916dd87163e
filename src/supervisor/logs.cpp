#include "supervisor/logs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <filesystem>

namespace clutch::supervisor {

log_file::log_file(std::string path, std::uint64_t max_bytes, unsigned keep)
    : path_(std::move(path)), max_bytes_(max_bytes), keep_(keep) {}

error_code log_file::open() {
  std::error_code fs_ec;
  const auto folder = std::filesystem::path(path_).parent_path();
  if (!folder.empty()) std::filesystem::create_directories(folder, fs_ec);
  const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return error_code(errno, boost::system::system_category());
  fd_.reset(fd);
  struct stat st {};
  size_ = ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  return {};
}

error_code log_file::reopen() {
  fd_.reset();
  return open();
}

void log_file::append(std::string_view prefix, std::string_view line) {
  pending_.append(prefix);
  pending_.append(line);
  pending_.push_back('\n');
}

void log_file::rotate() {
  fd_.reset();
  if (keep_ == 0) {
    ::unlink(path_.c_str());
  } else {
    for (unsigned k = keep_; k > 1; --k)
      ::rename((path_ + "." + std::to_string(k - 1)).c_str(), (path_ + "." + std::to_string(k)).c_str());
    ::rename(path_.c_str(), (path_ + ".1").c_str());
  }
  open();
}

error_code log_file::flush() {
  std::string_view rest = pending_;
  error_code result;
  while (!rest.empty() && !result) {
    // As many whole lines as fit under max_bytes go to this file; a rotation falls between two lines, never inside
    // one. A line longer than max_bytes gets a file of its own.
    std::size_t take = rest.size();
    if (max_bytes_ > 0 && size_ + take > max_bytes_) {
      const std::size_t room = max_bytes_ > size_ ? static_cast<std::size_t>(max_bytes_ - size_) : 0;
      const auto nl = room > 0 ? rest.substr(0, room).rfind('\n') : std::string_view::npos;
      if (nl != std::string_view::npos) {
        take = nl + 1;
      } else if (size_ > 0) {
        rotate();
        continue;
      } else {
        take = rest.find('\n') + 1;  // pending_ holds whole lines only
      }
    }
    result = write_all(rest.substr(0, take));
    rest.remove_prefix(take);
  }
  pending_.clear();
  return result;
}

error_code log_file::write_all(std::string_view bytes) {
  if (!fd_) return make_error_code(std::errc::bad_file_descriptor);
  std::size_t written = 0;
  const int e = os::write_all(fd_.get(), bytes, written);
  size_ += written;
  return e ? error_code(e, boost::system::system_category()) : error_code{};
}

std::deque<std::string> tail_file(const std::string& path, std::size_t n) {
  std::deque<std::string> out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || n == 0) {
    if (fd >= 0) ::close(fd);
    return out;
  }
  os::unique_fd file(fd);
  off_t end = ::lseek(fd, 0, SEEK_END);
  std::string text;  // the file's last bytes, read backwards a block at a time until n lines are in it
  constexpr off_t block = 64 * 1024;
  std::size_t newlines = 0;
  while (end > 0 && newlines <= n) {
    const off_t from = end > block ? end - block : 0;
    std::string chunk(static_cast<std::size_t>(end - from), '\0');
    if (::pread(fd, chunk.data(), chunk.size(), from) != static_cast<ssize_t>(chunk.size())) break;
    for (char c : chunk) newlines += c == '\n';
    text.insert(0, chunk);
    end = from;
  }
  std::string_view rest = text;
  if (!rest.empty() && rest.back() == '\n') rest.remove_suffix(1);
  while (!rest.empty() && out.size() < n) {
    const auto nl = rest.rfind('\n');
    out.emplace_front(nl == std::string_view::npos ? rest : rest.substr(nl + 1));
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(0, nl);
  }
  return out;
}

std::string date_text(std::string_view format, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const time_t secs = static_cast<time_t>(ms / 1000);
  tm local{};
  ::localtime_r(&secs, &local);
  auto num = [](long v, int width) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%0*ld", width, v);
    return std::string(buf);
  };
  auto zone = [&](bool colon) {
    const long off = local.tm_gmtoff / 60;
    const long a = off < 0 ? -off : off;
    return std::string(off < 0 ? "-" : "+") + num(a / 60, 2) + (colon ? ":" : "") + num(a % 60, 2);
  };
  const int hour12 = local.tm_hour % 12 == 0 ? 12 : local.tm_hour % 12;
  // Longest first, so that "YYYY" is not read as "YY" twice.
  const std::array<std::pair<std::string_view, std::string>, 20> tokens{{
      {"YYYY", num(local.tm_year + 1900, 4)},
      {"SSS", num(static_cast<long>(ms % 1000), 3)},
      {"YY", num((local.tm_year + 1900) % 100, 2)},
      {"MM", num(local.tm_mon + 1, 2)},
      {"DD", num(local.tm_mday, 2)},
      {"HH", num(local.tm_hour, 2)},
      {"hh", num(hour12, 2)},
      {"mm", num(local.tm_min, 2)},
      {"ss", num(local.tm_sec, 2)},
      {"ZZ", zone(false)},
      {"M", std::to_string(local.tm_mon + 1)},
      {"D", std::to_string(local.tm_mday)},
      {"H", std::to_string(local.tm_hour)},
      {"h", std::to_string(hour12)},
      {"m", std::to_string(local.tm_min)},
      {"s", std::to_string(local.tm_sec)},
      {"A", local.tm_hour < 12 ? "AM" : "PM"},
      {"a", local.tm_hour < 12 ? "am" : "pm"},
      {"Z", zone(true)},
      {"X", std::to_string(ms / 1000)},
  }};
  std::string out;
  for (std::size_t i = 0; i < format.size();) {
    if (format[i] == '[') {  // literal up to the closing bracket
      const auto end = format.find(']', i);
      if (end != std::string_view::npos) {
        out.append(format.substr(i + 1, end - i - 1));
        i = end + 1;
        continue;
      }
    }
    if (format[i] == 'x') {
      out += std::to_string(ms);
      ++i;
      continue;
    }
    bool matched = false;
    for (const auto& [token, text] : tokens)
      if (format.substr(i, token.size()) == token) {
        out += text;
        i += token.size();
        matched = true;
        break;
      }
    if (!matched) out += format[i++];
  }
  return out;
}

}  // namespace clutch::supervisor
