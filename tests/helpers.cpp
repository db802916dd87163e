#include "helpers.hpp"

#include "common/json_fields.hpp"
#include "os/proc_stat.hpp"
#include "supervisor/notify.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/serialize.hpp>
#include <clutch/child_process.hpp>
#include <clutch/ipc.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string_view>
#include <thread>

namespace clutch_test {

namespace {
std::string self_path;

std::set<int> fds_of(const char* dir_path) {
  std::set<int> fds;
  DIR* dir = ::opendir(dir_path);
  if (dir == nullptr) return fds;
  int own = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    int fd = std::atoi(e->d_name);
    if (fd != own) fds.insert(fd);
  }
  ::closedir(dir);
  return fds;
}

bool read_stat(pid_t pid, char& state, pid_t& ppid, pid_t& pgid) {
  const auto st = clutch::os::read_proc_stat(pid);
  if (!st) return false;
  state = st->state;
  ppid = st->ppid;
  pgid = st->pgrp;
  return true;
}

template <typename F>
void for_each_process(F f) {
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return;
  while (dirent* e = ::readdir(dir)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    char state;
    pid_t ppid, pgid;
    if (read_stat(pid, state, ppid, pgid)) f(pid, state, ppid, pgid);
  }
  ::closedir(dir);
}
}  // namespace

void set_self(const char* argv0) {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  self_path = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string(argv0);
}

const std::string& self() { return self_path; }

