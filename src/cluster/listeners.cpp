// The primary's listening sockets, made on a worker's CLUTCH_listen, and round-robin hand-off.
#include <fcntl.h>
#include <sys/socket.h>

#include <boost/json/object.hpp>
#include <string>

#include "common/listen_socket.hpp"
#include "cluster/primary_state.hpp"
#include "cluster/protocol.hpp"

namespace clutch::cluster::detail {

using ::clutch::detail::open_listener;

namespace {

namespace json = boost::json;
using tcp = asio::ip::tcp;

// A listening socket the primary keeps (and duplicates for workers), not watched by its own io_context.
error_code bind_socket(asio::io_context& io, const tcp::endpoint& at, int backlog, bool reuseport,
                       os::unique_fd& out, tcp::endpoint& bound) {
  tcp::acceptor a(io);
  error_code ec = open_listener(a, at, backlog, reuseport, bound);
  if (!ec) out.reset(a.release(ec));
  return ec;
}

handle dup_handle(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return copy < 0 ? handle{} : handle(copy);
}

void reply_error(worker_record& w, std::int64_t seq, error_code ec) {
  w.proc.send(json::object{{"cmd", "CLUTCH_listen_reply"}, {"seq", seq}, {"errno", ec.value()}});
}

std::shared_ptr<worker_record> pick(listener& l) {
  std::shared_ptr<worker_record> best;
  const std::size_t n = l.workers.size();
  for (std::size_t i = 0; i < n; ++i) {
    auto w = l.workers[(l.next + i) % n].lock();
    if (!w || !w->routable || !w->proc.connected()) continue;
    if (!best || w->rr_pending < best->rr_pending) best = std::move(w);
  }
  if (n) l.next = (l.next + 1) % n;
  return best;
}

void accept_more(const std::shared_ptr<primary_state>& p, const std::shared_ptr<listener>& l);

// False when nobody could take it; it then waits at the front of the queue.
bool dispatch(const std::shared_ptr<primary_state>& p, listener& l, tcp::socket sock) {
  auto w = pick(l);
  handle copy = w ? dup_handle(sock.native_handle()) : handle{};
  if (!w || !copy) {
    l.waiting.push_front(std::move(sock));
    return false;
  }
  const std::int64_t seq = p->next_seq++;
  ++w->rr_pending;
  w->proc.send(json::object{{"cmd", "CLUTCH_conn"}, {"key", l.key}, {"seq", seq}}, std::move(copy));
  l.pending.emplace(seq, listener::handoff{std::move(sock), w});
  return true;
}

void dispatch_waiting(const std::shared_ptr<primary_state>& p, const std::shared_ptr<listener>& l) {
  while (!l->waiting.empty()) {
    tcp::socket s = std::move(l->waiting.front());
    l->waiting.pop_front();
    if (!dispatch(p, *l, std::move(s))) break;
  }
  accept_more(p, l);
}

void accept_more(const std::shared_ptr<primary_state>& p, const std::shared_ptr<listener>& l) {
  // Accept only while someone can take the connection: otherwise the kernel's backlog is the better queue.
  if (!l->acceptor || l->accepting || !l->waiting.empty()) return;
  l->accepting = true;
  l->acceptor->async_accept([wp = std::weak_ptr(p), wl = std::weak_ptr(l)](error_code ec, tcp::socket s) {
    auto p = wp.lock();
    auto l = wl.lock();
    if (!p || !l) return;
    l->accepting = false;
    if (ec == asio::error::operation_aborted || !l->acceptor) return;
    if (!ec) dispatch(p, *l, std::move(s));
    if (ec && ec != asio::error::connection_aborted) {
      // Out of descriptors, most likely: pause instead of spinning on the error.
      auto t = std::make_shared<asio::steady_timer>(p->io, std::chrono::milliseconds(50));
      t->async_wait([t, wp, wl](error_code) {
        if (auto p = wp.lock())
          if (auto l = wl.lock()) accept_more(p, l);
      });
      return;
    }
    accept_more(p, l);
  });
}

std::shared_ptr<listener> find_or_bind(const std::shared_ptr<primary_state>& p, const tcp::endpoint& at,
                                       std::int64_t index, int backlog, error_code& ec) {
  const std::string key = key_of(at, index);
  if (auto it = p->listeners.find(key); it != p->listeners.end()) return it->second;
  auto l = std::make_shared<listener>();
  l->key = key;
  l->policy = p->cfg.policy;
  l->backlog = backlog;
  ec = bind_socket(p->io, at, backlog, l->policy == scheduling::reuseport, l->fd, l->bound);
  if (ec) return nullptr;
  if (l->policy == scheduling::round_robin) l->acceptor.emplace(p->io, l->bound.protocol(), l->fd.release());
  p->listeners.emplace(key, l);
  return l;
}

// The slot's own SO_REUSEPORT socket, made on first use. The socket bound to learn the real port (the request may
// have said 0) becomes the first slot's.
int slot_socket(const std::shared_ptr<primary_state>& p, listener& l, std::size_t slot, error_code& ec) {
  auto it = l.slots.find(slot);
  if (it != l.slots.end()) return it->second.get();
  os::unique_fd fd = std::move(l.fd);
  tcp::endpoint ignored;
  if (!fd && (ec = bind_socket(p->io, l.bound, l.backlog, true, fd, ignored))) return -1;
  return l.slots.emplace(slot, std::move(fd)).first->second.get();
}

}  // namespace

std::vector<inherited_listener> listeners_for(const std::shared_ptr<primary_state>& p, std::size_t slot,
                                              int first_fd) {
  std::vector<inherited_listener> out;
  for (auto& [key, l] : p->listeners) {
    // Only what this slot's earlier workers listened on: a worker of another kind (forked with other variables)
    // must not be handed a reuseport socket that the kernel would queue connections on for nobody.
    if (!l->users.contains(slot)) continue;
    int fd = -1;
    if (l->policy == scheduling::shared) fd = l->fd.get();
    if (auto it = l->slots.find(slot); it != l->slots.end()) fd = it->second.get();
    if (fd < 0) continue;  // round-robin has no socket to give
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
  switch (l->policy) {
    case scheduling::shared: h = dup_handle(l->fd.get()); break;
    case scheduling::reuseport: {
      const int fd = slot_socket(p, *l, w->slot, ec);
      if (fd < 0) return reply_error(*w, seq, ec);
      h = dup_handle(fd);
      break;
    }
    case scheduling::round_robin:
      reply["rr"] = true;
      reply["key"] = l->key;
      l->workers.push_back(w);
      break;
  }
  if (l->policy != scheduling::round_robin && !h) return reply_error(*w, seq, {errno, boost::system::system_category()});
  l->users.insert(w->slot);
  w->proc.send(reply, std::move(h));
  if (l->policy == scheduling::round_robin) dispatch_waiting(p, l);
}

void handle_handoff_answer(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                           const json::value& msg, bool accepted) {
  auto it = p->listeners.find(std::string(string_field(msg, "key")));
  if (it == p->listeners.end()) return;
  auto l = it->second;
  auto h = l->pending.find(int_field(msg, "seq"));
  if (h == l->pending.end() || h->second.to.lock() != w) return;
  if (w->rr_pending) --w->rr_pending;
  tcp::socket sock = std::move(h->second.sock);
  l->pending.erase(h);
  if (!accepted) {
    // It is stopping: route around it from now on.
    w->routable = false;
    l->waiting.push_front(std::move(sock));
  }
  dispatch_waiting(p, l);
}

void stop_routing(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) {
  w->routable = false;
  for (auto& [key, l] : p->listeners) {
    if (l->policy != scheduling::round_robin) continue;
    std::erase_if(l->workers, [&](const auto& x) {
      auto s = x.lock();
      return !s || s == w;
    });
    // Only a worker that is gone gives its untaken connections back; a stopping one still answers for them.
    if (w->proc.connected()) continue;
    for (auto h = l->pending.begin(); h != l->pending.end();) {
      if (h->second.to.lock() == w || h->second.to.expired()) {
        l->waiting.push_front(std::move(h->second.sock));
        h = l->pending.erase(h);
      } else {
        ++h;
      }
    }
    w->rr_pending = 0;
    dispatch_waiting(p, l);
  }
}

void release_slot(const std::shared_ptr<primary_state>& p, std::size_t slot) {
  for (auto it = p->listeners.begin(); it != p->listeners.end();) {
    auto& l = *it->second;
    l.users.erase(slot);
    l.slots.erase(slot);
    if (l.users.empty()) {
      if (l.acceptor) l.acceptor->close();
      it = p->listeners.erase(it);
    } else {
      ++it;
    }
  }
}

void close_listeners(primary_state& p) {
  for (auto& [key, l] : p.listeners)
    if (l->acceptor) l->acceptor->close();
  p.listeners.clear();
}

}  // namespace clutch::cluster::detail
