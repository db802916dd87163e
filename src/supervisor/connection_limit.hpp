// Bounds what one server's clients can take from the process that serves them, so that no client, hostile or
// broken, can starve the apps of descriptors or the daemon of its loop:
//
//   connection_limit limit(64);
//   acceptor.async_accept([&](error_code ec, socket s) {
//     if (paused(ec, pause_timer, executor, [&] { accept(); })) return;  // EMFILE: wait, do not spin
//     auto slot = limit.admit();      // empty when 64 are open: the new one is closed at once
//     if (!slot) return close(s), accept();
//     serve(std::move(s), slot);      // the slot is given back when the connection lets go of it
//   });
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <memory>

namespace clutch::supervisor {

class connection_limit {
 public:
  explicit connection_limit(std::size_t cap) : cap_(cap), open_(std::make_shared<std::size_t>(0)) {}

  // A token for one connection, held for as long as it lives; empty when `cap` are open already. The count
  // outlives the server, so that a connection may end after it.
  std::shared_ptr<void> admit() {
    if (*open_ >= cap_) return nullptr;
    ++*open_;
    return std::shared_ptr<void>(open_.get(), [count = open_](void*) { --*count; });  // non-null: admitted
  }
  std::size_t open() const noexcept { return *open_; }
  std::size_t cap() const noexcept { return cap_; }

 private:
  std::size_t cap_;
  std::shared_ptr<std::size_t> open_;
};

// How long to wait before accepting again after an accept that failed with ec. Out of descriptors or memory
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) the pending connection stays in the backlog and the next accept would fail at
// once, spinning the loop: wait a little for descriptors to come back. Anything else (a peer that gave up,
// ECONNABORTED): at once.
inline std::chrono::milliseconds accept_pause(const boost::system::error_code& ec) {
  namespace errc = boost::system::errc;
  if (ec == errc::too_many_files_open || ec == errc::too_many_files_open_in_system ||
      ec == errc::no_buffer_space || ec == errc::not_enough_memory)
    return std::chrono::milliseconds(100);
  return std::chrono::milliseconds(0);
}

// After an accept that failed with ec: when accept_pause says to wait, arms timer to call resume() then and
// returns true (the caller stops there); else false.
template <typename Executor, typename Resume>
bool paused(const boost::system::error_code& ec, std::unique_ptr<boost::asio::steady_timer>& timer,
            const Executor& ex, Resume resume) {
  const auto wait = accept_pause(ec);
  if (wait.count() == 0) return false;
  timer = std::make_unique<boost::asio::steady_timer>(ex, wait);
  timer->async_wait([resume = std::move(resume)](const boost::system::error_code& e) {
    if (!e) resume();
  });
  return true;
}

}  // namespace clutch::supervisor
