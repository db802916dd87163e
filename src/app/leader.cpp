// leader / follower: a few reserved actions ("clutch.…") on top of the messenger.
#include <boost/json/object.hpp>
#include <map>
#include <set>

#include "app/messenger_state.hpp"

namespace clutch::app {

namespace json = boost::json;

namespace {
constexpr std::string_view subscribe_action = "clutch.subscribe";
constexpr std::string_view publish_action = "clutch.publish";
}  // namespace

struct leader::state {
  explicit state(messenger m) : m(std::move(m)) {}
  messenger m;
  std::map<std::string, std::set<int>, std::less<>> subscribers;
  std::map<std::string, json::value, std::less<>> last;

  void push(const std::shared_ptr<state>& self, const std::string& topic, int pid, const json::value& value) {
    m.send_to(pid, publish_action, json::object{{"topic", topic}, {"value", value}},
              [ws = std::weak_ptr(self), topic, pid](error_code ec) {
                auto s = ws.lock();
                if (ec && s) s->subscribers[topic].erase(pid);  // that worker is gone
              });
  }
};

leader::leader(messenger& m) : state_(std::make_shared<state>(m)) {
  std::weak_ptr<state> ws = state_;
  m.on(std::string(subscribe_action), [ws](const json::value& data, const sender& from) {
    auto s = ws.lock();
    if (!s || !data.is_string()) return;
    const std::string topic(data.get_string());
    // A new subscriber gets the current value at once; one subscribing again (after an agent restart) too.
    if (auto it = s->last.find(topic); s->subscribers[topic].insert(from.pid).second && it != s->last.end())
      s->push(s, topic, from.pid, it->second);
  });
  m.state()->on_peer_lost.add([ws](int pid) {
    if (auto s = ws.lock())
      for (auto& [topic, pids] : s->subscribers) pids.erase(pid);
  });
}

void leader::on_call(std::string name, messenger::request_handler h) {
  state_->m.on_request("clutch.call." + name, std::move(h));
}

void leader::publish(const std::string& topic, json::value value) {
  state_->last[topic] = value;
  const auto pids = state_->subscribers[topic];  // a failed push changes the set
  for (int pid : pids) state_->push(state_, topic, pid, value);
}

std::size_t leader::subscribers(const std::string& topic) const {
  auto it = state_->subscribers.find(topic);
  return it == state_->subscribers.end() ? 0 : it->second.size();
}

struct follower::state {
  std::map<std::string, ::clutch::detail::handler_list<const json::value&>, std::less<>> topics;
};

follower::follower(messenger& m) : messenger_(m), state_(std::make_shared<state>()) {
  std::weak_ptr<state> ws = state_;
  m.on(std::string(publish_action), [ws](const json::value& data, const sender&) {
    auto s = ws.lock();
    const auto* o = data.if_object();
    if (!s || !o) return;
    const auto* topic = o->if_contains("topic");
    if (!topic || !topic->is_string()) return;
    auto it = s->topics.find(topic->get_string());
    if (it != s->topics.end()) it->second.call(o->contains("value") ? o->at("value") : json::value());
  });
  // A new agent knows nobody: subscribe again.
  m.on_agent([ws, m = messenger_](int) mutable {
    if (auto s = ws.lock())
      for (auto& [topic, handlers] : s->topics) m.send_to_agent(subscribe_action, json::value(topic));
  });
}

void follower::subscribe(std::string topic, std::function<void(const json::value&)> h) {
  auto& handlers = state_->topics[topic];
  const bool first = handlers.empty();
  handlers.add(std::move(h));
  if (first) messenger_.send_to_agent(subscribe_action, json::value(topic));
}

std::string follower::call_action(std::string_view name) { return "clutch.call." + std::string(name); }

}  // namespace clutch::app
