// The messenger in every role, and what an agent or app worker needs to take part: its role, its link to the
// master, its direct links, ready() and on_stop().
#include <signal.h>
#include <unistd.h>

#include <boost/json/object.hpp>
#include <cstdlib>
#include <stdexcept>

#include "app/messenger_state.hpp"
#include "app/protocol.hpp"
#include "common/completion.hpp"
#include "os/signals.hpp"

namespace clutch::app {

namespace json = boost::json;

namespace detail {

using ::clutch::detail::complete;

// The errors a message's fate can carry between processes, by name; any other is "undeliverable".
constexpr std::pair<errc, std::string_view> error_names[] = {
    {errc::queue_full, "queue_full"},         {errc::no_such_process, "no_such_process"},
    {errc::no_handler, "no_handler"},         {errc::request_failed, "request_failed"},
    {errc::channel_closed, "channel_closed"}, {errc::timed_out, "timed_out"},
};

std::string_view error_name(const error_code& ec) {
  if (!ec) return {};
  for (auto [e, name] : error_names)
    if (ec == e) return name;
  return "undeliverable";
}

error_code error_from_name(std::string_view name) {
  if (name.empty()) return {};
  for (auto [e, n] : error_names)
    if (n == name) return e;
  return errc::undeliverable;
}

namespace {

messenger* the_messenger = nullptr;  // never destroyed: static destructors run after main's io_context is gone

void finish_request(const std::shared_ptr<messenger_state>& m, std::int64_t id, error_code ec, json::value v) {
  auto it = m->requests.find(id);
  if (it == m->requests.end()) return;
  auto p = std::move(it->second);
  m->requests.erase(it);
  p->timer.cancel();
  complete(m->io, std::move(p->done), ec, std::move(v));
}

void maybe_finish(const std::shared_ptr<messenger_state>& m, std::int64_t id) {
  auto it = m->requests.find(id);
  if (it == m->requests.end()) return;
  auto& p = *it->second;
  if (p.expected >= 0 && p.replies.size() >= static_cast<std::size_t>(p.expected))
    finish_request(m, id, {}, std::move(p.replies));
}

std::shared_ptr<link> direct_for(messenger_state& m, const destination& to) {
  int pid = 0;
  if (to.what == destination::kind::agent && m.self == role::app) pid = m.agent_pid;
  else if (to.what == destination::kind::pid) pid = to.pid;
  if (pid == 0) return nullptr;
  auto it = m.direct.find(pid);
  return it != m.direct.end() && it->second->up() ? it->second : nullptr;
}

// A message of ours that nobody will take.
void fail(const std::shared_ptr<messenger_state>& m, const frame& f, error_code ec) {
  if (f.reply) return;  // a reply whose requester is gone: nobody waits for it
  ++m->stats.undelivered;
  if (f.req) finish_request(m, f.id, ec, json::value(ec.message()));
  else if (f.track) settle(m, f.id, ec);
}

void dispatch(const std::shared_ptr<messenger_state>& m, frame f) {
  if (m->route) return m->route(object_of(f));
  if (f.to.what == destination::kind::pid && f.to.pid == m->pid) {
    // To ourselves: handled on the next turn, as a message from elsewhere would be.
    asio::post(m->io, [m, f = std::move(f)] {
      deliver(m, object_of(f));
      if (f.track) settle(m, f.id, {});
    });
    return;
  }
  if (auto d = direct_for(*m, f.to)) {
    ++m->stats.sent_direct;
    return d->send(std::move(f));
  }
  if (m->up && m->up->up()) return m->up->send(std::move(f));
  fail(m, f, errc::channel_closed);
}

void send_reply(const std::shared_ptr<messenger_state>& m, int to, std::int64_t id, const json::value* data,
                error_code ec, std::string_view why) {
  json::object env{{"cmd", "CLUTCH_msg"}, {"to", to}, {"reply_to", id}, {"from", m->pid}, {"role", to_string(m->self)}};
  if (data) {
    env["data"] = *data;
  } else {
    env["error"] = error_name(ec);
    env["message"] = why.empty() ? std::string_view(ec.message()) : why;
  }
  dispatch(m, frame_of(env));
}

// A direct channel's messages that its peer never acknowledged: those for the agent go through the master,
// which holds them for the next agent; those for one pid cannot be delivered any more.
void reroute_lost(const std::shared_ptr<messenger_state>& m, std::deque<frame> lost) {
  for (auto& f : lost) {
    if (f.to.what == destination::kind::agent && m->up && m->up->up()) m->up->send(std::move(f));
    else fail(m, f, errc::no_such_process);
  }
}

void add_direct(const std::shared_ptr<messenger_state>& m, const json::object& msg, handle h) {
  const int peer = static_cast<int>(int_field(msg, "pid"));
  if (peer <= 0 || h.what() != handle::kind::unix_socket) return;
  auto l = link::make(m->io, channel(m->io, h.release()));
  std::weak_ptr<messenger_state> wm = m;
  l->on_envelope = [wm](const json::object& env) {
    if (auto m = wm.lock()) deliver(m, env);
  };
  l->on_acked = [wm](const frame& f) {  // a direct channel's receiver is the last stop: this is delivery
    auto m = wm.lock();
    if (m && f.track) settle(m, f.id, {});
  };
  l->on_lost = [wm, peer, weak_l = std::weak_ptr(l)](std::deque<frame> lost) {
    auto m = wm.lock();
    if (!m) return;
    if (auto it = m->direct.find(peer); it != m->direct.end() && it->second == weak_l.lock()) m->direct.erase(it);
    reroute_lost(m, std::move(lost));
    m->on_peer_lost.call(peer);
  };
  m->direct[peer] = l;
  if (role_of(string_field(msg, "role")) == role::agent) set_agent(m, peer);
}

// Asked to stop: the handlers run, then the direct channels close (after what is queued on them), so that
// nothing of the messenger's keeps io.run() going.
void stopping(const std::shared_ptr<messenger_state>& m) {
  if (std::exchange(m->stopping, true)) return;
  m->stop_handlers.call();
  for (auto direct = m->direct; auto& [pid, l] : direct) l->close();
}

void on_control(const std::shared_ptr<messenger_state>& m, const json::object& msg, handle h) {
  const std::string_view cmd = command_of(msg);
  if (cmd == "CLUTCH_done") {
    settle(m, int_field(msg, "id"), error_from_name(string_field(msg, "error")));
  } else if (cmd == "CLUTCH_expect") {
    expect(m, int_field(msg, "id"), static_cast<int>(int_field(msg, "count")));
  } else if (cmd == "CLUTCH_agent") {
    set_agent(m, static_cast<int>(int_field(msg, "pid")));
  } else if (cmd == "CLUTCH_peer") {
    add_direct(m, msg, std::move(h));
  } else if (cmd == "CLUTCH_stop" && m->self == role::agent) {
    stopping(m);
    m->up->close();
  }
}

// Opens this agent's or app worker's link to the master.
std::shared_ptr<messenger_state> open_role(asio::io_context& io, role r) {
  channel ch;
  if (r == role::app) {
    ch = cluster::to_primary(io);
  } else {
    auto pc = parent_channel(io);
    if (!pc) throw std::logic_error("clutch::app: an agent without a channel to its master");
    ch = *pc;
  }
  auto m = std::make_shared<messenger_state>(io, r, ::getpid());
  m->up = link::make(io, ch);
  std::weak_ptr<messenger_state> wm = m;
  if (r == role::app)
    cluster::on_disconnect(io, [wm] {
      if (auto m = wm.lock()) stopping(m);
    });
  m->up->on_envelope = [wm](const json::object& env) {
    if (auto m = wm.lock()) deliver(m, env);
  };
  m->up->on_control = [wm](const json::object& msg, handle h) {
    if (auto m = wm.lock()) on_control(m, msg, std::move(h));
  };
  m->up->on_lost = [wm](std::deque<frame> lost) {
    auto m = wm.lock();
    if (!m) return;
    for (auto& f : lost) fail(m, f, errc::channel_closed);
    // The master is gone, or closed the channel without asking us to stop: nothing of ours outlives it.
    if (m->self == role::agent && !m->stopping) os::end_group_and_exit();
  };
  return m;
}

}  // namespace

struct responder_state {
  std::weak_ptr<messenger_state> m;
  int to = 0;
  std::int64_t id = 0;
  bool answered = false;
  void answer(const json::value* data, error_code ec, std::string_view why) {
    if (std::exchange(answered, true)) return;
    if (auto ms = m.lock()) send_reply(ms, to, id, data, ec, why);
  }
  ~responder_state() { answer(nullptr, errc::request_failed, "the handler did not answer"); }
};

void deliver(const std::shared_ptr<messenger_state>& m, const json::object& env) {
  if (const auto* r = env.if_contains("reply_to")) {
    const std::int64_t id = r->is_int64() ? r->get_int64() : 0;
    auto it = m->requests.find(id);
    if (it == m->requests.end()) return;  // timed out already
    auto& p = *it->second;
    const error_code ec = error_from_name(string_field(env, "error"));
    if (p.several) {
      json::object one{{"pid", int_field(env, "from")}};
      if (ec) one["error"] = string_field(env, "message");
      else one["data"] = env.contains("data") ? env.at("data") : json::value();
      p.replies.push_back(std::move(one));
      return maybe_finish(m, id);
    }
    if (ec) return finish_request(m, id, ec, json::value(string_field(env, "message")));
    return finish_request(m, id, {}, env.contains("data") ? env.at("data") : json::value());
  }

  ++m->stats.received;
  const sender from{role_of(string_field(env, "role")), static_cast<int>(int_field(env, "from"))};
  const std::string_view action = string_field(env, "action");
  static const json::value null_value;
  const json::value& data = env.contains("data") ? env.at("data") : null_value;
  if (env.contains("req")) {
    const std::int64_t id = int_field(env, "id");
    auto it = m->request_handlers.find(action);
    if (it == m->request_handlers.end()) {
      ++m->stats.unhandled;
      return send_reply(m, from.pid, id, nullptr, errc::no_handler,
                        "no request handler for '" + std::string(action) + "'");
    }
    auto h = it->second;  // a handler may register others
    auto rs = std::make_shared<responder_state>();
    rs->m = m;
    rs->to = from.pid;
    rs->id = id;
    h(data, from, responder(std::move(rs)));
    return;
  }
  auto it = m->handlers.find(action);
  if (it == m->handlers.end() || it->second.empty()) {
    ++m->stats.unhandled;
    return;
  }
  it->second.call(data, from);
}

void settle(const std::shared_ptr<messenger_state>& m, std::int64_t id, error_code ec) {
  auto it = m->tracked.find(id);
  if (it == m->tracked.end()) return;
  auto h = std::move(it->second);
  m->tracked.erase(it);
  if (ec) ++m->stats.undelivered;
  complete(m->io, std::move(h), ec);
}

void expect(const std::shared_ptr<messenger_state>& m, std::int64_t id, int count) {
  auto it = m->requests.find(id);
  if (it == m->requests.end()) return;
  it->second->expected = count;
  maybe_finish(m, id);
}

void set_agent(const std::shared_ptr<messenger_state>& m, int pid) {
  if (pid <= 0 || pid == m->agent_pid) return;
  m->agent_pid = pid;
  m->on_agent.call(pid);
}

messenger& install(std::shared_ptr<messenger_state> m) {
  if (!the_messenger) the_messenger = new messenger(std::move(m));
  else *the_messenger = messenger(std::move(m));
  return *the_messenger;
}

void send(const std::shared_ptr<messenger_state>& m, const destination& to, std::string_view action,
          const json::value& data, done_handler h) {
  ++m->stats.sent;
  const std::int64_t id = h ? m->next_id++ : 0;
  if (h) m->tracked.emplace(id, std::move(h));
  dispatch(m, make_frame(to, action, data, m->pid, m->self, id, id != 0, false));
}

void request(const std::shared_ptr<messenger_state>& m, const destination& to, std::string_view action,
             const json::value& data, std::chrono::milliseconds timeout, reply_handler h) {
  const std::int64_t id = m->next_id++;
  ++m->stats.sent;
  auto p = std::make_unique<pending_request>(std::move(h), m->io);
  p->several = to.what == destination::kind::app || to.what == destination::kind::all;
  p->expected = p->several ? -1 : 1;
  p->timer.expires_after(timeout);
  p->timer.async_wait([wm = std::weak_ptr(m), id](error_code ec) {
    auto m = wm.lock();
    if (ec || !m) return;
    ++m->stats.undelivered;
    finish_request(m, id, errc::timed_out, json::value());
  });
  m->requests.emplace(id, std::move(p));
  dispatch(m, make_frame(to, action, data, m->pid, m->self, id, false, true));
}

}  // namespace detail

// ---- roles ----

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::master: return "master";
    case role::agent: return "agent";
    case role::app: return "app";
    case role::parent: return "parent";
  }
  return "master";
}

