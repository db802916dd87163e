// scheduling::reuseport: one SO_REUSEPORT socket per slot, kept by the primary, so that a slot's next worker (a
// restart, a reload's replacement) accepts what queued for the one before it.
#include <map>

#include "cluster/listener.hpp"
#include "cluster/primary_state.hpp"

namespace clutch::cluster::detail {

namespace {

class reuseport_listener final : public listener {
 public:
  reuseport_listener(asio::io_context& io, std::string key, asio::ip::tcp::endpoint bound, int backlog,
                     os::unique_fd first)
      : listener(std::move(key), bound, backlog), io_(io), first_(std::move(first)) {}

  error_code join(const std::shared_ptr<primary_state>&, const std::shared_ptr<worker_record>& w,
                  boost::json::object&, handle& h) override {
    error_code ec;
    const int fd = slot_socket(w->slot, ec);
    if (fd < 0) return ec;
    h = dup_handle(fd);
    return h ? error_code{} : error_code{errno, boost::system::system_category()};
  }
  int inherited_fd(std::size_t slot) const override {
    auto it = slots_.find(slot);
    return it == slots_.end() ? -1 : it->second.get();
  }
  void release_slot(std::size_t slot) override { slots_.erase(slot); }

 private:
  // The slot's own socket, made on first use. The socket bound to learn the real port (the request may have said
  // 0) becomes the first slot's.
  int slot_socket(std::size_t slot, error_code& ec) {
    if (auto it = slots_.find(slot); it != slots_.end()) return it->second.get();
    os::unique_fd fd = std::move(first_);
    asio::ip::tcp::endpoint ignored;
    if (!fd && (ec = bind_socket(io_, bound, backlog, true, fd, ignored))) return -1;
    return slots_.emplace(slot, std::move(fd)).first->second.get();
  }

  asio::io_context& io_;
  os::unique_fd first_;
  std::map<std::size_t, os::unique_fd> slots_;
};

}  // namespace

std::shared_ptr<listener> make_reuseport_listener(asio::io_context& io, std::string key,
                                                  const asio::ip::tcp::endpoint& at, int backlog, error_code& ec) {
  os::unique_fd fd;
  asio::ip::tcp::endpoint bound;
  if ((ec = bind_socket(io, at, backlog, true, fd, bound))) return nullptr;
  return std::make_shared<reuseport_listener>(io, std::move(key), bound, backlog, std::move(fd));
}

}  // namespace clutch::cluster::detail
