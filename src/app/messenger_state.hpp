// One process's messenger: its links (to the master; direct ones to the agent or to workers), its handlers, and
// what it waits for (tracked sends, requests).
//
// In the master there are no links here: `route` hands every message to the master's router (master.cpp), which
// delivers to the roles and, for the master's own pid, back to deliver() below.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "app/link.hpp"
#include "clutch/app.hpp"
#include "common/handler_list.hpp"

namespace clutch::app::detail {

struct pending_request {
  explicit pending_request(reply_handler h, asio::io_context& io) : done(std::move(h)), timer(io) {}
  reply_handler done;  // only ever move-constructed (Boost 1.81's move-assignment recurses)
  asio::steady_timer timer;
  int expected = 1;   // replies to wait for; -1 until the master says how many (CLUTCH_expect)
  bool several = false;
  boost::json::array replies;
};

struct messenger_state : std::enable_shared_from_this<messenger_state> {
  messenger_state(asio::io_context& io, role self, int pid) : io(io), self(self), pid(pid) {}

  asio::io_context& io;
  role self;
  int pid;
  int agent_pid = 0;
  std::shared_ptr<link> up;                     // agent, app: the channel to the master
  std::map<int, std::shared_ptr<link>> direct;  // agent: worker pid → link; app: agent pid → link
  std::function<void(boost::json::object env)> route;  // master only
  bool stopping = false;

  std::map<std::string, ::clutch::detail::handler_list<const boost::json::value&, const sender&>, std::less<>>
      handlers;
  std::map<std::string, messenger::request_handler, std::less<>> request_handlers;
  ::clutch::detail::handler_list<int> on_agent;
  ::clutch::detail::handler_list<> stop_handlers;
  ::clutch::detail::handler_list<int> on_peer_lost;  // a direct channel closed (leader drops subscribers)

  std::int64_t next_id = 1;
  std::map<std::int64_t, done_handler> tracked;
  std::map<std::int64_t, std::unique_ptr<pending_request>> requests;
  messenger_stats stats;
};

// messenger.cpp
// A message (or reply) for this process: runs its handlers, or settles a request.
void deliver(const std::shared_ptr<messenger_state>& m, const boost::json::object& env);
// A tracked message of ours is settled (master's CLUTCH_done, or a direct acknowledgement).
void settle(const std::shared_ptr<messenger_state>& m, std::int64_t id, error_code ec);
// The master tells a requester how many replies a request to several will get.
void expect(const std::shared_ptr<messenger_state>& m, std::int64_t id, int count);
void set_agent(const std::shared_ptr<messenger_state>& m, int pid);
// The process-wide messenger; the master installs its own.
messenger& install(std::shared_ptr<messenger_state> m);

}  // namespace clutch::app::detail
