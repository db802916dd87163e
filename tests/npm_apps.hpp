// The npm packages the tests run (tests/fixtures/npm_apps: Express's and Fastify's examples, and PM2), with their
// node_modules, in the build tree:
//   std::string why;
//   const auto dir = clutch_test::npm_apps(why);   // "" and why on failure
// `npm ci` from the lock file runs once per lock file; tests running at the same time wait for the one installing.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "clutch/child_process.hpp"

namespace clutch_test {

inline std::string read_whole_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string npm_apps(std::string& why) {
  namespace fs = std::filesystem;
  const fs::path from = CLUTCH_FIXTURES "/npm_apps", dir = CLUTCH_NPM_DIR;
  fs::create_directories(dir);
  const int lock = ::open((dir / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    why = "cannot lock " + dir.string();
    if (lock >= 0) ::close(lock);
    return {};
  }
  for (const auto& f : fs::directory_iterator(from))
    fs::copy_file(f.path(), dir / f.path().filename(), fs::copy_options::overwrite_existing);
  const std::string wanted = read_whole_file(from / "package-lock.json");
  if (read_whole_file(dir / ".installed") != wanted) {
    clutch::options o;
    o.cwd = dir.string();
    o.timeout = std::chrono::seconds(600);
    auto r = clutch::spawn_sync("npm", {"ci", "--no-audit", "--no-fund"}, o);
    if (r.error || r.status.code != 0) {
      why = "npm ci failed: " + r.err + r.error.message();
      ::close(lock);
      return {};
    }
    std::ofstream(dir / ".installed") << wanted;
  }
  ::close(lock);
  return dir.string();
}

}  // namespace clutch_test
