// Reading the fields of a JSON message that came from another process. A missing or mistyped field gives the
// fallback, never an exception: a peer's bad message must not crash us.
//
//   if (command_of(msg) == "CLUTCH_ack") acked(int_field(msg, "n"));
//
// And writing JSON for people and scrapers: json_text(v) is json::serialize(v) with numbers as number_text writes
// them, since Boost.JSON writes every double with an exponent (0.5 as 5E-1) and iostreams write large integers
// that passed through a double with one (1.23457e+08).
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

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

// A JSON number as text, never with an exponent: an integer as an integer, a double in the shortest fixed-point
// form that reads back as the same double (0.00001, 12, 0.07). "0" for anything else, NaN and infinities too,
// which JSON cannot hold.
inline std::string number_text(const boost::json::value& v) {
  char buf[400];  // the longest fixed-point double: 309 digits before the point, or 0.(323 zeros)… after it
  std::to_chars_result r{buf, {}};
  if (v.is_int64()) r = std::to_chars(buf, buf + sizeof buf, v.get_int64());
  else if (v.is_uint64()) r = std::to_chars(buf, buf + sizeof buf, v.get_uint64());
  else if (v.is_double() && std::isfinite(v.get_double()))
    r = std::to_chars(buf, buf + sizeof buf, v.get_double() == 0 ? 0.0 : v.get_double(), std::chars_format::fixed);
  if (r.ec != std::errc{} || r.ptr == buf) return "0";
  return std::string(buf, r.ptr);
}

inline void append_json_text(std::string& out, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& member : v.get_object()) {
        if (!std::exchange(first, false)) out += ',';
        out += boost::json::serialize(member.key());
        out += ':';
        append_json_text(out, member.value());
      }
      out += '}';
      break;
    }
    case boost::json::kind::array: {
      out += '[';
      bool first = true;
      for (const auto& item : v.get_array()) {
        if (!std::exchange(first, false)) out += ',';
        append_json_text(out, item);
      }
      out += ']';
      break;
    }
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_:
      out += number_text(v);
      break;
    default:  // strings, booleans, null
      out += boost::json::serialize(v);
  }
}

inline std::string json_text(const boost::json::value& v) {
  std::string out;
  append_json_text(out, v);
  return out;
}

}  // namespace clutch::detail
