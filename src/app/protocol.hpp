// The messenger's messages. They travel with the reserved CLUTCH_ prefix on the channels between the master and
// each role (the Node channel the role was forked with) and on the direct agent↔worker socketpairs.
//
//   CLUTCH_msg    {to, action, data, from, role[, id, track, req]}  a message; to is "app", "agent", "all",
//                 "random", "parent" or a pid. id with track: the sender wants CLUTCH_done; with req: a reply.
//   CLUTCH_msg    {to: pid, reply_to, data | error, message, from, role}   a reply to request id reply_to
//   CLUTCH_ack    {n}               the receiver has handled the first n CLUTCH_msg of this link
//   CLUTCH_done   {id[, error]}     master → sender: every copy of tracked message id was delivered, or not
//   CLUTCH_expect {id, count}       master → requester: a request to several went to count receivers
//   CLUTCH_ready                    role → master (in an app worker, cluster::ready sends it)
//   CLUTCH_agent  {pid}             master → workers: the agent now ready
//   CLUTCH_peer   {pid, role, id}   master → agent and worker, with one end of their direct socketpair
//   CLUTCH_stop                     master → agent: finish and exit (app workers get the cluster's disconnect)
#pragma once

#include <signal.h>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>

#include "clutch/app.hpp"
#include "common/json_fields.hpp"

namespace clutch::app::detail {

inline constexpr std::string_view role_variable = "CLUTCH_APP_ROLE";
// What a role gets when its master dies (PR_SET_PDEATHSIG); the role ends its whole process group on it. A
// real-time signal, so that no program's own handling of SIGTERM or SIGHUP gets in the way.
inline int death_signal() { return SIGRTMIN + 4; }

using ::clutch::detail::command_of;
using ::clutch::detail::int_field;
using ::clutch::detail::string_field;

inline boost::json::value to_json(const destination& d) {
  switch (d.what) {
    case destination::kind::app: return "app";
    case destination::kind::agent: return "agent";
    case destination::kind::all: return "all";
    case destination::kind::random: return "random";
    case destination::kind::parent: return "parent";
    case destination::kind::pid: break;
  }
  return d.pid;
}

// A bad "to" gives false, never an exception.
inline bool destination_of(const boost::json::object& env, destination& out) {
  const auto* t = env.if_contains("to");
  if (!t) return false;
  if (t->is_int64()) {
    out = destination::process(static_cast<int>(t->get_int64()));
    return out.pid > 0;
  }
  if (!t->is_string()) return false;
  const std::string_view s = t->get_string();
  if (s == "app") out = destination::app();
  else if (s == "agent") out = destination::agent();
  else if (s == "all") out = destination::all();
  else if (s == "random") out = destination::random();
  else if (s == "parent") out = destination::parent();
  else return false;
  return true;
}

inline role role_of(std::string_view s) {
  if (s == "agent") return role::agent;
  if (s == "app") return role::app;
  if (s == "parent") return role::parent;
  return role::master;
}

// Errors cross process boundaries by name.
std::string_view error_name(const error_code& ec);
error_code error_from_name(std::string_view name);

}  // namespace clutch::app::detail
