// libFuzzer target: arbitrary bytes into the channel's frame decoder and message parser, split into reads at
// places the input itself chooses. Anything but a clean error is a finding.
//
//   make fuzz        (builds with clang, runs for FUZZ_SECONDS, default 60)
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ipc/frame_decoder.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // The first byte sets the read size (1..256), the second the limit (tiny limits exercise message_too_large).
  const std::size_t piece = static_cast<std::size_t>(data[0]) + 1;
  const std::size_t limit = data[1] < 128 ? static_cast<std::size_t>(data[1]) * 8 + 1 : 64u << 20;
  data += 2;
  size -= 2;

  clutch::detail::frame_decoder decoder(limit);
  clutch::detail::message_parser parser;
  std::size_t consumed = 0;
  while (consumed < size) {
    std::size_t n = std::min(piece, size - consumed);
    auto room = decoder.prepare(n);
    std::memcpy(room.data(), data + consumed, n);
    decoder.commit(n);
    consumed += n;
    clutch::error_code ec;
    while (auto line = decoder.next_line(ec)) {
      if (line->size() > limit) __builtin_trap();  // the limit must hold for every line handed out
      boost::json::value v;
      if (!parser.parse(*line, v) && line->find('\n') != std::string_view::npos) __builtin_trap();
    }
    if (ec) return 0;  // a channel closes here; the decoder is not used again
  }
  return 0;
}
