// Output: with engine::on_output set, every process's stdout and stderr come through pipes of ours, in chunks.
#include "supervisor/engine_state.hpp"

namespace clutch::supervisor::detail {

void pipe_output(const engine_state& e, options& o) {
  if (!e.output) return;  // without it they share clutch's own
  while (o.stdio.size() < 3) o.stdio.push_back(stdio::inherit);
  o.stdio[1] = o.stdio[2] = stdio::pipe;
}

void pass_output(const std::shared_ptr<engine_state>& e, const std::shared_ptr<worker>& w) {
  if (!e->output) return;
  for (int stream : {child::out, child::err}) {
    w->proc.on_data(stream, [we = std::weak_ptr(e), tag = tag_of(*w), stream](std::string_view data) {
      if (auto e = we.lock(); e && e->output) e->output(tag, stream, data, false);
    });
    w->proc.on_end(stream, [we = std::weak_ptr(e), tag = tag_of(*w), stream] {
      if (auto e = we.lock(); e && e->output) e->output(tag, stream, {}, true);
    });
  }
}

}  // namespace clutch::supervisor::detail
