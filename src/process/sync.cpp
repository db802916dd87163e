// The synchronous functions are exec_file on a private io_context, as Node's spawnSync runs a private loop: one
// implementation of timeouts, limits and reaping serves both.
#include <boost/asio/write.hpp>

#include "clutch/child_process.hpp"

namespace clutch {

sync_result spawn_sync(std::string_view file, const std::vector<std::string>& args, const options& opts) {
  asio::io_context io;
  child c = exec_file(io, file, args, opts);
  sync_result result;
  result.pid = c.pid();
  if (c.spawn_error()) {
    result.error = c.spawn_error();
    return result;
  }
  if (opts.stdio.empty() || opts.stdio[0] == stdio::pipe) {  // a short list is padded with pipes
    // The child may exit without reading all of it (EPIPE); that is its business, not an error of ours.
    asio::async_write(c.std_in(), asio::buffer(opts.input), [c](boost::system::error_code, std::size_t) mutable {
      c.close_stdin();
    });
  }
  c.async_result([&result, c](error_code ec, exec_result r) mutable {
    // A grandchild may still hold stdin open without reading it; a write pending there would keep run() going.
    c.close_stdin();
    result.error = ec;
    result.status = r.status;
    result.out = std::move(r.out);
    result.err = std::move(r.err);
  });
  io.run();
  return result;
}

sync_result exec_file_sync(std::string_view file, const std::vector<std::string>& args, const options& opts) {
  return spawn_sync(file, args, opts);
}

sync_result exec_sync(std::string_view command, const options& opts) {
  if (opts.kill_tree) return spawn_sync(opts.shell, {"-c", std::string(command)}, opts);
  options o = opts;
  o.kill_tree = true;  // as exec: what the command starts in the background ends with it
  return spawn_sync(o.shell, {"-c", std::string(command)}, o);
}

}  // namespace clutch
