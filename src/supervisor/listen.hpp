// What `clutch run --listen` takes, the sockets clutch binds for it, and how a worker inherits them: systemd's
// socket-activation protocol, which Node (`server.listen({fd: 3})`), Python and C programs already speak.
//
//   std::string why;
//   auto spec = supervisor::parse_listen("127.0.0.1:8080", why);  // "8080", "[::1]:80", "unix:/run/app.sock",
//                                                                  // and any of them as "NAME=…" (LISTEN_FDNAMES)
//   auto l = supervisor::open_listener(*spec, ec);                 // bound and listening, owned by the supervisor
//   supervisor::pass_listeners(opts, listeners);                   // fds 3…, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES
#pragma once

#include <sys/types.h>

#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch/error.hpp"
#include "os/fd.hpp"

namespace clutch::supervisor {

struct listen_spec {
  std::string name;                  // LISTEN_FDNAMES entry; default "listen<N>" by position
  bool unix_socket = false;
  boost::asio::ip::tcp::endpoint tcp;  // for TCP; port 0: any free port
  std::string path;                  // for unix:PATH
};

// nullopt with `why` set (a sentence naming the bad part) for anything else.
std::optional<listen_spec> parse_listen(std::string_view text, std::string& why);

struct listener {
  listen_spec spec;
  os::unique_fd fd;
  boost::asio::ip::tcp::endpoint bound;  // TCP: the real address and port
  // A Unix socket file that open_listener created: its identity, so that only that file is removed at the end,
  // never one that someone else put at the same path since.
  std::optional<std::pair<dev_t, ino_t>> created;
};

// Removes the socket file of a Unix listener clutch created, if the file at its path is still that one.
void remove_socket_file(const listener& l);

// "HOST:PORT" of a bound TCP socket, or "unix:PATH": how clutch names a socket in its lines and its status.
std::string address_text(const boost::asio::ip::tcp::endpoint& bound);
std::string address_text(const listener& l);
std::string address_text(const listen_spec& spec);  // as asked: port 0 stays 0

// Binds and listens (SO_REUSEADDR; a unix path's stale socket file is replaced). ec says why not.
listener open_listener(const listen_spec& spec, error_code& ec);

// The sockets this process was given by systemd's protocol (LISTEN_FDS, meant for it when LISTEN_PID is its
// pid), as listeners; the variables are removed and the descriptors made close-on-exec. Empty when there are none.
std::vector<listener> inherited_listeners();

// Gives the child the listeners at fds 3, 4, … (after stdin, stdout and stderr as o.stdio has them, inherited by
// default), with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID (the child's own pid, see options::pid_variable).
void pass_listeners(options& o, const std::vector<listener>& listeners);
// The same for descriptors with their LISTEN_FDNAMES names, in order.
void pass_sockets(options& o, const std::vector<std::pair<int, std::string>>& sockets);

}  // namespace clutch::supervisor
