// The web dashboard's server side: the timeline (samples, events), and the real daemon's status server serving the
// page, /api/history, the accept queues it reads from the kernel, and actions that need the token.
// tests/dashboard_browser_test.cpp loads the page in a real browser.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "clutch_run.hpp"
#include "dashboard_http.hpp"
#include "helpers.hpp"
#include "supervisor/dashboard.hpp"

namespace {

namespace json = boost::json;
namespace sv = clutch::supervisor;
using namespace std::chrono_literals;
using clutch_test::dashboard_http::call;
using clutch_test::dashboard_http::dashboard;
using clutch_test::eventually;
using clutch_test::free_port;

json::object app_of(std::string name, std::vector<json::object> procs) {
  json::array a(procs.begin(), procs.end());
  return {{"name", std::move(name)}, {"workers", procs.size()}, {"processes", std::move(a)}};
}
json::object proc(int slot, double cpu, std::uint64_t memory, unsigned restarts, unsigned waiting) {
  return {{"role", "worker"}, {"slot", slot}, {"cpu", cpu}, {"memory", memory}, {"restarts", restarts},
          {"queues", json::array{json::object{{"address", "127.0.0.1:1"}, {"waiting", waiting}, {"backlog", 511}}}}};
}

}  // namespace

TEST(Timeline, KeepsTenMinutesOfEachAppAndTheEventsAfterAPoint) {
  sv::timeline t;
  const std::int64_t start = 1'000'000'000;
  for (int i = 0; i < 700; ++i) {  // 700 s: the first 100 fall out of the ten minutes
    json::array apps{app_of("web", {proc(0, 10, 100, 0, i % 3), proc(1, 20, 200, 1, 0)})};
    if (i < 5) apps.push_back(app_of("gone", {proc(0, 1, 1, 0, 0)}));
    t.sample({{"apps", apps}}, start + i * 1000);
  }
  auto all = t.since(0, false);
  EXPECT_EQ(all.at("now").as_int64(), start + 699 * 1000);
  const auto& web = all.at("apps").as_object().at("web").as_object();
  ASSERT_EQ(web.at("t").as_array().size(), 601u);  // 600 s back from the last, both ends in
  EXPECT_EQ(web.at("t").as_array().front().as_int64(), start + 99 * 1000);
  EXPECT_EQ(web.at("cpu").as_array().back().as_double(), 30.0);
  EXPECT_EQ(web.at("memory").as_array().back().as_uint64(), 300u);
  EXPECT_EQ(web.at("restarts").as_array().back().as_uint64(), 1u);
  EXPECT_EQ(web.at("waiting").as_array().back().as_object().at("0").as_uint64(), 699u % 3);
  EXPECT_FALSE(all.at("apps").as_object().contains("gone")) << "an app gone ten minutes is dropped";
  // Only what came after `since`.
  auto later = t.since(start + 697 * 1000, false);
  EXPECT_EQ(later.at("apps").as_object().at("web").as_object().at("t").as_array().size(), 2u);

  t.event("web", "crash", "worker 3 (pid 9) killed by SIGKILL", {"a", "b"});
  auto with = t.since(0, true).at("events").as_array();
  ASSERT_EQ(with.size(), 1u);
  EXPECT_EQ(with[0].at("kind").as_string(), "crash");
  EXPECT_EQ(with[0].at("lines").as_array().size(), 2u);
  auto without = t.since(0, false).at("events").as_array();
  EXPECT_FALSE(without[0].as_object().contains("lines")) << "log lines only with the token";
  EXPECT_TRUE(t.since(with[0].at("at").as_int64(), true).at("events").as_array().empty());
  for (int i = 0; i < 300; ++i) t.event("web", "scale", "x");
  EXPECT_EQ(t.since(0, false).at("events").as_array().size(), sv::timeline::events_kept);
}

