// The channel's framing, without any I/O: bytes in, one JSON value per '\n'-terminated line out.
//
//   frame_decoder d{64 << 20};
//   auto room = d.prepare(65536);            // read into room.data(), up to room.size() bytes
//   d.commit(n);
//   while (auto line = d.next_line(ec)) { boost::json::value v; if (auto e = parse_message(*line, v)) ...; }
//
// Cost is linear in the bytes received however the lines are split across reads: each byte is scanned for '\n'
// once, and consumed bytes are dropped only when that moves less than what was consumed (amortised O(1) per byte).
// Node's own decoder once concatenated strings per read and went quadratic on large messages.
#pragma once

#include <boost/json/parser.hpp>
#include <boost/json/value.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "clutch/error.hpp"

namespace clutch::detail {

class frame_decoder {
 public:
  explicit frame_decoder(std::size_t max_message) : max_message_(max_message) {}

  std::span<char> prepare(std::size_t n);
  void commit(std::size_t n) { size_ += n; }

  // The next complete line (without its '\n'), valid until the next call; nullopt when none is complete. ec is set
  // (errc::message_too_large) when an incomplete line is already longer than the limit; the decoder is then spent.
  std::optional<std::string_view> next_line(error_code& ec);

  // Bytes held that do not yet form a complete line.
  std::size_t pending() const noexcept { return size_ - start_; }
  // Bytes copied to compact the buffer so far: the test of the linear-cost promise above.
  std::size_t bytes_moved() const noexcept { return moved_; }

 private:
  // Not a std::string: growing one zero-fills it, and a channel's first read (256 KiB of room) would then take
  // that much resident memory at once, however short its messages; untouched room costs nothing.
  std::unique_ptr<char[]> buf_;
  std::size_t capacity_ = 0;
  std::size_t start_ = 0;  // first byte not yet returned
  std::size_t scan_ = 0;   // first byte not yet searched for '\n'
  std::size_t size_ = 0;   // bytes of buf_ in use
  std::size_t max_message_;
  std::size_t moved_ = 0;
};

// Parses one line as a JSON value. Errors: errc::invalid_message. A parser is reused between calls, which keeps
// its scratch memory. A lone UTF-16 surrogate escape (which Node's JSON.stringify writes for a broken string)
// arrives as U+FFFD.
class message_parser {
 public:
  // max_depth: how deeply arrays and objects may nest (Boost's default of 32 refuses messages Node accepts).
  explicit message_parser(std::size_t max_depth = 1024);
  error_code parse(std::string_view line, boost::json::value& out);

 private:
  boost::json::parser parser_;
  std::string scratch_;
};

}  // namespace clutch::detail
