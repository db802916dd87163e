// A real headless Chromium for tests of a web page (dashboard_browser_test), driven through the DevTools protocol:
//   clutch_test::browser b;                        // Debian's chromium, installed first if missing
//   ASSERT_TRUE(b.ok()) << b.why;
//   b.open("http://127.0.0.1:8080/");             // a new tab on that page
//   auto v = b.eval("document.title");            // Runtime.evaluate (promises awaited), the value as JSON
//   b.screenshot("page.png");
// The browser runs in its own process group, with a profile in a temp folder, and ends with the object.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "clutch/child_process.hpp"
#include "dashboard_http.hpp"
#include "helpers.hpp"

namespace clutch_test {

class browser {
 public:
  std::string why;  // why not ok()

  browser() {
    if (!tool_installed("/usr/bin/chromium", "chromium", &why)) return;
    const std::string err = profile_.path + "/stderr.txt";
    clutch::options o;
    o.kill_tree = true;  // its own group: the renderers and the zygote end with it
    proc_ = clutch::spawn(io_, "/bin/sh",
                          {"-c", "exec chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars "
                                 "--window-size=1280,900 --remote-debugging-port=0 --user-data-dir=" +
                                     profile_.path + "/profile about:blank 2>" + err},
                          o);
    std::smatch m;
    const bool listening = eventually(
        [&] {
          std::ifstream in(err);
          std::stringstream s;
          s << in.rdbuf();
          const std::string text = s.str();
          return std::regex_search(text, m, std::regex(R"(DevTools listening on ws://127\.0\.0\.1:(\d+)/)")) &&
                 (port_ = static_cast<unsigned short>(std::stoi(m[1]))) != 0;
        },
        std::chrono::seconds(60));
    if (!listening) why = "chromium did not start its DevTools server";
  }
  ~browser() {
    if (ws_) {
      clutch::error_code ignored;
      ws_->next_layer().socket().close(ignored);
    }
    if (proc_.pid() > 0) {
      proc_.kill(SIGKILL);  // the group we started
      run_until(io_, [&] { return proc_.exit().has_value(); }, std::chrono::seconds(10));
    }
  }
  browser(const browser&) = delete;
  browser& operator=(const browser&) = delete;

  bool ok() const { return why.empty(); }

  // A new tab on url; its DevTools connection replaces the last one.
  bool open(const std::string& url) {
    auto [code, body] = dashboard_http::call(port_, "PUT", "/json/new?" + url);
    if (code != 200) {
      why = "DevTools /json/new: " + std::to_string(code) + " " + body;
      return false;
    }
    const auto target = boost::json::parse(body).as_object();
    const std::string ws_url(target.at("webSocketDebuggerUrl").as_string());
    const auto path = ws_url.substr(ws_url.find('/', std::string("ws://").size()));
    ws_.emplace(io_);
    ws_->next_layer().expires_after(std::chrono::seconds(30));
    clutch::error_code ec;
    ws_->next_layer().connect({boost::asio::ip::address_v4::loopback(), port_}, ec);
    if (!ec) ws_->handshake("127.0.0.1:" + std::to_string(port_), path, ec);
    if (ec) why = "DevTools websocket: " + ec.message();
    return !ec;
  }

  // A DevTools command's result (its "result" object), or an empty one and why.
  boost::json::object call(const std::string& method, boost::json::object params = {}) {
    if (!ws_) return {};
    const int id = next_id_++;
    clutch::error_code ec;
    ws_->next_layer().expires_after(std::chrono::seconds(30));
    ws_->write(boost::asio::buffer(boost::json::serialize(
                   boost::json::object{{"id", id}, {"method", method}, {"params", std::move(params)}})),
               ec);
    while (!ec) {
      boost::beast::flat_buffer buf;
      ws_->read(buf, ec);
      if (ec) break;
      auto v = boost::json::parse(boost::beast::buffers_to_string(buf.data()));
      const auto& o = v.as_object();
      if (const auto* got = o.if_contains("id"); got && got->as_int64() == id) {
        if (const auto* r = o.if_contains("result")) return r->as_object();
        why = boost::json::serialize(o);
        return {};
      }
    }
    why = method + ": " + ec.message();
    return {};
  }

  // The value of a JavaScript expression in the page (a promise is awaited); null if it threw.
  boost::json::value eval(const std::string& expression) {
    auto r = call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}, {"awaitPromise", true}});
    if (r.contains("exceptionDetails") || !r.contains("result")) return nullptr;
    const auto& result = r.at("result").as_object();
    return result.contains("value") ? result.at("value") : boost::json::value(nullptr);
  }

  bool screenshot(const std::string& path) {
    auto r = call("Page.captureScreenshot", {{"format", "png"}});
    if (!r.contains("data")) return false;
    const auto& b64 = r.at("data").as_string();
    std::string png(boost::beast::detail::base64::decoded_size(b64.size()), '\0');
    const auto n = boost::beast::detail::base64::decode(png.data(), b64.data(), b64.size());
    png.resize(n.first);
    std::ofstream(path, std::ios::binary) << png;
    return true;
  }

 private:
  boost::asio::io_context io_;
  temp_dir profile_;
  clutch::child proc_;
  unsigned short port_ = 0;
  std::optional<boost::beast::websocket::stream<boost::beast::tcp_stream>> ws_;
  int next_id_ = 1;
};

}  // namespace clutch_test