TEST(Timeline, TheTokenIsMadeOnceOwnerOnlyAndComparedWhole) {
  clutch_test::temp_dir home;
  clutch::error_code ec;
  const auto token = sv::dashboard_token(home.path, ec);
  ASSERT_FALSE(ec) << ec.message();
  EXPECT_TRUE(std::regex_match(token, std::regex("[0-9a-f]{32}")));
  EXPECT_EQ(sv::dashboard_token(home.path, ec), token);
  struct stat st {};
  ASSERT_EQ(::stat((home.path + "/dashboard.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(sv::same_token(token, token));
  EXPECT_FALSE(sv::same_token(token, token.substr(0, 31) + "x"));
  EXPECT_FALSE(sv::same_token("", ""));
}

// The daemon's dashboard: `clutch dashboard` prints its address with the token; the page and its data are
// served; an action without the token (or with a wrong one, or another Host) changes nothing and gets 403; with
// it, it does what the CLI's command would, and the timeline shows it.
TEST(Dashboard, ActionsNeedTheTokenAndChangeNothingWithoutIt) {
  clutch_test::clutch_home cli;
  ASSERT_EQ(cli({"start", "--name", "web", "--workers", "2", "--", "sh", "-c", "echo up; exec sleep 300"}).status.code, 0);
  const auto d = dashboard(cli);
  ASSERT_NE(d.port, 0) << d.url;
  auto [code, page] = call(d.port, "GET", "/");
  EXPECT_EQ(code, 200);
  EXPECT_NE(page.find("<title>clutch</title>"), std::string::npos);
  auto workers = [&] {
    auto [c, body] = call(d.port, "GET", "/api/status");
    return c == 200 ? json::parse(body).at("apps").at(0).at("workers").as_int64() : -1;
  };
  EXPECT_EQ(workers(), 2);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/web/scale?workers=3").first, 403);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/web/scale?workers=3", {{"X-Clutch-Token", "0123"}}).first, 403);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/web/scale?workers=3", {{"X-Clutch-Token", d.token}}, "evil.example:80")
                .first,
            403);
  EXPECT_EQ(call(d.port, "GET", "/", {}, "evil.example").first, 403) << "DNS rebinding";
  EXPECT_EQ(workers(), 2) << "nothing changed";
  auto [ok, answer] = call(d.port, "POST", "/api/apps/web/scale?workers=3", {{"X-Clutch-Token", d.token}});
  EXPECT_EQ(ok, 200) << answer;
  EXPECT_EQ(workers(), 3);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/nope/reload", {{"X-Clutch-Token", d.token}}).first, 400);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/web/explode", {{"X-Clutch-Token", d.token}}).first, 400);
  EXPECT_EQ(call(d.port, "POST", "/api/apps/web/reload", {{"X-Clutch-Token", d.token}}).first, 200);
  // The timeline: samples once a second, and what happened.
  json::object h;
  ASSERT_TRUE(eventually([&] {
    auto [c, body] = call(d.port, "GET", "/api/history?since=0");
    h = json::parse(body).as_object();
    return c == 200 && h.at("apps").as_object().contains("web") && h.at("events").as_array().size() >= 3;
  }, 10s)) << json::serialize(h);
  std::vector<std::string> kinds;
  for (const auto& e : h.at("events").as_array()) kinds.emplace_back(e.at("kind").as_string());
  EXPECT_EQ(kinds, (std::vector<std::string>{"scale", "reload", "reloaded"}));
  EXPECT_FALSE(h.at("token_ok").as_bool());
  EXPECT_TRUE(h.at("actions").as_bool());
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}

