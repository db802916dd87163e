// The clutch command's own truth: its exit code and messages, against a stand-in daemon that misbehaves in one way
// per test (hangs up, says garbage, refuses, stays silent), and its usage (--version, --help, typos). The real
// binary, a real Unix socket in a CLUTCH_HOME of the test's own.
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <clutch/child_process.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "helpers.hpp"

using namespace std::chrono_literals;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using local = asio::local::stream_protocol;

namespace {

using clutch_test::temp_dir;


struct result {
  std::optional<int> code;  // nullopt: killed by a signal (a crash is not an exit code)
  std::string out, err;
};

// What the stand-in does once it has read a request line.
enum class behaviour { hang_up, answer, stay_silent };

// Listens where the CLI looks for its daemon (CLUTCH_HOME/clutch.sock), so that the CLI finds one and launches
// none; every CLI run of a test goes through it, so that not even a bug can reach a real daemon.
struct fake_daemon {
  asio::io_context io;
  temp_dir home;
  local::acceptor acceptor{io};
  behaviour does = behaviour::hang_up;
  std::string answer;                           // for behaviour::answer, written as it is
  std::vector<std::string> requests;            // the request lines read
  std::vector<std::shared_ptr<local::socket>> silent;  // held open until the CLI has gone

  fake_daemon() {
    acceptor.open();
    acceptor.bind(local::endpoint(home.path + "/clutch.sock"));
    acceptor.listen();
    accept();
  }

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, local::socket s) {
      if (ec) return;
      auto conn = std::make_shared<local::socket>(std::move(s));
      auto in = std::make_shared<std::string>();
      asio::async_read_until(*conn, asio::dynamic_buffer(*in), '\n',
                             [this, conn, in](boost::system::error_code ec, std::size_t n) {
                               if (!ec) requests.push_back(in->substr(0, n - 1));
                               if (does == behaviour::stay_silent) return silent.push_back(conn);
                               if (does == behaviour::hang_up) return conn->close();
                               asio::async_write(*conn, asio::buffer(answer),
                                                 [conn](boost::system::error_code, std::size_t) { conn->close(); });
                             });
      accept();
    });
  }

  result cli(std::vector<std::string> args, clutch::environment::map env = {}) {
    env["CLUTCH_HOME"] = home.path;
    clutch::options o;
    o.env = clutch::environment::add(env);
    o.timeout = 60s;  // a hang is a failure, not a stuck test
    result r;
    bool done = false;
    clutch::exec_file(io, clutch_test::clutch_binary(), args, o, [&](clutch::error_code, clutch::exec_result e) {
      r = {e.status.code, std::move(e.out), std::move(e.err)};
      done = true;
    });
    EXPECT_TRUE(clutch_test::run_until(io, [&] { return done; }, 90s));
    silent.clear();
    return r;
  }

  // Whether the CLI tried to start a daemon of its own (it writes daemon.log first).
  bool launched() const { return fs::exists(home.path + "/daemon.log") || fs::exists(home.path + "/daemon.pid"); }
};

const std::vector<std::vector<std::string>> asking_commands = {
    {"ls"}, {"ls", "--json"}, {"status", "web"}, {"stop", "web"}, {"scale", "web", "2"}};

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

// ---- the daemon misbehaves --------------------------------------------------------------------------------------

