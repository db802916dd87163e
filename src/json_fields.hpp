// Reading the fields of a JSON message that came from another process. A missing or mistyped field gives the
// fallback, never an exception: a peer's bad message must not crash us.
//
//   if (command_of(msg) == "CLUTCH_ack") acked(int_field(msg, "n"));
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <string_view>

namespace clutch::detail {

inline std::string_view string_field(const boost::json::object& o, std::string_view name) {
  if (const auto* v = o.if_contains(name); v && v->is_string()) return v->get_string();
  return {};
}
inline std::int64_t int_field(const boost::json::object& o, std::string_view name, std::int64_t fallback = 0) {
  if (const auto* v = o.if_contains(name); v && v->is_int64()) return v->get_int64();
  return fallback;
}
inline std::string_view command_of(const boost::json::object& o) { return string_field(o, "cmd"); }

// The same for a value that may not be an object.
inline std::string_view string_field(const boost::json::value& msg, std::string_view name) {
  const auto* o = msg.if_object();
  return o ? string_field(*o, name) : std::string_view{};
}
inline std::int64_t int_field(const boost::json::value& msg, std::string_view name, std::int64_t fallback = 0) {
  const auto* o = msg.if_object();
  return o ? int_field(*o, name, fallback) : fallback;
}
inline std::string_view command_of(const boost::json::value& msg) { return string_field(msg, "cmd"); }

// Any JSON number as a double (0 for anything else).
inline double number_of(const boost::json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return 0;
}

}  // namespace clutch::detail
