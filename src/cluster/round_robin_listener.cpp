// scheduling::round_robin (Node's default): the primary accepts, and hands each connection to the worker with the
// fewest hand-offs it has not answered yet, in turn among equals. A connection stays open here until its worker
// says it took its copy (CLUTCH_accepted); one refused, or given to a worker that died first, goes to another.
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "cluster/listener.hpp"
#include "cluster/primary_state.hpp"

namespace clutch::cluster::detail {

namespace {

namespace json = boost::json;
using tcp = asio::ip::tcp;

class round_robin_listener final : public listener, public std::enable_shared_from_this<round_robin_listener> {
 public:
  round_robin_listener(asio::io_context& io, std::string key, tcp::endpoint bound, int backlog, os::unique_fd fd)
      : listener(std::move(key), bound, backlog), acceptor_(std::in_place, io, bound.protocol(), fd.release()) {}

  error_code join(const std::shared_ptr<primary_state>&, const std::shared_ptr<worker_record>& w,
                  json::object& reply, handle&) override {
    reply["rr"] = true;
    reply["key"] = key;
    workers_.push_back(w);
    return {};
  }
  void joined(const std::shared_ptr<primary_state>& p) override { dispatch_waiting(p); }
  int inherited_fd(std::size_t) const override { return -1; }

  void handoff_answer(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w,
                      std::int64_t seq, bool accepted) override {
    auto h = pending_.find(seq);
    if (h == pending_.end() || h->second.to.lock() != w) return;
    if (w->rr_pending) --w->rr_pending;
    tcp::socket sock = std::move(h->second.sock);
    pending_.erase(h);
    if (!accepted) {
      // It is stopping: route around it from now on.
      w->routable = false;
      waiting_.push_front(std::move(sock));
    }
    dispatch_waiting(p);
  }

  void stop_routing(const std::shared_ptr<primary_state>& p, const std::shared_ptr<worker_record>& w) override {
    std::erase_if(workers_, [&](const auto& x) {
      auto s = x.lock();
      return !s || s == w;
    });
    // Only a worker that is gone gives its untaken connections back; a stopping one still answers for them.
    if (w->proc.connected()) return;
    for (auto h = pending_.begin(); h != pending_.end();) {
      if (h->second.to.lock() == w || h->second.to.expired()) {
        waiting_.push_front(std::move(h->second.sock));
        h = pending_.erase(h);
      } else {
        ++h;
      }
    }
    w->rr_pending = 0;
    dispatch_waiting(p);
  }

  void close() override {
    if (acceptor_) acceptor_->close();
  }

 private:
  struct handoff {
    tcp::socket sock;
    std::weak_ptr<worker_record> to;
  };

  std::shared_ptr<worker_record> pick() {
    std::shared_ptr<worker_record> best;
    const std::size_t n = workers_.size();
    for (std::size_t i = 0; i < n; ++i) {
      auto w = workers_[(next_ + i) % n].lock();
      if (!w || !w->routable || !w->proc.connected()) continue;
      if (!best || w->rr_pending < best->rr_pending) best = std::move(w);
    }
    if (n) next_ = (next_ + 1) % n;
    return best;
  }

  // False when nobody could take it; it then waits at the front of the queue.
  bool dispatch(const std::shared_ptr<primary_state>& p, tcp::socket sock) {
    auto w = pick();
    handle copy = w ? dup_handle(sock.native_handle()) : handle{};
    if (!w || !copy) {
      waiting_.push_front(std::move(sock));
      return false;
    }
    const std::int64_t seq = p->next_seq++;
    ++w->rr_pending;
    w->proc.send(json::object{{"cmd", "CLUTCH_conn"}, {"key", key}, {"seq", seq}}, std::move(copy));
    pending_.emplace(seq, handoff{std::move(sock), w});
    return true;
  }

  void dispatch_waiting(const std::shared_ptr<primary_state>& p) {
    while (!waiting_.empty()) {
      tcp::socket s = std::move(waiting_.front());
      waiting_.pop_front();
      if (!dispatch(p, std::move(s))) break;
    }
    accept_more(p);
  }

  void accept_more(const std::shared_ptr<primary_state>& p) {
    // Accept only while someone can take the connection: otherwise the kernel's backlog is the better queue.
    if (!acceptor_ || !acceptor_->is_open() || accepting_ || !waiting_.empty()) return;
    accepting_ = true;
    acceptor_->async_accept([wp = std::weak_ptr(p), wl = weak_from_this()](error_code ec, tcp::socket s) {
      auto p = wp.lock();
      auto l = wl.lock();
      if (!p || !l) return;
      l->accepting_ = false;
      if (ec == asio::error::operation_aborted || !l->acceptor_->is_open()) return;
      if (!ec) l->dispatch(p, std::move(s));
      if (ec && ec != asio::error::connection_aborted) {
        // Out of descriptors, most likely: pause instead of spinning on the error.
        auto t = std::make_shared<asio::steady_timer>(p->io, std::chrono::milliseconds(50));
        t->async_wait([t, wp, wl](error_code) {
          if (auto p = wp.lock())
            if (auto l = wl.lock()) l->accept_more(p);
        });
        return;
      }
      l->accept_more(p);
    });
  }

  std::optional<tcp::acceptor> acceptor_;
  bool accepting_ = false;
  std::vector<std::weak_ptr<worker_record>> workers_;
  std::size_t next_ = 0;
  std::map<std::int64_t, handoff> pending_;  // kept open here until the worker says it took its copy
  std::deque<tcp::socket> waiting_;           // accepted while no worker could take them
};

}  // namespace

std::shared_ptr<listener> make_round_robin_listener(asio::io_context& io, std::string key, const tcp::endpoint& at,
                                                    int backlog, error_code& ec) {
  os::unique_fd fd;
  tcp::endpoint bound;
  if ((ec = bind_socket(io, at, backlog, false, fd, bound))) return nullptr;
  return std::make_shared<round_robin_listener>(io, std::move(key), bound, backlog, std::move(fd));
}

}  // namespace clutch::cluster::detail
