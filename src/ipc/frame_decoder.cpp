#include "ipc/frame_decoder.hpp"

#include <cstring>

namespace clutch::detail {

std::span<char> frame_decoder::prepare(std::size_t n) {
  // Drop what was consumed when that is cheap relative to it (the rest is at most as large), so that a long line
  // arriving in many reads is not copied again for each one.
  if (start_ > 0 && (start_ == size_ || size_ - start_ <= start_)) {
    std::memmove(buf_.data(), buf_.data() + start_, size_ - start_);
    moved_ += size_ - start_;
    size_ -= start_;
    scan_ -= start_;
    start_ = 0;
  }
  if (buf_.size() < size_ + n) buf_.resize(std::max(size_ + n, buf_.size() * 2));
  return {buf_.data() + size_, n};
}

std::optional<std::string_view> frame_decoder::next_line(error_code& ec) {
  ec.clear();
  if (scan_ < size_) {
    const void* nl = std::memchr(buf_.data() + scan_, '\n', size_ - scan_);
    if (nl != nullptr) {
      std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.data());
      std::string_view line(buf_.data() + start_, end - start_);
      start_ = scan_ = end + 1;
      if (line.size() > max_message_) {
        ec = clutch::errc::message_too_large;
        return std::nullopt;
      }
      return line;
    }
    scan_ = size_;
  }
  if (size_ - start_ > max_message_) ec = clutch::errc::message_too_large;
  return std::nullopt;
}

namespace {
boost::json::parse_options options_with_depth(std::size_t max_depth) {
  boost::json::parse_options o;
  o.max_depth = max_depth;
  return o;
}
}  // namespace

message_parser::message_parser(std::size_t max_depth) : parser_(boost::json::storage_ptr(), options_with_depth(max_depth)) {}

error_code message_parser::parse(std::string_view line, boost::json::value& out) {
  boost::system::error_code ec;
  parser_.reset();
  parser_.write(line.data(), line.size(), ec);
  if (ec) return clutch::errc::invalid_message;
  out = parser_.release();
  return {};
}

}  // namespace clutch::detail