// The harness itself: a good answer is a success, so that the failures below are the CLI's judgement.
TEST(Cli, AGoodAnswerIsASuccess) {
  fake_daemon d;
  d.does = behaviour::answer;
  d.answer = R"({"ok":true,"apps":[]})" "\n";
  auto r = d.cli({"ls", "--json"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "[]\n");
  ASSERT_EQ(d.requests.size(), 1u);
  EXPECT_TRUE(contains(d.requests[0], R"("cmd":"ls")")) << d.requests[0];
}

TEST(Cli, ADaemonThatHangsUpWithoutAnsweringIsAFailure) {
  fake_daemon d;
  for (const auto& args : asking_commands) {
    const auto before = d.requests.size();
    auto r = d.cli(args);
    ASSERT_TRUE(r.code) << args[0] << ": killed by a signal";
    EXPECT_NE(*r.code, 0) << args[0];
    EXPECT_TRUE(contains(r.err, "closed the connection without answering")) << args[0] << ": " << r.err;
    EXPECT_EQ(d.requests.size(), before + 1) << args[0] << ": it asked our daemon";
  }
  EXPECT_FALSE(d.launched());
}

TEST(Cli, AnAnswerThatIsNotJsonIsAFailure) {
  fake_daemon d;
  d.does = behaviour::answer;
  for (const std::string garbage : {"this is not JSON\n", "[1, 2]\n"}) {
    d.answer = garbage;
    for (const auto& args : asking_commands) {
      auto r = d.cli(args);
      ASSERT_TRUE(r.code) << args[0] << ": killed by a signal";
      EXPECT_NE(*r.code, 0) << args[0] << " on " << garbage;
      EXPECT_TRUE(contains(r.err, "not a JSON object")) << args[0] << ": " << r.err;
    }
  }
  EXPECT_FALSE(d.launched());
}

TEST(Cli, AnAnswerCutShortIsAFailure) {
  fake_daemon d;
  d.does = behaviour::answer;
  d.answer = R"({"ok":true,"apps":[)";  // no end, no newline: the daemon died while writing
  auto r = d.cli({"ls"});
  ASSERT_TRUE(r.code);
  EXPECT_NE(*r.code, 0);
  EXPECT_TRUE(contains(r.err, "in the middle of an answer")) << r.err;
}

TEST(Cli, AnOkFalseAnswerIsAFailureWithItsError) {
  fake_daemon d;
  d.does = behaviour::answer;
  d.answer = R"({"ok":false,"error":"x"})" "\n";
  for (const auto& args : asking_commands) {
    auto r = d.cli(args);
    ASSERT_TRUE(r.code) << args[0];
    EXPECT_NE(*r.code, 0) << args[0];
    EXPECT_EQ(r.err, "clutch: x\n") << args[0];
  }
  EXPECT_FALSE(d.launched());
}

// JSON, but not an answer the command can use: a message and a failure, not a crash on a missing field.
TEST(Cli, AnAnswerWithoutWhatItsCommandNeedsIsAFailureNotACrash) {
  fake_daemon d;
  d.does = behaviour::answer;
  for (const std::string answer : {R"({"ok":true})" "\n", R"({"apps":[]})" "\n"}) {
    d.answer = answer;
    for (const auto& args : std::vector<std::vector<std::string>>{{"ls"}, {"status", "web"}}) {
      auto r = d.cli(args);
      ASSERT_TRUE(r.code) << args[0] << " on " << answer << ": killed by a signal";
      EXPECT_NE(*r.code, 0) << args[0] << " on " << answer;
      EXPECT_TRUE(contains(r.err, "clutch: ")) << r.err;
    }
  }
}

TEST(Cli, ADaemonThatStaysSilentIsGivenUpOn) {
  fake_daemon d;
  d.does = behaviour::stay_silent;
  for (const auto& args : std::vector<std::vector<std::string>>{{"ls"}, {"stop", "web"}}) {
    auto r = d.cli(args, {{"CLUTCH_TIMEOUT_MS", "300"}});
    ASSERT_TRUE(r.code) << args[0];
    EXPECT_NE(*r.code, 0) << args[0];
    EXPECT_TRUE(contains(r.err, "did not answer in time")) << args[0] << ": " << r.err;
  }
  auto r = d.cli({"ls"}, {{"CLUTCH_TIMEOUT_MS", "soon"}});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "CLUTCH_TIMEOUT_MS")) << r.err;
  EXPECT_FALSE(d.launched());
}

// ---- usage ------------------------------------------------------------------------------------------------------

const std::vector<std::string> command_names = {"run",  "start", "ls",   "status", "stop",   "restart",
                                                "reload", "scale", "logs", "kill",   "delete", "daemon"};

TEST(Cli, VersionIsTheProjectsVersion) {
  fake_daemon d;
  auto r = d.cli({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "clutch " CLUTCH_VERSION "\n");
}

TEST(Cli, HelpAndNoArgumentsListTheCommands) {
  fake_daemon d;
  auto help = d.cli({"--help"});
  EXPECT_EQ(help.code, 0);
  auto bare = d.cli({});
  EXPECT_EQ(bare.code, 1) << "nothing was done, as git";
  for (const auto& c : command_names) {
    EXPECT_TRUE(contains(help.out, "  " + c + " ")) << c << " in:\n" << help.out;
    EXPECT_TRUE(contains(bare.out, "  " + c + " ")) << c << " in:\n" << bare.out;
  }
  EXPECT_TRUE(d.requests.empty());
}

TEST(Cli, ATypoIsAUsageErrorThatNamesWhatWasMeant) {
  fake_daemon d;  // answers nothing: a CLI that went on would fail, but not with these words
  struct typo {
    std::vector<std::string> args;
    std::string says;
  };
  for (const auto& t : std::vector<typo>{
           {{"start", "--name", "a", "--workres", "2", "--", "sleep", "1"},
            "clutch start: unknown option --workres; did you mean --workers?\n"},
           {{"start", "--name", "a", "--kill-timout=5", "--", "sleep", "1"},
            "clutch start: unknown option --kill-timout; did you mean --kill-timeout?\n"},
           {{"ls", "--jsno"}, "clutch ls: unknown option --jsno; did you mean --json?\n"},
           {{"run", "-workers", "2", "--", "sleep", "1"}, "clutch run: unknown option -workers; did you mean --workers?\n"},
           {{"ls", "--frobnicate"}, "clutch ls: unknown option --frobnicate (clutch ls --help lists the options)\n"},
           {{"--verison"}, "clutch: unknown option --verison; did you mean --version?\n"},
           {{"stpo", "web"}, "clutch: unknown command stpo; did you mean stop?\n"},
           {{"relaod", "web"}, "clutch: unknown command relaod; did you mean reload?\n"},
       }) {
    auto r = d.cli(t.args);
    EXPECT_EQ(r.code, 2) << t.args[0] << ' ' << t.args[1];
    EXPECT_EQ(r.err, t.says);
  }
  EXPECT_TRUE(d.requests.empty()) << "a usage error asks the daemon nothing";
  EXPECT_FALSE(d.launched());
}

TEST(Cli, AMissingConfigFileIsNamedWithItsReason) {
  fake_daemon d;
  const auto path = d.home.path + "/none.toml";
  auto r = d.cli({"start", path});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.err, "clutch start: cannot open " + path + ": No such file or directory\n");
  EXPECT_TRUE(d.requests.empty());
  EXPECT_FALSE(d.launched());
}

}  // namespace
