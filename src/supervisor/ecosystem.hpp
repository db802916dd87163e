// PM2's ecosystem file, read as is: `clutch start ecosystem.config.js [--env production]`. The file is JavaScript
// (or JSON), so node evaluates it (node must be on PATH); its apps[] become the app objects config.hpp checks,
// field by field (ecosystem.cpp lists them). A field clutch does not support is named in `unsupported`, once, and
// the rest of the app runs.
//
//   std::string why;
//   std::vector<std::string> unsupported;
//   auto file = supervisor::load_ecosystem("ecosystem.config.js", "production", why, unsupported);
//   for (auto& note : unsupported) std::cerr << "clutch: " << note << "\n";
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "supervisor/config.hpp"

namespace clutch::supervisor {

// Whether file is a PM2 ecosystem file by its name: ecosystem*.js|cjs|mjs|json, *.config.js|cjs|mjs.
bool is_ecosystem_file(std::string_view file);

// env_name: PM2's --env, whose env_<name> goes over each app's env (empty: none). Relative paths (script, cwd,
// log files) are the file's folder's, as PM2 takes them.
std::optional<config_file> load_ecosystem(const std::string& path, const std::string& env_name, std::string& why,
                                          std::vector<std::string>& unsupported);

}  // namespace clutch::supervisor
