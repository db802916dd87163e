// The ipc layer's one interface to the layers above it (channel_state.hpp stays private): sending a message that
// the caller serialized itself. The app layer's messenger writes its envelopes as text, around a payload it
// copies as it is, instead of building a JSON value to serialize again.
//
//   if (detail::needs_escape(s)) ... quote it with Boost.JSON ...
//   detail::send_text(ch, R"({"cmd":"CLUTCH_msg","data":)" + payload + "}");   // returns like channel::send
#pragma once

#include <string_view>

#include "clutch/ipc.hpp"

namespace clutch::detail {

// A JSON text queued as one message (without its '\n'). Returns like channel::send.
bool send_text(channel& ch, std::string_view frame);
// Whether JSON needs an escape anywhere in s (a control character, '"' or '\\').
bool needs_escape(std::string_view s);

}  // namespace clutch::detail