std::vector<std::string> helper_args(const std::string& name, std::vector<std::string> args) {
  std::vector<std::string> out{"--helper", name};
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

std::set<int> open_fds() { return fds_of("/proc/self/fd"); }

std::vector<pid_t> zombie_children() {
  std::vector<pid_t> out;
  pid_t me = ::getpid();
  for_each_process([&](pid_t pid, char state, pid_t ppid, pid_t) {
    if (ppid == me && state == 'Z') out.push_back(pid);
  });
  return out;
}

std::vector<pid_t> processes_in_group(pid_t pgid) {
  std::vector<pid_t> out;
  for_each_process([&](pid_t pid, char state, pid_t, pid_t group) {
    if (group == pgid && state != 'Z') out.push_back(pid);
  });
  return out;
}

std::string str(const boost::json::object& o, std::string_view name) {
  return std::string(clutch::detail::string_field(o, name));
}
std::int64_t num(const boost::json::object& o, std::string_view name) { return clutch::detail::int_field(o, name); }

std::vector<pid_t> zombies_of(pid_t parent) {
  std::vector<pid_t> out;
  for_each_process([&](pid_t pid, char state, pid_t ppid, pid_t) {
    if (ppid == parent && state == 'Z') out.push_back(pid);
  });
  return out;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for_each_process([&](pid_t pid, char state, pid_t ppid, pid_t) {
    if (ppid == parent && state != 'Z') out.push_back(pid);
  });
  return out;
}

bool process_alive(pid_t pid) {
  char state;
  pid_t ppid, pgid;
  return read_stat(pid, state, ppid, pgid) && state != 'Z';
}

// ---- The helper programs ----------------------------------------------------------------------------------------
namespace {

// Children on the far end of a fork() channel.
int run_ipc_helper(std::string_view name, int argc, char** argv) {
  namespace asio = boost::asio;
  asio::io_context io;
  clutch::error_code ec;
  const char* announced = std::getenv("NODE_CHANNEL_FD");
  const int channel_fd = announced ? std::atoi(announced) : -1;
  auto parent = clutch::parent_channel(io, {}, ec);
  if (!parent) {
    std::fprintf(stderr, "%s: no parent channel (%s)\n", std::string(name).c_str(), ec.message().c_str());
    return 2;
  }
  // The variables are gone once the channel is taken, and its descriptor is close-on-exec, so our own children
  // would not see it.
  if (std::getenv("NODE_CHANNEL_FD") != nullptr || std::getenv("NODE_CHANNEL_SERIALIZATION_MODE") != nullptr) return 3;
  if ((::fcntl(channel_fd, F_GETFD) & FD_CLOEXEC) == 0) return 4;

  if (name == "ipc-echo") {  // every message back as it came; "disconnect" makes us disconnect
    parent->on_message([&](const boost::json::value& m, clutch::handle) {
      if (m == "disconnect") {
        parent->disconnect();
        return;
      }
      parent->send(m);
    });
  } else if (name == "ipc-send-and-exit") {  // one message, then exit without returning to the event loop
    parent->send(argc > 1 ? argv[1] : "last words");
    std::fflush(stdout);
    _exit(0);
  } else if (name == "ipc-answer-socket") {  // answer the client behind each socket that comes with a message
    parent->on_message([&](const boost::json::value& m, clutch::handle h) {
      if (h.what() != clutch::handle::kind::tcp_socket) {
        parent->send({{"error", "expected a TCP socket"}});
        return;
      }
      auto sock = std::make_shared<asio::ip::tcp::socket>(std::move(h).tcp_socket(io.get_executor()));
      auto text = std::make_shared<std::string>("C++ child answers: " + std::string(m.as_string()) + "\n");
      asio::async_write(*sock, asio::buffer(*text), [&, sock, text](boost::system::error_code, std::size_t) {
        sock->close();
        parent->send("answered");
      });
    });
  } else if (name == "ipc-serve-listener") {  // accept one connection on a listening socket that comes along
    parent->on_message([&](const boost::json::value&, clutch::handle h) {
      if (h.what() != clutch::handle::kind::tcp_server) {
        parent->send({{"error", "expected a listening TCP socket"}});
        return;
      }
      auto acceptor = std::make_shared<asio::ip::tcp::acceptor>(std::move(h).tcp_acceptor(io.get_executor()));
      acceptor->async_accept([&, acceptor](boost::system::error_code ec, asio::ip::tcp::socket s) {
        if (ec) return;
        static const std::string text = "served by the child\n";
        auto sock = std::make_shared<asio::ip::tcp::socket>(std::move(s));
        asio::async_write(*sock, asio::buffer(text), [&, sock](boost::system::error_code, std::size_t) {
          sock->close();
          parent->send("served");
        });
      });
    });
  } else if (name == "ipc-report-handles") {
    // For each message: {"msg": m, "handle": what the socket says (its first line), or null}, sent back and also
    // printed on stdout (for a parent that has already disconnected).
    parent->on_message([&](const boost::json::value& m, clutch::handle h) {
      boost::json::value report = {{"msg", m}, {"handle", nullptr}};
      if (h) {
        char buf[64];
        ssize_t n = ::read(h.native_handle(), buf, sizeof buf);  // the test wrote a short line before sending
        report.as_object()["handle"] = std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
      }
      std::printf("%s\n", boost::json::serialize(report).c_str());
      std::fflush(stdout);
      parent->send(report);
    });
  } else if (name == "ipc-ignore") {  // read nothing: the parent's writes pile up until we are killed
    parent.reset();
    ::pause();
  } else {
    return 99;
  }
  io.run();
  return 0;
}

}  // namespace

// What sd_notify(0, text) does, with the supervisor's own client: 0 when sent.
static int send_notify(const std::string& text) {
  static const auto client = clutch::supervisor::notify_client::from_environment();
  return client.send(text) ? 0 : 5;
}

int run_helper(int argc, char** argv) {
  std::string_view name = argv[0];
  auto arg = [&](int i) -> std::string { return i < argc ? argv[i] : std::string(); };

  if (name == "exit") return std::atoi(argv[1]);

  if (name == "listen-fd-serve") {  // a plain server behind `clutch run`: HTTP on fd 3, "<pid>\n" per request
    // Options: --grandchild (start a child that ignores SIGTERM, print "grandchild PID"), --notify (READY=1 via
    // NOTIFY_SOCKET once accepting). SIGTERM: stop accepting, finish the connection at hand, exit 0.
    const char* fds = std::getenv("LISTEN_FDS");
    const char* pid = std::getenv("LISTEN_PID");
    if (!fds || std::atoi(fds) < 1 || !pid || std::atoi(pid) != ::getpid()) return 3;
    static volatile sig_atomic_t stop = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { stop = 1; };
    ::sigaction(SIGTERM, &sa, nullptr);  // no SA_RESTART: accept() returns EINTR. Before anything is printed:
    // whoever reads our output may stop us at once.
    for (int i = 1; i < argc; ++i) {
      if (std::string_view(argv[i]) == "--grandchild") {
        pid_t g = ::fork();
        if (g == 0) {
          ::execl("/bin/sh", "sh", "-c", "trap '' TERM; exec sleep 600", static_cast<char*>(nullptr));
          ::_exit(127);
        }
        std::printf("grandchild %d\n", g);
        std::fflush(stdout);
      }
    }
    for (int i = 1; i < argc; ++i)
      if (std::string_view(argv[i]) == "--notify") send_notify("READY=1\nSTATUS=serving");
    const std::string body = std::to_string(::getpid()) + "\n";
    const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                              "\r\nConnection: close\r\n\r\n" + body;
    while (!stop) {
      int c = ::accept4(3, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::string req;
      char buf[1024];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      if (::write(c, reply.data(), reply.size()) < 0) {}
      ::close(c);
    }
    return 0;
  }

  if (name == "notify-send") return send_notify(arg(1));

  if (name == "say-usr1") {  // prints "usr1 PID" for each SIGUSR1, after "waiting PID"
    static volatile sig_atomic_t got = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { got = got + 1; };
    ::sigaction(SIGUSR1, &sa, nullptr);
    // Blocked except inside sigsuspend: a SIGUSR1 that comes between the check and the wait is not lost (with
    // pause() it was, whenever the signal came right after "waiting").
    sigset_t usr1, outside;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    ::sigprocmask(SIG_BLOCK, &usr1, &outside);
    std::printf("waiting %d\n", ::getpid());
    std::fflush(stdout);
    for (int seen = 0;;) {
      ::sigsuspend(&outside);
      for (; seen < got; ++seen) std::printf("usr1 %d\n", ::getpid());
      std::fflush(stdout);
    }
  }

  if (name == "hog") {  // touch MB megabytes, say so, then sleep
    const std::size_t bytes = std::strtoull(arg(1).c_str(), nullptr, 10) << 20;
    static std::vector<char> mem;
    mem.assign(bytes, 'x');
    std::printf("holding %s MB\n", arg(1).c_str());
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::seconds(600));
    return 0;
  }

  if (name == "watchdog-pinger") {  // READY=1, then WATCHDOG=1 every MS ms, COUNT times (0: never), then exit 0
    send_notify("READY=1");
    const int ms = std::atoi(arg(1).c_str()), count = std::atoi(arg(2).c_str());
    for (int i = 0; i < count; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      send_notify("WATCHDOG=1");
    }
    if (count == 0) std::this_thread::sleep_for(std::chrono::seconds(600));
    return 0;
  }

  if (name == "list-fds") {  // the descriptors this process was started with
    for (int fd : fds_of("/proc/self/fd")) std::printf("%d ", fd);
    std::printf("\n");
    return 0;
  }

  if (name == "write") {  // write N bytes of 'x' to stdout (or to fd given), then exit at once
    std::size_t n = std::strtoull(argv[1], nullptr, 10);
    int fd = argc > 2 ? std::atoi(argv[2]) : 1;
    std::string block(64 * 1024, 'x');
    while (n > 0) {
      std::size_t k = std::min(n, block.size());
      ssize_t w = ::write(fd, block.data(), k);
      if (w <= 0) return 3;
      n -= static_cast<std::size_t>(w);
    }
    _exit(0);
  }

  if (name == "count-stdin") {  // print how many bytes arrive on stdin before EOF
    char buf[65536];
    std::size_t total = 0;
    ssize_t r;
    while ((r = ::read(0, buf, sizeof buf)) > 0) total += static_cast<std::size_t>(r);
    std::printf("%zu\n", total);
    return 0;
  }

  if (name == "chunks") {  // write "chunk N\n" every 50 ms, COUNT times
    int count = std::atoi(argv[1]);
    for (int i = 0; i < count; ++i) {
      std::printf("chunk %d\n", i);
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }

  if (name == "print-then-sleep") {  // write a line, then sleep (to be killed)
    std::printf("%s\n", arg(1).c_str());
    std::fflush(stdout);
    ::pause();
    return 0;
  }

  if (name == "env") {  // print the value of one variable, or <unset>
    const char* v = std::getenv(argv[1]);
    std::printf("%s", v ? v : "<unset>");
    return 0;
  }

  if (name == "sigpipe-disposition") {  // "default" or "ignored": what a child is given for SIGPIPE
    struct sigaction sa {};
    ::sigaction(SIGPIPE, nullptr, &sa);
    std::printf("%s", sa.sa_handler == SIG_IGN ? "ignored" : "default");
    return 0;
  }

  if (name == "sigmask") {  // the blocked-signal mask this process started with, as /proc shows it (hex)
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.starts_with("SigBlk:")) std::printf("%s", line.substr(line.find_first_not_of(" \t", 7)).c_str());
    }
    return 0;
  }

  if (name == "spawn-with-death-signal") {
    // Starts two `sleep 60` with death_signal SIGKILL (the second also as uid/gid 65534 when we are root), prints
    // their pids, then waits to be killed: both sleeps must die with us.
    boost::asio::io_context io;
    const std::vector<clutch::stdio_slot> quiet{clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ignore};
    auto plain = clutch::spawn(io, "sleep", {"60"}, {.stdio = quiet, .death_signal = SIGKILL});
    clutch::options other{.stdio = quiet, .death_signal = "SIGKILL"};
    if (::geteuid() == 0) {
      other.uid = 65534;
      other.gid = 65534;
    }
    auto as_other = clutch::spawn(io, "sleep", {"60"}, other);
    std::printf("%d %d\n", plain.pid(), as_other.pid());
    std::fflush(stdout);
    ::pause();
    return 0;
  }

  if (name == "spawn-two-and-wait") {
    // Starts `sleep 60` twice, one detached, prints "DETACHED_PID PLAIN_PID", then waits to be killed.
    boost::asio::io_context io;
    auto detached = clutch::spawn(io, "sleep", {"60"}, {.stdio = {clutch::stdio::ignore, clutch::stdio::ignore,
                                                                   clutch::stdio::ignore},
                                                         .detached = true});
    auto plain = clutch::spawn(io, "sleep", {"60"},
                               {.stdio = {clutch::stdio::ignore, clutch::stdio::ignore, clutch::stdio::ignore}});
    std::printf("%d %d\n", detached.pid(), plain.pid());
    std::fflush(stdout);
    ::pause();
    return 0;
  }

  if (name.starts_with("ipc-")) return run_ipc_helper(name, argc, argv);
  if (name.starts_with("cluster-")) return run_cluster_helper(name, argc, argv);
  if (name.starts_with("app-")) return run_app_helper(name, argc, argv);
  if (name.starts_with("hostile-")) return run_hostile_helper(name, argc, argv);

  std::cerr << "unknown helper " << name << "\n";
  return 99;
}

