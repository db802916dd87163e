// The messages between a primary and its workers. They travel on the worker's Node channel with the reserved
// CLUTCH_ prefix, so the application's own on_message never sees them.
//
//   worker → primary   CLUTCH_online                                the worker opened its channel
//                      CLUTCH_listen {seq, address, port, backlog}   share this endpoint with me
//                      CLUTCH_listening {address, port}             it now accepts there (after any listen)
//                      CLUTCH_ready                                 cluster::ready()
//                      CLUTCH_accepted {key, seq} / CLUTCH_refused {key, seq}   a round-robin hand-off, taken or not
//   primary → worker   CLUTCH_listen_reply {seq, errno} or {seq, address, port[, rr, key]} (+ the listening socket)
//                      CLUTCH_conn {key, seq} (+ the connection)    round-robin hand-off
//                      CLUTCH_disconnect                            close your listeners and finish
// A worker also inherits, at exec, the listeners the primary already has (CLUTCH_LISTENERS below): a listen() that
// finds its endpoint there needs no CLUTCH_listen round trip, which is what lets a replacement serve quickly.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>

#include "common/json_fields.hpp"

namespace clutch::cluster::detail {

inline constexpr std::string_view worker_id_variable = "CLUTCH_WORKER_ID";
// The listening sockets a worker inherits: [{key, fd, address, port}], key being the endpoint asked for.
inline constexpr std::string_view listeners_variable = "CLUTCH_LISTENERS";

// What a listener is known by, as Node's primary keys a queryServer: the endpoint asked for and, for port 0, the
// index of the call among this worker's listen()s on that endpoint. Two listen(0) calls of one worker are then
// two servers on two ports, and the Nth call of every worker shares the Nth port.
inline std::string key_of(const boost::asio::ip::tcp::endpoint& asked, std::int64_t index = 0) {
  std::string key = asked.address().to_string();
  key.append(":").append(std::to_string(asked.port()));
  if (asked.port() == 0) key.append("#").append(std::to_string(index));
  return key;
}

using ::clutch::detail::command_of;
using ::clutch::detail::int_field;
using ::clutch::detail::string_field;

// {address, port} ↔ endpoint. A bad address gives false, never an exception.
inline bool endpoint_from(const boost::json::value& msg, boost::asio::ip::tcp::endpoint& out) {
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(std::string(string_field(msg, "address")), ec);
  auto port = int_field(msg, "port", -1);
  if (ec || port < 0 || port > 65535) return false;
  out = {addr, static_cast<unsigned short>(port)};
  return true;
}

inline void put_endpoint(boost::json::object& o, const boost::asio::ip::tcp::endpoint& e) {
  o["address"] = e.address().to_string();
  o["port"] = e.port();
}

}  // namespace clutch::cluster::detail
