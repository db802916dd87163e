// Node's cluster protocol, served to a node_cluster engine's workers as Node's own primary serves it
// (lib/internal/cluster/primary.js): the worker's net module sends {cmd: "NODE_CLUSTER", act: "queryServer", …}
// for each listen(), and gets back {ack: seq, errno, key, data} with a listening socket as Node's "net.Native"
// handle, on which it calls listen() itself. Which socket:
//   - an address the app's `listen` names (by port, or a Unix path, or LISTEN_FDS's fd): the worker's own member
//     of that steered group (or the shared socket), the one it also has at fd 3…;
//   - any other: bound on the first request, and shared by every worker of the app the same way (a steered group
//     for TCP, so reloads keep their guarantees; listen(0)'s Nth call of every worker shares one port).
// A bind error goes back as Node's errno (−errno), so the app sees the error Node would give it.
// Other acts: listening (readiness for ready = listen), close (a server closed: no new connections for it there),
// exitedAfterDisconnect (acked). Messages that are not cluster-internal are the app's: 'ready' is readiness for
// ready = message, and the rest are ignored. Whatever a worker sends, the harm is its own: a message not
// understood is logged once and dropped, and at most max_servers servers are made for it.
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>

#include "common/json_fields.hpp"
#include "supervisor/accepting.hpp"
#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

namespace json = boost::json;
using ::clutch::detail::int_field;
using ::clutch::detail::string_field;

