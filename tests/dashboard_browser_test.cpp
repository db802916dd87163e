// The web dashboard in a real browser (headless Chromium, installed by the test if missing), on a real daemon with
// two apps: the page shows them and their workers with live values; a SIGKILLed worker shows up as a restart and
// an event; without the token it offers no action and the server refuses one, with it the page's buttons work; it
// keeps updating while clients hold every connection the status port allows. The test leaves a screenshot of the
// page in the build folder (dashboard.png).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "browser.hpp"
#include "clutch_run.hpp"
#include "dashboard_http.hpp"
#include "helpers.hpp"

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using clutch_test::eventually;
using clutch_test::dashboard_http::call;

json::object status_of(unsigned short port, const std::string& app) {
  auto [code, body] = call(port, "GET", "/api/status");
  if (code != 200) return {};
  const auto all = json::parse(body);
  for (const auto& a : all.at("apps").as_array())
    if (a.at("name").as_string() == app) return a.as_object();
  return {};
}

std::int64_t number(const json::value& v) { return v.is_int64() ? v.as_int64() : v.is_double() ? static_cast<std::int64_t>(v.as_double()) : -1; }

}  // namespace

TEST(DashboardBrowser, ShowsTheAppsLiveAndActsOnlyWithTheToken) {
  clutch_test::browser b;
  ASSERT_TRUE(b.ok()) << b.why;
  clutch_test::clutch_home cli;
  const auto port = clutch_test::free_port();
  ASSERT_EQ(cli({"start", "--name", "web", "--workers", "2", "--listen", "127.0.0.1:" + std::to_string(port), "--",
                 "node", CLUTCH_FIXTURES "/../../bench/hello.js"})
                .status.code,
            0);
  ASSERT_EQ(cli({"start", "--name", "jobs", "--workers", "1", "--", "sh", "-c", "echo job started; exec sleep 300"})
                .status.code,
            0);
  const auto d = clutch_test::dashboard_http::dashboard(cli);
  ASSERT_NE(d.port, 0) << d.url;
  auto count = [&](const std::string& selector) {
    return number(b.eval("document.querySelectorAll(" + json::serialize(json::string(selector)) + ").length"));
  };
  auto text = [&](const std::string& js) {
    auto v = b.eval(js);
    return v.is_string() ? std::string(v.as_string()) : std::string();
  };

  // Without the token: both apps, their workers with the pids the daemon reports, updated once a second.
  ASSERT_TRUE(b.open("http://127.0.0.1:" + std::to_string(d.port) + "/")) << b.why;
  ASSERT_TRUE(eventually([&] {
    return count("[data-app=web] tr[data-role=worker]") == 2 && count("[data-app=jobs] tr[data-role=worker]") == 1;
  }, 20s)) << text("document.body.innerText");
  const auto web = status_of(d.port, "web");
  for (const auto& p : web.at("processes").as_array())
    EXPECT_EQ(count("[data-app=web] tr[data-pid='" + std::to_string(p.at("pid").as_int64()) + "']"), 1);
  EXPECT_NE(text("document.querySelector('[data-app=web] figure[data-chart=\"memory\"] figcaption').innerText"), "");
  const auto first = text("document.body.dataset.updated");
  EXPECT_TRUE(eventually([&] { return text("document.body.dataset.updated") != first; }, 10s)) << "live";
  EXPECT_EQ(text("document.getElementById('mode').textContent"), "read-only (no token)");
  EXPECT_EQ(count("[data-action]"), 0) << "no action offered without the token";
  EXPECT_EQ(number(b.eval("fetch('/api/apps/web/scale?workers=3', {method: 'POST'}).then((r) => r.status)")), 403);
  EXPECT_EQ(status_of(d.port, "web").at("workers").as_int64(), 2);

  // A SIGKILLed worker: once the daemon has restarted it, the page shows the restart and the event within 2 s.
  const auto victim = status_of(d.port, "web").at("processes").at(0).at("pid").as_int64();
  ASSERT_TRUE(clutch_test::signal_ours(victim, SIGKILL));  // a worker of the daemon this test started
  ASSERT_TRUE(eventually([&] { return number(status_of(d.port, "web").at("restarts")) == 1; }, 20s));
  EXPECT_TRUE(eventually([&] {
    return count("[data-app=web] tr[data-restarts='1']") == 1 && count("#events li[data-kind=crash][data-app=web]") == 1;
  }, 2s)) << text("document.body.innerText");
  EXPECT_EQ(count("#events li[data-kind=crash] pre"), 0) << "no log lines without the token";

  // Clients hold every connection the status port allows, and keep opening more: the page keeps updating.
  {
    std::atomic<bool> done{false};
    std::thread hog([&] {
      std::vector<int> held;
      while (!done) {
        const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(d.port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) held.push_back(fd);
        else ::close(fd);
        if (held.size() > 300) {  // the oldest go: this client's own descriptors stay bounded
          ::close(held.front());
          held.erase(held.begin());
        }
        std::this_thread::sleep_for(2ms);
      }
      for (const int fd : held) ::close(fd);
    });
    std::this_thread::sleep_for(500ms);  // every slot taken by now
    int updates = 0;
    std::string last = text("document.body.dataset.updated");
    for (auto end = std::chrono::steady_clock::now() + 6s; std::chrono::steady_clock::now() < end;) {
      std::this_thread::sleep_for(200ms);
      if (auto now = text("document.body.dataset.updated"); now != last) {
        ++updates;
        last = now;
      }
    }
    done = true;
    hog.join();
    EXPECT_GE(updates, 3) << "the page went on updating under the flood";
  }

  // With the token (from the address `clutch dashboard` printed): the buttons, which act.
  ASSERT_TRUE(b.open(d.url)) << b.why;
  ASSERT_TRUE(eventually([&] { return count("[data-app=web] [data-action=scale-up]") == 1; }, 20s))
      << text("document.body.innerText");
  EXPECT_EQ(text("document.getElementById('mode').textContent"), "actions on");
  EXPECT_EQ(text("location.hash"), "") << "the token is taken out of the address bar";
  b.eval("document.querySelector('[data-app=web] [data-action=scale-up]').click()");
  EXPECT_TRUE(eventually([&] { return count("[data-app=web] tr[data-role=worker]") == 3; }, 20s))
      << text("document.body.innerText");
  EXPECT_EQ(status_of(d.port, "web").at("workers").as_int64(), 3);
  EXPECT_TRUE(eventually([&] { return count("#events li[data-kind=scale][data-app=web]") == 1; }, 10s));
  // The holder of the token sees a crash's last lines.
  const auto job = status_of(d.port, "jobs").at("processes").at(0).at("pid").as_int64();
  ASSERT_TRUE(clutch_test::signal_ours(job, SIGKILL));
  EXPECT_TRUE(eventually([&] {
    return text("(document.querySelector('#events li[data-kind=crash][data-app=jobs] pre') || {}).textContent || ''")
               .find("job started") != std::string::npos;
  }, 10s)) << text("document.getElementById('events').innerText");
  EXPECT_TRUE(b.screenshot(CLUTCH_TEST_OUTPUT "/dashboard.png"));
  EXPECT_EQ(cli({"kill"}).status.code, 0);
}