role current_role() {
  static const role me = [] {
    role r = role::master;
    if (const char* v = std::getenv(std::string(detail::role_variable).c_str())) {
      r = detail::role_of(v);
      if (r != role::agent && r != role::app) r = role::master;
    }
    ::unsetenv(std::string(detail::role_variable).c_str());
    // The master gives each role this signal for its own death (PR_SET_PDEATHSIG): end the role's whole group.
    if (r != role::master) os::end_group_on(detail::death_signal());
    return r;
  }();
  return me;
}

// ---- messenger ----

messenger& messenger::of(asio::io_context& io) {
  if (detail::the_messenger) {
    if (&detail::the_messenger->state()->io != &io)
      throw std::logic_error("clutch::app::messenger: a process has one io_context");
    return *detail::the_messenger;
  }
  const role r = current_role();
  if (r == role::master)
    throw std::logic_error("clutch::app::messenger: in the master, construct clutch::app::master first");
  return detail::install(detail::open_role(io, r));
}

role messenger::self() const noexcept { return state_->self; }
int messenger::pid() const noexcept { return state_->pid; }
int messenger::agent_pid() const noexcept { return state_->agent_pid; }
messenger_stats messenger::stats() const noexcept { return state_->stats; }

void messenger::on(std::string action, message_handler h) { state_->handlers[std::move(action)].add(std::move(h)); }
void messenger::on_request(std::string action, request_handler h) {
  state_->request_handlers[std::move(action)] = std::move(h);
}
void messenger::on_agent(std::function<void(int)> h) { state_->on_agent.add(std::move(h)); }

void responder::operator()(json::value reply) const {
  if (state_) state_->answer(&reply, {}, {});
}
void responder::fail(std::string_view why) const {
  if (state_) state_->answer(nullptr, errc::request_failed, why);
}

void ready(asio::io_context& io) {
  auto& m = messenger::of(io);
  if (m.self() == role::app) return cluster::ready(io);
  m.state()->up->chan().send(json::object{{"cmd", "CLUTCH_ready"}});
}

void on_stop(asio::io_context& io, std::function<void()> h) {
  auto& m = messenger::of(io);
  m.state()->stop_handlers.add(std::move(h));
}

}  // namespace clutch::app
