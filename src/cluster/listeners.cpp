// The primary's listening endpoints: keyed as Node's primary keys a queryServer, made on a worker's CLUTCH_listen
// in the primary's scheduling policy (listener.hpp: one file per policy), and told of the workers' events.
#include <fcntl.h>

#include <boost/json/object.hpp>
#include <string>

#include "cluster/listener.hpp"
#include "cluster/primary_state.hpp"
#include "cluster/protocol.hpp"
#include "common/listen_socket.hpp"

namespace clutch::cluster::detail {

namespace {

namespace json = boost::json;
using tcp = asio::ip::tcp;

void reply_error(worker_record& w, std::int64_t seq, error_code ec) {
  w.proc.send(json::object{{"cmd", "CLUTCH_listen_reply"}, {"seq", seq}, {"errno", ec.value()}});
}

std::shared_ptr<listener> find_or_bind(const std::shared_ptr<primary_state>& p, const tcp::endpoint& at,
                                       std::int64_t index, int backlog, error_code& ec) {
  std::string key = key_of(at, index);
  if (auto it = p->listeners.find(key); it != p->listeners.end()) return it->second;
  std::shared_ptr<listener> l;
  switch (p->cfg.policy) {
    case scheduling::shared: l = make_shared_listener(p->io, key, at, backlog, ec); break;
    case scheduling::reuseport: l = make_reuseport_listener(p->io, key, at, backlog, ec); break;
    case scheduling::round_robin: l = make_round_robin_listener(p->io, key, at, backlog, ec); break;
  }
  if (l) p->listeners.emplace(std::move(key), l);
  return l;
}

}  // namespace

error_code bind_socket(asio::io_context& io, const tcp::endpoint& at, int backlog, bool reuseport,
                       os::unique_fd& out, tcp::endpoint& bound) {
  tcp::acceptor a(io);
  error_code ec = ::clutch::detail::open_listener(a, at, backlog, reuseport, bound);
  if (!ec) out.reset(a.release(ec));
  return ec;
}

handle dup_handle(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return copy < 0 ? handle{} : handle(copy);
}

std::vector<inherited_listener> listeners_for(const std::shared_ptr<primary_state>& p, std::size_t slot,
                                              int first_fd) {
  std::vector<inherited_listener> out;
  for (auto& [key, l] : p->listeners) {
    // Only what this slot's earlier workers listened on: a worker of another kind (forked with other variables)
    // must not be handed a reuseport socket that the kernel would queue connections on for nobody.
    if (!l->users.contains(slot)) continue;
    const int fd = l->inherited_fd(slot);
    if (fd < 0) continue;
    json::object e{{"key", key}, {"fd", first_fd + static_cast<int>(out.size())}};
    put_endpoint(e, l->bound);
    out.push_back({std::move(e), fd});
  }
  return out;
}

void handle_listen(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                   const json::value& msg) {
  const std::int64_t seq = int_field(msg, "seq");
  tcp::endpoint at;
  if (!endpoint_from(msg, at)) return reply_error(*w, seq, asio::error::invalid_argument);
  const auto backlog = static_cast<int>(int_field(msg, "backlog", 511));
  if (p->pool.stopping() || w->asked_to_exit) return reply_error(*w, seq, asio::error::operation_aborted);

  error_code ec;
  const std::int64_t index = int_field(msg, "index");
  if (index < 0) return reply_error(*w, seq, asio::error::invalid_argument);
  auto l = find_or_bind(p, at, index, backlog, ec);
  if (!l) return reply_error(*w, seq, ec);

  json::object reply{{"cmd", "CLUTCH_listen_reply"}, {"seq", seq}};
  put_endpoint(reply, l->bound);
  handle h;
  if ((ec = l->join(p, w, reply, h))) return reply_error(*w, seq, ec);
  l->users.insert(w->slot);
  w->proc.send(reply, std::move(h));
  l->joined(p);
}

void handle_handoff_answer(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                           const json::value& msg, bool accepted) {
  auto it = p->listeners.find(std::string(string_field(msg, "key")));
  if (it == p->listeners.end()) return;
  auto l = it->second;  // held: the answer may close it
  l->handoff_answer(p, w, int_field(msg, "seq"), accepted);
}

void stop_routing(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) {
  w->routable = false;
  for (auto& [key, l] : p->listeners) l->stop_routing(p, w);
}

void release_slot(const std::shared_ptr<primary_state>& p, std::size_t slot) {
  for (auto it = p->listeners.begin(); it != p->listeners.end();) {
    auto& l = *it->second;
    l.users.erase(slot);
    l.release_slot(slot);
    if (l.users.empty()) {
      l.close();
      it = p->listeners.erase(it);
    } else {
      ++it;
    }
  }
}

void close_listeners(primary_state& p) {
  for (auto& [key, l] : p.listeners) l->close();
  p.listeners.clear();
}

}  // namespace clutch::cluster::detail
