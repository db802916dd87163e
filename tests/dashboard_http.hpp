// Talking to the dashboard as a browser does (dashboard_test, dashboard_browser_test):
//   auto d = clutch_test::dashboard_http::dashboard(cli);   // `clutch dashboard`: d.url, d.port, d.token
//   auto [status, body] = call(d.port, "POST", "/api/apps/web/reload", {{"X-Clutch-Token", d.token}});
// Host is 127.0.0.1:PORT unless given (the server refuses any other for the dashboard).
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "clutch_run.hpp"

namespace clutch_test::dashboard_http {

using headers = std::vector<std::pair<std::string, std::string>>;

inline std::pair<int, std::string> call(unsigned short port, const std::string& method, const std::string& target,
                                        const headers& more = {}, const std::string& host = {}) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  beast::tcp_stream s(io);
  s.expires_after(std::chrono::seconds(30));
  clutch::error_code ec;
  s.connect({boost::asio::ip::address_v4::loopback(), port}, ec);
  if (ec) return {0, ec.message()};
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, host.empty() ? "127.0.0.1:" + std::to_string(port) : host);
  for (const auto& [k, v] : more) req.set(k, v);
  req.prepare_payload();
  http::write(s, req, ec);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  if (!ec) http::read(s, buf, res, ec);
  if (ec) return {0, ec.message()};
  return {res.result_int(), res.body()};
}

struct address {
  std::string url, token;
  unsigned short port = 0;
};

// `clutch dashboard` of the daemon in cli's home.
inline address dashboard(const clutch_home& cli) {
  address a;
  auto r = cli({"dashboard"});
  a.url = r.out;
  std::smatch m;
  if (r.status.code == 0 && std::regex_search(r.out, m, std::regex(R"(^http://127\.0\.0\.1:(\d+)/#token=([0-9a-f]{32})\n$)"))) {
    a.port = static_cast<unsigned short>(std::stoi(m[1]));
    a.token = m[2];
    a.url.pop_back();
  }
  return a;
}

}  // namespace clutch_test::dashboard_http