temp_dir::temp_dir() {
  char tmpl[] = "/tmp/clutch-t-XXXXXX";
  path = ::mkdtemp(tmpl);
}
temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

unsigned short free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::address_v4::loopback(), 0});
  return a.local_endpoint().port();
}

namespace {

template <typename Socket>
std::pair<int, std::string> http_over(Socket& s, const std::string& path) {
  clutch::error_code ec;
  boost::asio::write(s, boost::asio::buffer("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), ec);
  // Read until the server closes, 10 s at most: a connection nobody will ever accept is a failed request, not a
  // test that hangs until ctest's timeout says nothing of where.
  std::string reply;
  char buf[4096];
  for (auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
    pollfd p{s.native_handle(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return {0, {}};
    const auto n = ::recv(s.native_handle(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<std::size_t>(n));
  }
  if (reply.size() < 12 || reply.compare(0, 5, "HTTP/") != 0) return {0, {}};
  const auto body = reply.find("\r\n\r\n");
  return {std::stoi(reply.substr(9, 3)), body == std::string::npos ? std::string() : reply.substr(body + 4)};
}

std::pair<int, std::string> http_tcp(const boost::asio::ip::address& at, unsigned short port, const std::string& path) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  clutch::error_code ec;
  s.connect({at, port}, ec);
  if (ec) return {0, {}};
  return http_over(s, path);
}

}  // namespace

std::pair<int, std::string> http_request(unsigned short port, const std::string& path) {
  return http_tcp(boost::asio::ip::address_v4::loopback(), port, path);
}
std::pair<int, std::string> http_request_v6(unsigned short port, const std::string& path) {
  return http_tcp(boost::asio::ip::address_v6::loopback(), port, path);
}
std::pair<int, std::string> http_request_unix(const std::string& socket_path, const std::string& path) {
  boost::asio::io_context io;
  boost::asio::local::stream_protocol::socket s(io);
  clutch::error_code ec;
  s.connect({socket_path}, ec);
  if (ec) return {0, {}};
  return http_over(s, path);
}

bool tool_installed(const std::string& program, const std::string& package, std::string* why) {
  if (::access(program.c_str(), X_OK) == 0) return true;
  clutch::options o;
  o.timeout = std::chrono::minutes(15);
  o.env = clutch::environment::add({{"DEBIAN_FRONTEND", "noninteractive"}});
  auto r = clutch::spawn_sync(
      "apt-get", {"install", "-y", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends", package}, o);
  if (::access(program.c_str(), X_OK) == 0) return true;
  if (why) *why = program + " is missing and apt-get could not install " + package + ": " + r.err;
  return false;
}

}  // namespace clutch_test