// A worker that accepts nothing: the connections clients made wait in its socket's accept queue, and the status
// (and the dashboard's chart of it) shows how many; a crash is on the timeline with its last lines, for the
// token's holder only.
TEST(Dashboard, ShowsEachWorkersAcceptQueueAndCrashesWithTheirLastLines) {
  clutch_test::clutch_home cli;
  const auto port = free_port();
  ASSERT_EQ(cli({"start", "--name", "slow", "--workers", "1", "--ready", "none", "--listen",
                 "127.0.0.1:" + std::to_string(port), "--",
                 "sh", "-c", "echo last words; exec sleep 300"})
                .status.code,
            0);
  const auto d = dashboard(cli);
  std::vector<int> clients;
  for (int i = 0; i < 5; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);  // the kernel completes it: queued
    clients.push_back(fd);
  }
  json::object worker;
  ASSERT_TRUE(eventually([&] {
    auto [c, body] = call(d.port, "GET", "/api/status");
    worker = json::parse(body).at("apps").at(0).at("processes").at(0).as_object();
    return worker.at("queues").as_array().size() == 1 && worker.at("queues").at(0).at("waiting").as_int64() == 5;
  }, 10s)) << json::serialize(worker);
  EXPECT_GT(worker.at("queues").at(0).at("backlog").as_int64(), 5);
  EXPECT_EQ(worker.at("queues").at(0).at("address").as_string(), "127.0.0.1:" + std::to_string(port));
  ASSERT_TRUE(eventually([&] {
    auto [c, body] = call(d.port, "GET", "/api/history?since=0");
    const auto h = json::parse(body);
    const auto& w = h.at("apps").at("slow").at("waiting").as_array();
    return !w.empty() && w.back().at("0").as_int64() == 5;
  }, 10s));
  for (const int fd : clients) ::close(fd);
  ASSERT_TRUE(clutch_test::signal_ours(worker.at("pid").as_int64(), SIGKILL));  // a worker of the daemon this test started
  json::array events;
  auto crash_event = [&](const std::string& token) {
    auto [c, body] = call(d.port, "GET", "/api/history?since=0", token.empty() ? clutch_test::dashboard_http::headers{}
                                                                                : clutch_test::dashboard_http::headers{{"X-Clutch-Token", token}});
    events = json::parse(body).at("events").as_array();
    for (const auto& e : events)
      if (e.at("kind").as_string() == "crash") return e.as_object();
    return json::object{};
  };
  ASSERT_TRUE(eventually([&] { return !crash_event(d.token).empty(); }, 10s)) << json::serialize(events);
  const auto with = crash_event(d.token);
  EXPECT_NE(json::serialize(with.at("text")).find("SIGKILL"), std::string::npos) << json::serialize(with);
  EXPECT_EQ(with.at("lines").as_array().back().as_string(), "last words");
  EXPECT_FALSE(crash_event("").contains("lines"));
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}

// The rest of the timeline's events: a worker over its memory limit replaced, a slot given up after its crash
// loop (each crash before it, with its last lines).
TEST(Dashboard, TheTimelineHasMemoryReplacementsAndSlotsGivenUp) {
  clutch_test::clutch_home cli;
  const auto file = cli.home.path + "/apps.toml";
  std::ofstream(file) << "[[app]]\nname = \"hungry\"\ncommand = \"python3\"\n"
                         "args = [\"-c\", \"import time; x = b'x' * (64 << 20); time.sleep(300)\"]\n"
                         "max_memory = \"32M\"\n"
                         "[[app]]\nname = \"broken\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo about to fail; exit 3\"]\n"
                         "max_restarts = 2\n";
  ASSERT_EQ(cli({"start", file}).status.code, 0);
  const auto d = dashboard(cli);
  std::set<std::string> kinds;
  std::string crash_lines;
  ASSERT_TRUE(eventually([&] {
    auto [c, body] = call(d.port, "GET", "/api/history?since=0", {{"X-Clutch-Token", d.token}});
    const auto h = json::parse(body);
    for (const auto& e : h.at("events").as_array()) {
      kinds.insert(std::string(e.at("app").as_string()) + " " + std::string(e.at("kind").as_string()));
      if (e.at("kind").as_string() == "crash" && !e.at("lines").as_array().empty())
        crash_lines = e.at("lines").as_array().back().as_string();
    }
    return kinds.contains("hungry memory") && kinds.contains("broken given_up");
  }, 30s)) << [&] {
    std::string all;
    for (const auto& k : kinds) all += k + "; ";
    return all;
  }();
  EXPECT_TRUE(kinds.contains("broken crash"));
  EXPECT_EQ(crash_lines, "about to fail");
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}
