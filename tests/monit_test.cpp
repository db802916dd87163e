// `clutch monit` in a real terminal: tmux (installed by the test if missing) runs a shell, the test types
// `clutch monit` into it (send-keys) and reads the screen (capture-pane): it shows the apps, moves on a key,
// reloads on `r`, follows a resize, and q or Ctrl-C give the shell its screen and its terminal modes back.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch_run.hpp"
#include "helpers.hpp"

namespace {

using namespace std::chrono_literals;
using clutch_test::eventually;

// A tmux server of the test's own (its socket in a temp folder), ended with the object.
class tmux {
 public:
  explicit tmux(const std::string& command_env) {
    ok = clutch_test::tool_installed("/usr/bin/tmux", "tmux") &&
         run({"new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "env " + command_env + " PS1='$ ' sh"}).status.code == 0;
  }
  ~tmux() { run({"kill-server"}); }
  tmux(const tmux&) = delete;
  tmux& operator=(const tmux&) = delete;

  clutch::sync_result run(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-S", dir_.path + "/tmux.sock"});
    clutch::options o;
    o.timeout = 30s;
    o.env = clutch::environment::add({{"TERM", "xterm-256color"}});
    return clutch::spawn_sync("/usr/bin/tmux", args, o);
  }
  void keys(std::vector<std::string> k) const {
    k.insert(k.begin(), {"send-keys", "-t", "t"});
    run(k);
  }
  std::string screen() const { return run({"capture-pane", "-p", "-t", "t"}).out; }
  bool shows(const std::string& text, std::chrono::seconds limit = 20s) const {
    return eventually([&] { return screen().find(text) != std::string::npos; }, limit);
  }

  bool ok = false;

 private:
  clutch_test::temp_dir dir_;
};

}  // namespace

TEST(Monit, ShowsTheAppsReactsToKeysAndGivesTheTerminalBack) {
  clutch_test::clutch_home cli;
  ASSERT_EQ(cli({"start", "--name", "alpha", "--workers", "1", "--", "sh", "-c", "echo alpha says hi; exec sleep 300"})
                .status.code,
            0);
  ASSERT_EQ(cli({"start", "--name", "beta", "--workers", "2", "--", "sh", "-c", "echo beta says hi; exec sleep 300"})
                .status.code,
            0);
  tmux t("CLUTCH_HOME=" + cli.home.path);
  ASSERT_TRUE(t.ok);
  t.keys({"echo before-monit; " + clutch_test::clutch_binary() + " monit", "Enter"});
  ASSERT_TRUE(t.shows("clutch monit")) << t.screen();
  ASSERT_TRUE(t.shows(">alpha")) << t.screen();
  EXPECT_TRUE(t.shows("beta")) << t.screen();
  EXPECT_TRUE(t.shows("2/2")) << t.screen();
  EXPECT_TRUE(t.shows("alpha says hi")) << t.screen();
  EXPECT_EQ(t.screen().find("before-monit"), std::string::npos) << "its own screen";
  // Down: beta is selected, and its lines shown.
  t.keys({"Down"});
  EXPECT_TRUE(t.shows(">beta")) << t.screen();
  EXPECT_TRUE(t.shows("beta says hi")) << t.screen();
  // r: beta reloads (its workers are replaced).
  const auto before = cli({"ls", "--json"}).out;
  t.keys({"r"});
  EXPECT_TRUE(t.shows("reload beta: done")) << t.screen();
  EXPECT_NE(cli({"ls", "--json"}).out, before);
  // A narrower terminal: the table follows (no sparklines under 80 columns).
  t.run({"resize-window", "-t", "t", "-x", "70", "-y", "20"});
  EXPECT_TRUE(eventually([&] {
    const auto s = t.screen();
    return s.find("▁") == std::string::npos && s.find("█") == std::string::npos && s.find(">beta") != std::string::npos;
  }, 10s)) << t.screen();
  // q: the shell's screen is back, and so are its terminal modes.
  t.keys({"q"});
  EXPECT_TRUE(t.shows("before-monit")) << t.screen();
  EXPECT_EQ(t.screen().find("clutch monit   up/down"), std::string::npos) << t.screen();
  t.keys({"clear; stty -a | grep -c ' icanon .* echo ' | sed 's/^/modes: /'", "Enter"});
  EXPECT_TRUE(t.shows("modes: 1")) << t.screen();  // canonical input and echo, as before
  // Ctrl-C ends it the same way.
  t.keys({"clear; echo again; " + clutch_test::clutch_binary() + " monit", "Enter"});
  ASSERT_TRUE(t.shows(">alpha")) << t.screen();
  t.keys({"C-c"});
  EXPECT_TRUE(t.shows("again")) << t.screen();
  EXPECT_EQ(t.screen().find("clutch monit   up/down"), std::string::npos) << t.screen();
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}