namespace {

constexpr std::size_t max_servers = 64;  // listen()s per worker: a flood past this gets EMFILE
// Addresses the workers of one app may have clutch bind in all (a worker that keeps asking for new ones and
// crashes would otherwise add 64 with each restart).
constexpr std::size_t max_app_servers = 256;
// After a stopping worker's channel closes (its servers are closed), how long it has to exit by itself.
constexpr auto exit_grace = std::chrono::milliseconds(500);

// A field as JavaScript's template string writes it, for Node's key: null, undefined (absent), or its text.
std::string js_text(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (!v) return "undefined";
  if (v->is_string()) return std::string(v->get_string());
  return json::serialize(*v);
}

void say_once(engine_state& e, worker& w, const std::string& what) {
  if (std::exchange(w.protocol_error, true)) return;
  e.say("clutch: " + who(w) + ": " + what + " (ignored; said once)");
}

// A listening socket goes as Node's primary sends it: the bare handle ("net.Native"), which the worker's net
// then listens on.
void send_cluster(worker& w, json::object msg, handle h = {}) {
  if (!w.chan) return;
  msg["cmd"] = "NODE_CLUSTER";
  msg["seq"] = w.seq++;
  const char* type = h ? "net.Native" : nullptr;
  ::clutch::detail::channel_send(w.chan->state(), msg, std::move(h), {}, type);
}

void reply_error(worker& w, std::int64_t seq, const std::string& key, int err) {
  send_cluster(w, {{"errno", -err}, {"key", key}, {"ack", seq}, {"data", nullptr}});
}

// The node_server for a configured source (fd 3 + i), made on first use.
std::size_t server_of_source(engine_state& e, std::size_t i) {
  const std::string request = "source#" + std::to_string(i);
  if (auto it = e.node_keys.find(request); it != e.node_keys.end()) return it->second;
  e.node_servers.push_back({e.sources[i].steered, e.sources[i].index, nullptr, request});
  return e.node_keys[request] = e.node_servers.size() - 1;
}

// The configured source that answers a TCP request for at (port > 0): the same port, and the same address or
// either of them a wildcard (listen(3000) asks for none: Node's `::`).
std::optional<std::size_t> configured_tcp(engine_state& e, const asio::ip::tcp::endpoint& at) {
  for (std::size_t i = 0; i < e.sources.size(); ++i) {
    const auto& src = e.sources[i];
    if (!src.steered && e.listeners[src.index].spec.unix_socket) continue;
    const auto bound = src.steered ? e.groups[src.index].bound() : e.listeners[src.index].bound;
    if (bound.port() != at.port()) continue;
    if (bound.address() == at.address() || bound.address().is_unspecified() || at.address().is_unspecified())
      return server_of_source(e, i);
  }
  return std::nullopt;
}

std::optional<std::size_t> server_on_path(engine_state& e, const std::string& path) {
  for (std::size_t i = 0; i < e.sources.size(); ++i) {
    const auto& src = e.sources[i];
    if (!src.steered && e.listeners[src.index].spec.unix_socket && e.listeners[src.index].spec.path == path)
      return server_of_source(e, i);
  }
  for (std::size_t i = 0; i < e.node_servers.size(); ++i) {
    const auto& s = e.node_servers[i];
    if (!s.steered && e.listeners[s.index].spec.unix_socket && e.listeners[s.index].spec.path == path) return i;
  }
  return std::nullopt;
}

// A new server, bound now: a steered group for TCP (each worker its own member), one shared socket otherwise.
std::optional<std::size_t> bind_server(engine_state& e, const listen_spec& spec, const std::string& request,
                                       error_code& ec) {
  if (!spec.unix_socket && e.cfg.steer) {
    reuseport_group g(spec.tcp);
    const int first = g.add(ec);  // binds (and learns the port, for 0): the asking worker's member
    if (ec) return std::nullopt;
    e.spare_members[e.groups.size()] = first;
    e.say("clutch: listening on " + address_text(g.bound()) + " (asked for by a Node worker; a socket per worker)");
    e.groups.push_back(std::move(g));
    e.node_servers.push_back({true, e.groups.size() - 1, nullptr, request});
  } else {
    auto l = open_listener(spec, ec);
    if (ec) return std::nullopt;
    e.say("clutch: listening on " + address_text(l) + " (asked for by a Node worker)");
    e.listeners.push_back(std::move(l));
    e.node_servers.push_back({false, e.listeners.size() - 1, nullptr, request});
  }
  return e.node_keys[request] = e.node_servers.size() - 1;
}

void query_server(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, const json::object& m) {
  const std::int64_t seq = int_field(m, "seq", -1);
  if (seq < 0) return say_once(*e, *w, "a queryServer without seq");
  // As Node's primary: a worker on its way out gets no new server.
  if (w->asked_to_stop) return;
  // Node's primary's key for it: address, port, address type, fd and the call's index among this worker's.
  const std::string request =
      js_text(m, "address") + ":" + js_text(m, "port") + ":" + js_text(m, "addressType") + ":" + js_text(m, "fd");
  const std::string key = request + ":" + js_text(m, "index");
  if (w->servers.contains(key)) return reply_error(*w, seq, key, EADDRINUSE);
  if (w->servers.size() >= max_servers) return reply_error(*w, seq, key, EMFILE);
  const auto type = string_field(m, "addressType");
  if (type == "udp4" || type == "udp6") {
    say_once(*e, *w, "dgram sockets are not shared by clutch: bind them with exclusive: true");
    return reply_error(*w, seq, key, ENOTSUP);
  }
  const std::int64_t fd = int_field(m, "fd", -1);
  const std::int64_t port = int_field(m, "port", -1);
  const auto* address = m.if_contains("address");
  std::optional<std::size_t> server;
  error_code ec;
  if (fd >= 0) {
    // listen({fd}) in a worker: one of the sockets it was given at 3, 4, … (LISTEN_FDS).
    if (fd < 3 || static_cast<std::size_t>(fd - 3) >= e->sources.size()) return reply_error(*w, seq, key, EBADF);
    server = server_of_source(*e, static_cast<std::size_t>(fd - 3));
  } else if (port < 0) {
    // A Unix socket path (Node makes it absolute in the worker).
    if (!address || !address->is_string() || address->get_string().empty())
      return reply_error(*w, seq, key, EINVAL);
    const std::string path(address->get_string());
    server = server_on_path(*e, path);
    if (!server) {
      if (e->node_servers.size() >= max_app_servers) return reply_error(*w, seq, key, EMFILE);
      struct stat st {};
      if (::lstat(path.c_str(), &st) == 0) return reply_error(*w, seq, key, EADDRINUSE);  // as Node: never ours
      listen_spec spec;
      spec.unix_socket = true;
      spec.path = path;
      server = bind_server(*e, spec, request, ec);
    }
  } else {
    if (port > 65535) return reply_error(*w, seq, key, EINVAL);
    listen_spec spec;
    spec.tcp.port(static_cast<unsigned short>(port));
    const bool any_address = !address || !address->is_string() || address->get_string().empty();
    if (!any_address) {
      // Node resolves a host name in the worker: what comes here is an IP address, or a worker's mistake.
      auto a = asio::ip::make_address(std::string(address->get_string()), ec);
      if (ec) return reply_error(*w, seq, key, EINVAL);
      spec.tcp.address(a);
    } else {
      spec.tcp.address(asio::ip::address_v6::any());  // as Node: dual-stack ::, or 0.0.0.0 without IPv6
    }
    // Another worker's request for the same: its server. For port 0, the Nth call of every worker shares one.
    const std::string by = port > 0 ? request : key;
    if (port > 0) server = configured_tcp(*e, spec.tcp);
    if (auto it = e->node_keys.find(by); !server && it != e->node_keys.end()) server = it->second;
    if (!server) {
      if (e->node_servers.size() >= max_app_servers) return reply_error(*w, seq, key, EMFILE);
      server = bind_server(*e, spec, by, ec);
      if (ec && any_address) {
        ec = {};
        spec.tcp.address(asio::ip::address_v4::any());
        server = bind_server(*e, spec, by, ec);
      }
    }
  }
  if (!server) return reply_error(*w, seq, key, ec ? ec.value() : EINVAL);
  for (const auto& [other, s] : w->servers)
    if (s == *server) return reply_error(*w, seq, key, EADDRINUSE);  // its second server on that address

  if (fd < 0) w->asked_port = true;
  auto& s = e->node_servers[*server];
  int sock = -1;
  if (s.steered) {
    sock = member_for(e, w, s.index, ec);
    if (ec) return reply_error(*w, seq, key, ec.value());
    w->closed.erase(s.index);
  } else {
    sock = e->listeners[s.index].fd.get();
  }
  const int copy = ::fcntl(sock, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return reply_error(*w, seq, key, errno);
  for (const auto inode : socket_inodes({sock})) w->inodes.insert(inode);
  // The first worker's server data (an https server's TLS ticket keys) is every worker's, as in Node.
  if (const auto* data = m.if_contains("data"); s.data.is_null() && data) s.data = *data;
  w->servers[key] = *server;
  send_cluster(*w, {{"errno", 0}, {"key", key}, {"ack", seq}, {"data", s.data}}, handle(copy));
  if (s.steered) resteer(e);
}

void on_cluster_message(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w,
                        const json::object& m) {
  const auto* act = m.if_contains("act");
  if (!act || !act->is_string()) {
    // Acks of ours carry no act: Node's worker sends none, so nothing is waiting for one.
    if (!m.contains("ack")) say_once(*e, *w, "a cluster message without act");
    return;
  }
  const std::string_view what = act->get_string();
  if (what == "online") return;
  if (what == "queryServer") return query_server(e, w, m);
  if (what == "listening") {
    if (e->cfg.ready == ready_mode::listen) mark_ready(e, w);
    return;
  }
  if (what == "close") {
    // One of its servers closed (server.close()): no new connections for it there.
    auto it = w->servers.find(std::string(string_field(m, "key")));
    if (it == w->servers.end()) return;
    const auto& s = e->node_servers[it->second];
    if (s.steered) w->closed.insert(s.index);
    w->servers.erase(it);
    return resteer(e);
  }
  if (what == "exitedAfterDisconnect") {
    // cluster.worker.disconnect() or destroy() in the worker: it leaves; the ack lets it close its channel.
    for (const auto& [key, s] : w->servers)
      if (e->node_servers[s].steered) w->closed.insert(e->node_servers[s].index);
    send_cluster(*w, {{"ack", int_field(m, "seq", -1)}});
    return resteer(e);
  }
  say_once(*e, *w, "Node's cluster act '" + std::string(what) + "' is not one clutch serves");
}

}  // namespace

bool speaks_node(const worker& w) { return w.chan && w.chan->connected(); }

int member_for(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w, std::size_t g,
               error_code& ec) {
  if (w->socks.size() <= g) w->socks.resize(g + 1, -1);
  if (w->socks[g] >= 0) return w->socks[g];
  auto& s = e->slot_of(w->slot);
  const bool slots_own = e->pool.current(w->slot) == w->id;
  if (slots_own && g < s.socks.size() && s.socks[g] >= 0) {
    w->socks[g] = s.socks[g];
  } else if (auto spare = e->spare_members.extract(g)) {
    w->socks[g] = spare.mapped();  // the member that bound a new group
  } else {
    const int fd = e->groups[g].add(ec);
    if (ec) return -1;
    w->socks[g] = fd;
  }
  if (slots_own) s.socks = w->socks;  // a restarted worker takes them over
  return w->socks[g];
}

void serve_node(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  std::weak_ptr<engine_state> we = e;
  std::weak_ptr<worker> ww = w;
  w->chan->on_internal_message([we, ww](const json::value& msg, handle&) {
    auto e = we.lock();
    auto w = ww.lock();
    if (!e || !w || w->exited) return;
    const auto* o = msg.if_object();
    if (!o) return;
    if (const auto cmd = string_field(*o, "cmd"); cmd == "NODE_CLUSTER") {
      on_cluster_message(e, w, *o);
    } else if (cmd == "CLUTCH_NODE_PRELOAD") {  // node_preload.cjs
      if (const auto act = string_field(*o, "act"); act == "preloaded") {
        w->preloaded = true;
      } else if (act == "signal" && w->asked_to_stop) {
        send_stop_signal(e, w);  // the app handles the stop signal itself
      }
    }
  });
  w->chan->on_message([we, ww](const json::value& msg, handle) {
    auto e = we.lock();
    auto w = ww.lock();
    if (!e || !w || w->exited) return;
    // PM2's wait_ready: process.send('ready'). The app's other messages are for nobody here.
    if (msg.is_string() && msg.get_string() == "ready" && e->cfg.ready == ready_mode::message) mark_ready(e, w);
  });
  w->chan->on_disconnect([we, ww](error_code ec) {
    auto e = we.lock();
    auto w = ww.lock();
    if (!e || !w || w->exited) return;
    if (ec) say_once(*e, *w, "its channel broke: " + ec.message());
    // Asked to stop: its servers are closed and what was in flight is done. A worker with nothing else to do
    // now exits by itself, with code 0; the stop signal is for one that does not, soon. Otherwise it left by
    // itself (process.disconnect()), and Node's worker then exits: nothing new for it meanwhile.
    if (w->asked_to_stop) {
      if (w->grace_timer && w->grace_timer->expiry() > clock::now() + exit_grace) {
        w->grace_timer->expires_after(exit_grace);
        w->grace_timer->async_wait([we, ww](error_code ec) {
          auto e = we.lock();
          auto w = ww.lock();
          if (!ec && e && w) send_stop_signal(e, w);
        });
      }
      return;
    }
    for (std::size_t g = 0; g < w->socks.size(); ++g) w->closed.insert(g);
    resteer(e);
  });
}

namespace {

void signal_at_kill_timeout(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  w->grace_timer.emplace(e->io, e->cfg.kill_timeout);
  w->grace_timer->async_wait([we = std::weak_ptr(e), ww = std::weak_ptr(w)](error_code ec) {
    auto e = we.lock();
    auto w = ww.lock();
    if (!ec && e && w) send_stop_signal(e, w);
  });
}

}  // namespace

void stop_through_preload(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  error_code ec;
  const int sig = signal_spec(e->cfg.stop_signal).resolve(ec);
  const char* name = ec ? nullptr : ::sigabbrev_np(sig);
  if (!name) return send_stop_signal(e, w);
  w->chan->send(json::object{{"cmd", "NODE_CLUTCH"}, {"act", "stop"}, {"signal", std::string("SIG") + name}});
  signal_at_kill_timeout(e, w);
}

void disconnect_then_signal(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  send_cluster(*w, {{"act", "disconnect"}});
  signal_at_kill_timeout(e, w);
}

}  // namespace clutch::supervisor::detail
