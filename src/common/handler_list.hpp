// Event handlers in registration order, to which a running handler may add another (as Node's EventEmitter
// allows). A deque keeps every handler where it is when one is appended, so the one running is never moved; a
// call reaches the handlers that were there when it began.
//
//   handler_list<std::string_view> on_data;
//   on_data.add([](std::string_view chunk) { ... });
//   on_data.call(chunk);
#pragma once

#include <deque>
#include <functional>

namespace clutch::detail {

template <typename... Args>
class handler_list {
 public:
  using handler = std::function<void(Args...)>;

  void add(handler f) { handlers_.push_back(std::move(f)); }
  bool empty() const noexcept { return handlers_.empty(); }
  std::size_t size() const noexcept { return handlers_.size(); }
  handler& operator[](std::size_t i) { return handlers_[i]; }

  void call(Args... args) {
    for (std::size_t i = 0, n = handlers_.size(); i < n; ++i) handlers_[i](args...);
  }

 private:
  std::deque<handler> handlers_;
};

}  // namespace clutch::detail
