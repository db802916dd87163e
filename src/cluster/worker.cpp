// The worker's side: its channel to the primary, listen through the primary, and the acceptor it gives.
#include <fcntl.h>

#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <stdexcept>
#include <optional>
#include <string>

#include "clutch/cluster.hpp"
#include "common/listen_socket.hpp"
#include "cluster/protocol.hpp"
#include "os/proc_stat.hpp"
#include "os/signals.hpp"
#include "common/completion.hpp"
#include "common/handler_list.hpp"

namespace clutch::cluster {

namespace detail {

namespace json = boost::json;
using tcp = asio::ip::tcp;
using ::clutch::detail::complete;
using ::clutch::detail::open_listener;

struct worker_side;

struct acceptor_state {
  explicit acceptor_state(asio::io_context& io) : io(io) {}
  asio::io_context& io;
  std::optional<tcp::acceptor> native;  // shared, reuseport, exclusive
  tcp::endpoint local;
  bool open = true;
  // round_robin: connections the primary handed over, and accepts waiting for one.
  std::string key;
  std::deque<std::pair<std::int64_t, tcp::socket>> ready;
  std::deque<accept_handler> waiting;
};

struct worker_side {
  worker_side(asio::io_context& io, channel ch) : io(io), ch(std::move(ch)) {}
  asio::io_context& io;
  channel ch;
  std::int64_t next_seq = 1;
  std::map<std::int64_t, listen_handler> listens;
  std::map<std::string, std::weak_ptr<acceptor_state>> rr;
  std::map<std::string, std::int64_t> listen_calls;  // by endpoint asked for: the index of the next listen() there
  std::vector<std::weak_ptr<acceptor_state>> acceptors;
  ::clutch::detail::handler_list<> stop_handlers;
  bool stopping = false;
};

namespace {

struct identity {
  bool worker = false;
  int id = 0;
  struct socket {
    int fd;
    tcp::endpoint bound;
  };
  std::map<std::string, socket> inherited;  // by the endpoint asked for; taken by the first listen() there
};

std::map<std::string, identity::socket> inherited_listeners() {
  std::map<std::string, identity::socket> out;
  const char* text = std::getenv(std::string(listeners_variable).c_str());
  if (!text) return out;
  error_code ec;
  json::value list = json::parse(text, ec);
  if (ec || !list.is_array()) return out;
  for (const auto& e : list.get_array()) {
    const int fd = static_cast<int>(int_field(e, "fd"));
    tcp::endpoint bound;
    // Only a descriptor that really is a listening TCP socket is used; anything else stays unused.
    handle probe(fd < 3 ? -1 : ::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!endpoint_from(e, bound) || probe.what() != handle::kind::tcp_server) continue;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for this worker's own children
    out[std::string(string_field(e, "key"))] = {fd, bound};
  }
  return out;
}

// Read once, then removed from the environment, so that this worker's own children are not workers.
identity& self() {
  static identity me = [] {
    identity i;
    // A worker is forked with both its id and a channel to its primary. The id alone is not enough: the clutch
    // supervisor also numbers the workers it runs (CLUTCH_WORKER_ID) without a channel, and a cluster program run
    // that way is a primary of its own.
    const char* v = std::getenv(std::string(worker_id_variable).c_str());
    if (v && std::getenv("NODE_CHANNEL_FD")) {
      i.worker = true;
      i.id = std::atoi(v);
      i.inherited = inherited_listeners();
    }
    ::unsetenv(std::string(worker_id_variable).c_str());
    ::unsetenv(std::string(listeners_variable).c_str());
    return i;
  }();
  return me;
}

// Never destroyed: its channel must not be torn down by static destructors after main's io_context is gone.
worker_side* the_worker = nullptr;

void answer_handoff(worker_side& w, const std::string& key, std::int64_t seq, bool accepted) {
  w.ch.send(json::object{{"cmd", accepted ? "CLUTCH_accepted" : "CLUTCH_refused"}, {"key", key}, {"seq", seq}});
}

void close_acceptor(acceptor_state& a) {
  if (!std::exchange(a.open, false)) return;
  if (a.native) {
    error_code ignored;
    a.native->close(ignored);
  }
  if (the_worker) {
    for (auto& [seq, sock] : a.ready) answer_handoff(*the_worker, a.key, seq, false);
  }
  a.ready.clear();
  for (auto& h : std::exchange(a.waiting, {}))
    complete(a.io, std::move(h), error_code(asio::error::operation_aborted), tcp::socket(a.io));
}

void report_listening(worker_side& w, const tcp::endpoint& at) {
  json::object o{{"cmd", "CLUTCH_listening"}};
  put_endpoint(o, at);
  w.ch.send(o);
}

// A listen succeeded: the worker (if this is one) tracks the acceptor, so that a stop request closes it, and
// tells the primary where it listens; then the caller gets it.
void listening(worker_side* w, std::shared_ptr<acceptor_state> a, listen_handler done) {
  if (w) {
    w->acceptors.push_back(a);
    report_listening(*w, a->local);
  }
  auto& io = a->io;
  complete(io, std::move(done), error_code{}, acceptor(std::move(a)));
}

void on_listen_reply(worker_side& w, const json::value& msg, handle h) {
  auto it = w.listens.find(int_field(msg, "seq"));
  if (it == w.listens.end()) return;
  listen_handler done = std::move(it->second);
  w.listens.erase(it);
  if (auto e = int_field(msg, "errno", 0); e != 0)
    return complete(w.io, std::move(done), error_code(static_cast<int>(e), boost::system::system_category()),
                    acceptor{});
  auto a = std::make_shared<acceptor_state>(w.io);
  error_code ec;
  if (!endpoint_from(msg, a->local)) ec = asio::error::invalid_argument;
  if (!ec && msg.as_object().contains("rr")) {
    a->key = std::string(string_field(msg, "key"));
    w.rr[a->key] = a;
  } else if (!ec && h.what() == handle::kind::tcp_server) {
    a->native.emplace(std::move(h).tcp_acceptor(w.io.get_executor()));
  } else if (!ec) {
    ec = asio::error::bad_descriptor;
  }
  if (ec) return complete(w.io, std::move(done), ec, acceptor{});
  if (w.stopping) {
    close_acceptor(*a);
    return complete(w.io, std::move(done), error_code(asio::error::operation_aborted), acceptor{});
  }
  listening(&w, std::move(a), std::move(done));
}

void on_connection(worker_side& w, const json::value& msg, handle h) {
  const std::string key(string_field(msg, "key"));
  const std::int64_t seq = int_field(msg, "seq");
  auto it = w.rr.find(key);
  auto a = it == w.rr.end() ? nullptr : it->second.lock();
  if (!a || !a->open || h.what() != handle::kind::tcp_socket) return answer_handoff(w, key, seq, false);
  tcp::socket sock = std::move(h).tcp_socket(w.io.get_executor());
  if (a->waiting.empty()) {
    a->ready.emplace_back(seq, std::move(sock));
    return;
  }
  // Taken only now that the application has it: until then the primary keeps its copy, and could give it to
  // another worker if this one died.
  answer_handoff(w, key, seq, true);
  auto handler = std::move(a->waiting.front());
  a->waiting.pop_front();
  complete(w.io, std::move(handler), error_code{}, std::move(sock));
}

// The primary asked us to stop, or we leave by ourselves (leaving: the primary is told first, so that it does not
// take the exit that follows for a crash).
void on_stop_request(worker_side& w, bool leaving = false) {
  if (std::exchange(w.stopping, true)) return;
  for (auto& weak : w.acceptors)
    if (auto a = weak.lock()) close_acceptor(*a);
  if (leaving) w.ch.send(json::object{{"cmd", "CLUTCH_leaving"}});
  w.stop_handlers.call();
  w.ch.disconnect();
}

worker_side& worker_for(asio::io_context& io) {
  if (the_worker) {
    if (&the_worker->io != &io) throw std::logic_error("clutch::cluster: a worker has one io_context");
    return *the_worker;
  }
  if (!self().worker) throw std::logic_error("clutch::cluster: this process is not a cluster worker");
  error_code ec;
  auto ch = parent_channel(io, {}, ec);
  if (!ch) throw std::logic_error("clutch::cluster: a worker without a channel to its primary");
  the_worker = new worker_side(io, std::move(*ch));
  auto& w = *the_worker;
  w.ch.on_internal_message([&w](const json::value& msg, handle& h) {
    const std::string_view cmd = command_of(msg);
    if (cmd == "CLUTCH_listen_reply") on_listen_reply(w, msg, std::move(h));
    else if (cmd == "CLUTCH_conn") on_connection(w, msg, std::move(h));
    else if (cmd == "CLUTCH_disconnect") on_stop_request(w);
  });
  w.ch.on_disconnect([&w, primary = ::getppid()](error_code) {
    if (w.stopping) return;
    // The primary is gone, or going (its descriptors close, and so our channel, once it has begun to exit): a
    // worker never outlives it, nor do its own children, which share its process group.
    const auto parent = os::read_proc_stat(primary);
    if (::getppid() != primary || primary <= 1 || !parent || parent->state == 'Z' || parent->state == 'X' ||
        (parent->flags & os::pf_exiting) != 0)
      os::end_group_and_exit();
    // The primary closed the channel while it lives (we are still its child): as Node's workers, exit 0, with
    // the listeners closed first so that nothing more is queued for us.
    on_stop_request(w);
    std::exit(0);
  });
  w.ch.send(json::object{{"cmd", "CLUTCH_online"}});
  return w;
}

}  // namespace

void async_accept(const std::shared_ptr<acceptor_state>& a, accept_handler h) {
  if (!a) throw std::logic_error("clutch::cluster::acceptor: async_accept on an empty acceptor");
  if (a->native && a->open) return a->native->async_accept(std::move(h));
  if (!a->open) return complete(a->io, std::move(h), error_code(asio::error::operation_aborted), tcp::socket(a->io));
  if (a->ready.empty()) {
    a->waiting.push_back(std::move(h));
    return;
  }
  auto [seq, sock] = std::move(a->ready.front());
  a->ready.pop_front();
  if (the_worker) answer_handoff(*the_worker, a->key, seq, true);
  complete(a->io, std::move(h), error_code{}, std::move(sock));
}

void listen(asio::io_context& io, const tcp::endpoint& at, const listen_options& o, listen_handler h) {
  if (!self().worker || o.exclusive) {
    auto a = std::make_shared<acceptor_state>(io);
    if (auto ec = open_listener(a->native.emplace(io), at, o.backlog, false, a->local))
      return complete(io, std::move(h), ec, acceptor{});
    return listening(self().worker ? &worker_for(io) : nullptr, std::move(a), std::move(h));
  }
  auto& w = worker_for(io);
  if (w.stopping) return complete(io, std::move(h), error_code(asio::error::operation_aborted), acceptor{});
  const std::int64_t index = w.listen_calls[key_of(at)]++;
  auto& inherited = self().inherited;
  if (auto it = inherited.find(key_of(at, index)); it != inherited.end()) {
    auto a = std::make_shared<acceptor_state>(io);
    a->local = it->second.bound;
    a->native.emplace(io, at.protocol(), it->second.fd);
    inherited.erase(it);
    return listening(&w, std::move(a), std::move(h));
  }
  const std::int64_t seq = w.next_seq++;
  json::object req{{"cmd", "CLUTCH_listen"}, {"seq", seq}, {"backlog", o.backlog}, {"index", index}};
  put_endpoint(req, at);
  w.listens.emplace(seq, std::move(h));
  if (!w.ch.send(req) && !w.ch.connected()) {
    auto done = std::move(w.listens[seq]);
    w.listens.erase(seq);
    complete(io, std::move(done), make_error_code(errc::channel_closed), acceptor{});
  }
}

}  // namespace detail

bool is_worker() { return detail::self().worker; }
int worker_id() { return detail::self().id; }

channel& to_primary(asio::io_context& io) { return detail::worker_for(io).ch; }
void ready(asio::io_context& io) {
  detail::worker_for(io).ch.send(boost::json::object{{"cmd", "CLUTCH_ready"}});
}
void on_disconnect(asio::io_context& io, std::function<void()> h) {
  detail::worker_for(io).stop_handlers.add(std::move(h));
}
void disconnect_self(asio::io_context& io) { detail::on_stop_request(detail::worker_for(io), /*leaving=*/true); }

asio::ip::tcp::endpoint acceptor::local_endpoint() const { return state_ ? state_->local : asio::ip::tcp::endpoint{}; }
bool acceptor::is_open() const noexcept { return state_ && state_->open; }
void acceptor::close() {
  if (state_) detail::close_acceptor(*state_);
}
acceptor::executor_type acceptor::get_executor() const {
  if (!state_) throw std::logic_error("clutch::cluster::acceptor: empty");
  return state_->io.get_executor();
}
asio::ip::tcp::acceptor* acceptor::native() noexcept {
  return state_ && state_->native ? &*state_->native : nullptr;
}

}  // namespace clutch::cluster
