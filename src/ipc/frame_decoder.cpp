#include "ipc/frame_decoder.hpp"

#include <cstring>

namespace clutch::detail {

std::span<char> frame_decoder::prepare(std::size_t n) {
  // Drop what was consumed when that is cheap relative to it (the rest is at most as large), so that a long line
  // arriving in many reads is not copied again for each one.
  if (start_ > 0 && (start_ == size_ || size_ - start_ <= start_)) {
    std::memmove(buf_.get(), buf_.get() + start_, size_ - start_);
    moved_ += size_ - start_;
    size_ -= start_;
    scan_ -= start_;
    start_ = 0;
  }
  if (capacity_ < size_ + n) {
    const std::size_t grown = std::max(size_ + n, capacity_ * 2);
    std::unique_ptr<char[]> bigger(new char[grown]);  // default-initialized: its pages stay untouched until used
    if (size_ > 0) std::memcpy(bigger.get(), buf_.get(), size_);
    buf_ = std::move(bigger);
    capacity_ = grown;
  }
  return {buf_.get() + size_, n};
}

std::optional<std::string_view> frame_decoder::next_line(error_code& ec) {
  ec.clear();
  if (scan_ < size_) {
    const void* nl = std::memchr(buf_.get() + scan_, '\n', size_ - scan_);
    if (nl != nullptr) {
      std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - buf_.get());
      std::string_view line(buf_.get() + start_, end - start_);
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

namespace {

int hex4(std::string_view s, std::size_t at) {
  if (at + 4 > s.size()) return -1;
  int v = 0;
  for (std::size_t i = at; i < at + 4; ++i) {
    const char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= c - '0';
    else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
    else return -1;
  }
  return v;
}

// JavaScript strings may hold a lone UTF-16 surrogate, and JSON.stringify writes it as \ud800; UTF-8 cannot
// carry one and Boost.JSON 1.81 refuses it. Each lone surrogate escape becomes \ufffd, the replacement character,
// which is what a UTF-8 decoder makes of one. Pairs stay as they are. Returns false if there was none.
bool replace_lone_surrogates(std::string_view line, std::string& out) {
  out.clear();
  bool changed = false;
  std::size_t i = 0;
  while (i < line.size()) {
    if (line[i] != '\\' || i + 1 >= line.size()) {
      out.push_back(line[i++]);
      continue;
    }
    if (line[i + 1] != 'u') {  // another escape: copy both characters, so "\\\\ud800" stays text
      out.append(line.substr(i, 2));
      i += 2;
      continue;
    }
    const int unit = hex4(line, i + 2);
    const bool high = unit >= 0xD800 && unit <= 0xDBFF, low = unit >= 0xDC00 && unit <= 0xDFFF;
    if (high && i + 12 <= line.size() && line[i + 6] == '\\' && line[i + 7] == 'u') {
      const int next = hex4(line, i + 8);
      if (next >= 0xDC00 && next <= 0xDFFF) {  // a proper pair
        out.append(line.substr(i, 12));
        i += 12;
        continue;
      }
    }
    if (high || low) {
      out.append("\\ufffd");
      i += 6;
      changed = true;
      continue;
    }
    out.append(line.substr(i, 2));
    i += 2;
  }
  return changed;
}

}  // namespace

error_code message_parser::parse(std::string_view line, boost::json::value& out) {
  boost::system::error_code ec;
  parser_.reset();
  parser_.write(line.data(), line.size(), ec);
  if (ec && line.find("\\u") != std::string_view::npos && replace_lone_surrogates(line, scratch_)) {
    parser_.reset();
    ec.clear();
    parser_.write(scratch_.data(), scratch_.size(), ec);
  }
  if (ec) return clutch::errc::invalid_message;
  out = parser_.release();
  return {};
}

}  // namespace clutch::detail
