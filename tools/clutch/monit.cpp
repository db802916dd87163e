#include "monit.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "common/json_fields.hpp"
#include "supervisor/control.hpp"
#include "text.hpp"

namespace clutch_cli {

namespace json = boost::json;
namespace sv = clutch::supervisor;

namespace {

volatile std::sig_atomic_t resized = 1, quit = 0;
void on_winch(int) { resized = 1; }
void on_quit(int) { quit = 1; }

// The terminal as monit found it, given back on every way out (q, Ctrl-C, SIGTERM, an exception).
class screen {
 public:
  screen() {
    raw_ = ::tcgetattr(STDIN_FILENO, &saved_) == 0;
    if (raw_) {
      termios t = saved_;
      t.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));  // keys one by one, unechoed; Ctrl-C still signals
      t.c_cc[VMIN] = 0;
      t.c_cc[VTIME] = 0;
      ::tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    write("\x1b[?1049h\x1b[?25l");  // the alternate screen, no cursor
  }
  ~screen() {
    write("\x1b[?25h\x1b[?1049l");
    if (raw_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  screen(const screen&) = delete;
  screen& operator=(const screen&) = delete;
  static void write(const std::string& s) {
    for (std::size_t done = 0; done < s.size();) {
      const auto n = ::write(STDOUT_FILENO, s.data() + done, s.size() - done);
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }

 private:
  termios saved_{};
  bool raw_ = false;
};

// The last `width` values as bars, right-aligned: from zero to the largest (CPU), or from the smallest to the
// largest (memory, whose changes are small beside its size; level when it does not change).
std::string spark(const std::deque<double>& values, std::size_t width, bool from_zero) {
  static const char* const bars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  const std::size_t n = std::min(width, values.size());
  double top = 0, bottom = n ? values.back() : 0;
  for (std::size_t i = values.size() - n; i < values.size(); ++i) {
    top = std::max(top, values[i]);
    bottom = std::min(bottom, values[i]);
  }
  if (from_zero) bottom = 0;
  std::string out(width - n, ' ');
  for (std::size_t i = values.size() - n; i < values.size(); ++i)
    out += bars[top > bottom ? std::clamp(static_cast<int>(std::lround((values[i] - bottom) / (top - bottom) * 7)), 0, 7)
                             : from_zero ? 0 : 3];
  return out;
}

// s cut or padded to `width` columns (a UTF-8 character is one column: the bars and what programs log).
std::string fit(const std::string& s, std::size_t width) {
  std::string out;
  std::size_t cols = 0;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = 1;
    while (i + len < s.size() && (static_cast<unsigned char>(s[i + len]) & 0xC0) == 0x80) ++len;
    if (cols == width) break;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    out.append(c < 0x20 || c == 0x7f ? std::string(" ") : s.substr(i, len));  // no control byte reaches the terminal
    ++cols;
    i += len;
  }
  return out + std::string(width - cols, ' ');
}

struct app_row {
  std::string name, state;
  std::int64_t workers = 0, ready = 0, restarts = 0;
  double cpu = 0, memory = 0;
};

}  // namespace

int monit(const std::string& socket_path) {
  using namespace std::chrono;
  struct sigaction sa {};
  sa.sa_handler = on_winch;
  ::sigaction(SIGWINCH, &sa, nullptr);
  sa.sa_handler = on_quit;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  std::map<std::string, std::deque<double>> cpu_history, memory_history;
  std::vector<app_row> apps;
  std::vector<std::string> lines;
  std::string selected, message, error;
  auto next_look = steady_clock::now();
  screen term;
  while (!quit) {
    if (steady_clock::now() >= next_look) {
      next_look = steady_clock::now() + seconds(1);
      apps.clear();
      error.clear();
      auto ec = sv::control_call(
          socket_path, {{"cmd", "ls"}},
          [&](const json::object& a) {
            if (const auto* list = a.if_contains("apps"); list && list->is_array())
              for (const auto& v : list->as_array()) {
                const auto& o = v.as_object();
                app_row r;
                r.name = std::string(o.at("name").as_string());
                r.state = std::string(clutch::detail::string_field(o, "state"));
                r.workers = clutch::detail::int_field(o, "workers");
                r.restarts = clutch::detail::int_field(o, "restarts");
                for (const auto& p : o.at("processes").as_array()) {
                  const auto& q = p.as_object();
                  r.cpu += clutch::detail::number_of(q.at("cpu"));
                  r.memory += clutch::detail::number_of(q.at("memory"));
                  if (q.at("role").as_string() == "worker" && q.at("state").as_string() == "ready") ++r.ready;
                }
                auto& c = cpu_history[r.name];
                auto& m = memory_history[r.name];
                c.push_back(r.cpu);
                m.push_back(r.memory);
                while (c.size() > 60) c.pop_front();
                while (m.size() > 60) m.pop_front();
                apps.push_back(std::move(r));
              }
            return false;
          },
          seconds(5));
      if (ec) error = "no answer from the daemon (" + socket_path + "): " + ec.message();
      if (std::none_of(apps.begin(), apps.end(), [&](const app_row& r) { return r.name == selected; }))
        selected = apps.empty() ? std::string() : apps.front().name;
      lines.clear();
      if (!selected.empty())
        sv::control_call(
            socket_path, {{"cmd", "logs"}, {"name", selected}, {"lines", 50}},
            [&](const json::object& a) {
              if (const auto* l = a.if_contains("line"); l && l->is_string())
                lines.push_back((clutch::detail::string_field(a, "stream") == "err" ? "err " : "    ") +
                                std::string(l->as_string()));
              return true;
            },
            seconds(5));
      resized = 1;
    }
    auto draw = [&] {
      winsize ws{};
      std::size_t cols = 80, rows = 24;
      if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        cols = ws.ws_col;
        rows = ws.ws_row;
      }
      cols = std::max<std::size_t>(cols, 40);
      rows = std::max<std::size_t>(rows, 8);
      std::string out = "\x1b[H\x1b[2J";
      auto line = [&](const std::string& text, const char* style = "") {
        out += style;
        out += fit(text, cols);
        out += "\x1b[0m\r\n";
      };
      line(" clutch monit   up/down select · r reload · R restart · q quit", "\x1b[7m");
      const std::size_t spark_width = cols >= 100 ? 20 : cols >= 80 ? 10 : 0;
      char head[256];
      std::snprintf(head, sizeof head, " %-18s %-9s %7s %8s %6s", "APP", "STATE", "WORKERS", "RESTARTS", "CPU%");
      line(std::string(head) + (spark_width ? " " + fit("", spark_width) : "") + "   MEMORY" +
               (spark_width ? " " + fit("", spark_width) : ""),
           "\x1b[1m");
      for (const auto& r : apps) {
        char row[256];
        std::snprintf(row, sizeof row, " %-18.18s %-9.9s %3lld/%-3lld %8lld %5.0f%%", r.name.c_str(), r.state.c_str(),
                      static_cast<long long>(r.ready), static_cast<long long>(r.workers),
                      static_cast<long long>(r.restarts), r.cpu);
        std::string text = row;
        if (spark_width) text += " " + spark(cpu_history[r.name], spark_width, true);
        text += " " + fit(human_bytes(r.memory), 8);
        if (spark_width) text += " " + spark(memory_history[r.name], spark_width, false);
        const bool sel = r.name == selected;
        line((sel ? ">" : " ") + text.substr(1), sel ? "\x1b[1;36m" : "");
      }
      if (apps.empty()) line(error.empty() ? " no app (clutch start one)" : " " + error);
      line("");
      line(" " + (selected.empty() ? std::string("logs") : selected + ": last lines") +
               (message.empty() ? "" : "   " + message),
           "\x1b[1m");
      const std::size_t used = 4 + std::max<std::size_t>(apps.size(), 1);
      const std::size_t room = rows > used + 1 ? rows - used - 1 : 0;
      const std::size_t from = lines.size() > room ? lines.size() - room : 0;
      for (std::size_t i = from; i < lines.size(); ++i) line(" " + lines[i], lines[i].starts_with("err") ? "\x1b[31m" : "");
      // Nothing after the last line: a full screen must not scroll.
      if (out.size() >= 2 && out.ends_with("\r\n")) out.resize(out.size() - 2);
      screen::write(out);
    };
    if (resized) {
      resized = 0;
      draw();
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const auto wait = duration_cast<milliseconds>(next_look - steady_clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<long long>(wait, 0))) <= 0) continue;  // a signal, or time
    char keys[64];
    const auto n = ::read(STDIN_FILENO, keys, sizeof keys);
    if (n <= 0) {
      if (n == 0) break;  // the terminal is gone
      continue;
    }
    const std::string k(keys, static_cast<std::size_t>(n));
    auto move = [&](int by) {
      auto it = std::find_if(apps.begin(), apps.end(), [&](const app_row& r) { return r.name == selected; });
      if (it == apps.end()) return;
      const auto i = std::clamp<std::ptrdiff_t>(it - apps.begin() + by, 0, static_cast<std::ptrdiff_t>(apps.size()) - 1);
      selected = apps[static_cast<std::size_t>(i)].name;
      next_look = steady_clock::now();  // its logs now
    };
    if (k == "q" || k == "Q") break;
    if (k == "\x1b[A" || k == "k") move(-1);
    if (k == "\x1b[B" || k == "j") move(1);
    if ((k == "r" || k == "R") && !selected.empty()) {
      const std::string what = k == "r" ? "reload" : "restart";
      message = what + " " + selected + "…";
      draw();  // said before the wait
      std::string answer = "done";
      sv::control_call(
          socket_path, {{"cmd", what}, {"name", selected}},
          [&](const json::object& a) {
            if (const auto* ok = a.if_contains("ok"); ok && ok->is_bool() && !ok->get_bool())
              answer = std::string(clutch::detail::string_field(a, "error"));
            return true;
          },
          minutes(10));
      message = what + " " + selected + ": " + answer;
      next_look = steady_clock::now();
      resized = 1;
    }
  }
  return 0;
}

}  // namespace clutch_cli
