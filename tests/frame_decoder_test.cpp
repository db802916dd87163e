// The channel's framing on its own: lines split anyhow, limits, bad JSON, and the linear-cost promise.
#include <gtest/gtest.h>

#include <random>

#include "ipc/frame_decoder.hpp"

using clutch::detail::frame_decoder;
using clutch::detail::message_parser;

namespace {

// Feeds text to the decoder in pieces of the given sizes (cycled), collecting every complete line.
std::vector<std::string> feed(frame_decoder& d, std::string_view text, const std::vector<std::size_t>& pieces,
                              clutch::error_code& ec) {
  std::vector<std::string> lines;
  std::size_t i = 0, p = 0;
  while (i < text.size()) {
    std::size_t n = std::min(pieces[p++ % pieces.size()], text.size() - i);
    auto room = d.prepare(n);
    std::copy_n(text.data() + i, n, room.data());
    d.commit(n);
    i += n;
    while (auto line = d.next_line(ec)) lines.emplace_back(*line);
    if (ec) break;
  }
  return lines;
}

}  // namespace

TEST(FrameDecoder, LinesSplitAcrossReadsInAnyWayAreReassembled) {
  std::string text;
  std::vector<std::string> expected;
  for (int i = 0; i < 200; ++i) {
    expected.push_back(R"({"seq":)" + std::to_string(i) + R"(,"text":")" + std::string(i * 7 % 300, 'a') + "\"}");
    text += expected.back() + "\n";
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::size_t> pieces;
    for (int k = 0; k < 16; ++k) pieces.push_back(1 + rng() % (round < 10 ? 3 : 700));
    frame_decoder d(1 << 20);
    clutch::error_code ec;
    EXPECT_EQ(feed(d, text, pieces, ec), expected) << "round " << round;
    EXPECT_FALSE(ec);
    EXPECT_EQ(d.pending(), 0u);
  }
}

TEST(FrameDecoder, AnUnfinishedLineLongerThanTheLimitIsAnError) {
  frame_decoder d(1000);
  clutch::error_code ec;
  feed(d, std::string(1001, 'x'), {100}, ec);
  EXPECT_EQ(ec, clutch::errc::message_too_large);
}

TEST(FrameDecoder, AFinishedLineLongerThanTheLimitIsAnError) {
  frame_decoder d(10);
  clutch::error_code ec;
  auto lines = feed(d, "\"short\"\n\"much too long\"\n", {64}, ec);
  EXPECT_EQ(lines, std::vector<std::string>{"\"short\""});
  EXPECT_EQ(ec, clutch::errc::message_too_large);
}

TEST(FrameDecoder, ALargeMessageCostsLinearCopying) {
  // 100 MiB in one line, arriving 64 KiB at a time: the buffer is compacted only when that copies no more than
  // was consumed, so the bytes moved stay a small multiple of the input (a quadratic decoder would move
  // terabytes here).
  const std::size_t total = 100u << 20;
  frame_decoder d(128u << 20);
  std::string chunk(64 * 1024, 'q');
  clutch::error_code ec;
  std::size_t lines = 0;
  for (std::size_t sent = 0; sent < total; sent += chunk.size()) {
    if (sent + chunk.size() >= total) chunk.back() = '\n';
    auto room = d.prepare(chunk.size());
    std::copy(chunk.begin(), chunk.end(), room.data());
    d.commit(chunk.size());
    while (d.next_line(ec)) ++lines;
  }
  EXPECT_FALSE(ec);
  EXPECT_EQ(lines, 1u);
  EXPECT_LE(d.bytes_moved(), total);
}

TEST(MessageParser, AcceptsEveryJsonValueAndRejectsTheRest) {
  message_parser p;
  boost::json::value v;
  EXPECT_FALSE(p.parse(R"("你好啊，我的子进程！")", v));
  EXPECT_EQ(v.as_string(), "你好啊，我的子进程！");
  EXPECT_FALSE(p.parse("42", v));
  EXPECT_EQ(v.as_int64(), 42);
  EXPECT_FALSE(p.parse(R"({"a":[1,true,null]})", v));
  EXPECT_TRUE(v.is_object());
  EXPECT_EQ(p.parse("not json", v), clutch::errc::invalid_message);
  EXPECT_EQ(p.parse(R"({"a":1} trailing)", v), clutch::errc::invalid_message);
  EXPECT_EQ(p.parse("", v), clutch::errc::invalid_message);
}

TEST(MessageParser, LoneSurrogatesFromJavaScriptBecomeReplacementCharacters) {
  message_parser p;
  boost::json::value v;
  // JSON.stringify('a\ud800b') and a lone low surrogate; a proper pair (an emoji) stays itself.
  ASSERT_FALSE(p.parse(R"(["a\ud800b","\udc00","\ud83d\ude00","\\ud800"])", v));
  const auto& a = v.as_array();
  EXPECT_EQ(a[0].as_string(), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(a[1].as_string(), "\xEF\xBF\xBD");
  EXPECT_EQ(a[2].as_string(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(a[3].as_string(), "\\ud800") << "an escaped backslash followed by text is not an escape";
  EXPECT_EQ(p.parse(R"("\ud800" trailing)", v), clutch::errc::invalid_message);
}
