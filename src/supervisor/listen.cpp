#include "supervisor/listen.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <fcntl.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "common/listen_socket.hpp"

namespace clutch::supervisor {

namespace asio = boost::asio;

std::optional<listen_spec> parse_listen(std::string_view text, std::string& why) {
  listen_spec s;
  const std::string whole(text);
  // NAME=… : a name for LISTEN_FDNAMES (systemd's rules: no ':' in it).
  if (auto eq = text.find('='); eq != std::string_view::npos) {
    s.name = std::string(text.substr(0, eq));
    text.remove_prefix(eq + 1);
    if (s.name.empty() || s.name.find(':') != std::string::npos || s.name.size() > 255) {
      why = "'" + whole + "': a name before '=' must be 1 to 255 characters without ':'";
      return std::nullopt;
    }
  }
  if (text.starts_with("unix:")) {
    s.unix_socket = true;
    s.path = std::string(text.substr(5));
    if (s.path.empty() || s.path.size() >= sizeof(sockaddr_un::sun_path)) {
      why = "'" + whole + "': unix:PATH needs a path of 1 to " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
            " bytes";
      return std::nullopt;
    }
    return s;
  }
  // [HOST:]PORT, HOST being an IPv4 address or [an IPv6 one].
  std::string_view host, port = text;
  if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  }
  unsigned value = 0;
  auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || err != std::errc{} || end != port.data() + port.size() || value > 65535) {
    why = "'" + whole + "': expected [HOST:]PORT (PORT 0 to 65535) or unix:PATH";
    return std::nullopt;
  }
  error_code ec;
  const auto addr = host.empty() ? asio::ip::address(asio::ip::address_v4::any())
                                 : asio::ip::make_address(std::string(host), ec);
  if (ec) {
    why = "'" + whole + "': '" + std::string(host) + "' is not an IP address";
    return std::nullopt;
  }
  s.tcp = {addr, static_cast<unsigned short>(value)};
  return s;
}

std::string address_text(const asio::ip::tcp::endpoint& bound) {
  const auto host = bound.address().to_string();
  return (bound.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(bound.port());
}

std::string address_text(const listen_spec& spec) {
  return spec.unix_socket ? "unix:" + spec.path : address_text(spec.tcp);
}

std::string address_text(const listener& l) {
  return l.spec.unix_socket ? "unix:" + l.spec.path : address_text(l.bound);
}

void remove_socket_file(const listener& l) {
  if (!l.spec.unix_socket || !l.created) return;
  struct stat st {};
  if (::lstat(l.spec.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == l.created->first &&
      st.st_ino == l.created->second)
    ::unlink(l.spec.path.c_str());
}

listener open_listener(const listen_spec& spec, error_code& ec) {
  listener l;
  l.spec = spec;
  asio::io_context scratch;  // the sockets only pass through Asio's objects here
  if (spec.unix_socket) {
    struct stat st {};
    // A socket file left by an earlier run would make bind fail; anything else at that path is not ours to remove.
    if (::lstat(spec.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(spec.path.c_str());
    asio::local::stream_protocol::acceptor a(scratch);
    if (a.open(asio::local::stream_protocol(), ec) || a.bind({spec.path}, ec)) return l;
    if (::lstat(spec.path.c_str(), &st) == 0) l.created = std::make_pair(st.st_dev, st.st_ino);
    if (a.listen(511, ec)) {
      remove_socket_file(l);
      return l;
    }
    l.fd.reset(a.release());
  } else {
    asio::ip::tcp::acceptor a(scratch);
    if ((ec = ::clutch::detail::open_listener(a, spec.tcp, 511, false, l.bound))) return l;
    l.fd.reset(a.release());
  }
  return l;
}

std::vector<listener> inherited_listeners() {
  std::vector<listener> out;
  const char* fds = std::getenv("LISTEN_FDS");
  const char* pid = std::getenv("LISTEN_PID");
  const std::string names = std::getenv("LISTEN_FDNAMES") ? std::getenv("LISTEN_FDNAMES") : "";
  const bool ours = fds && pid && std::atol(pid) == ::getpid();
  for (const char* v : {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}) ::unsetenv(v);
  if (!ours) return out;
  const int count = std::atoi(fds);
  std::size_t from = 0;
  for (int i = 0; i < count; ++i) {
    const int fd = 3 + i;
    const auto colon = names.find(':', from);
    listener l;
    l.spec.name = names.substr(from, colon == std::string::npos ? std::string::npos : colon - from);
    from = colon == std::string::npos ? names.size() : colon + 1;
    sockaddr_storage sa{};
    socklen_t len = sizeof sa;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) continue;  // not a socket: not for us
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (sa.ss_family == AF_UNIX) {
      l.spec.unix_socket = true;
      l.spec.path = reinterpret_cast<sockaddr_un&>(sa).sun_path;
    } else {
      asio::ip::tcp::endpoint e;
      std::memcpy(e.data(), &sa, std::min<std::size_t>(len, e.capacity()));
      e.resize(std::min<std::size_t>(len, e.capacity()));
      l.spec.tcp = l.bound = e;
    }
    l.fd.reset(fd);
    out.push_back(std::move(l));
  }
  return out;
}

void pass_listeners(options& o, const std::vector<listener>& listeners) {
  std::vector<std::pair<int, std::string>> sockets;
  for (std::size_t i = 0; i < listeners.size(); ++i)
    sockets.emplace_back(listeners[i].fd.get(),
                         listeners[i].spec.name.empty() ? "listen" + std::to_string(i) : listeners[i].spec.name);
  pass_sockets(o, sockets);
}

void pass_sockets(options& o, const std::vector<std::pair<int, std::string>>& sockets) {
  while (o.stdio.size() < 3) o.stdio.push_back(stdio::inherit);
  o.stdio.resize(3);
  // None: no LISTEN_FDS at all. "0" would read as true to a program that tests it (`if (process.env.LISTEN_FDS)`).
  if (sockets.empty()) return;
  std::string names;
  for (const auto& [fd, name] : sockets) {
    o.stdio.push_back(stdio::fd(fd));
    if (!names.empty()) names += ':';
    names += name;
  }
  o.env = o.env.plus({{"LISTEN_FDS", std::to_string(sockets.size())}, {"LISTEN_FDNAMES", names}});
  o.pid_variable = "LISTEN_PID";
}

}  // namespace clutch::supervisor
