// scheduling::shared: one listening socket, a duplicate for every worker; the kernel picks who accepts.
#include "cluster/listener.hpp"
#include "cluster/primary_state.hpp"

namespace clutch::cluster::detail {

namespace {

class shared_listener final : public listener {
 public:
  shared_listener(std::string key, asio::ip::tcp::endpoint bound, int backlog, os::unique_fd fd)
      : listener(std::move(key), bound, backlog), fd_(std::move(fd)) {}

  error_code join(const std::shared_ptr<primary_state>&, const std::shared_ptr<worker_record>&,
                  boost::json::object&, handle& h) override {
    h = dup_handle(fd_.get());
    return h ? error_code{} : error_code{errno, boost::system::system_category()};
  }
  int inherited_fd(std::size_t) const override { return fd_.get(); }

 private:
  os::unique_fd fd_;
};

}  // namespace

std::shared_ptr<listener> make_shared_listener(asio::io_context& io, std::string key,
                                               const asio::ip::tcp::endpoint& at, int backlog, error_code& ec) {
  os::unique_fd fd;
  asio::ip::tcp::endpoint bound;
  if ((ec = bind_socket(io, at, backlog, false, fd, bound))) return nullptr;
  return std::make_shared<shared_listener>(std::move(key), bound, backlog, std::move(fd));
}

}  // namespace clutch::cluster::detail
