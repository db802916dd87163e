// The daemon's app table on disk, so that it survives the daemon: each app as it was defined (the JSON that
// config.hpp checks, with its current scale), the environment it starts from, and whether it was running. The
// daemon keeps the live table in $CLUTCH_HOME/apps.json, written after every change, which a daemon started after
// a crash of the last one restores; `clutch save` copies it to dump.json, which `clutch resurrect` restores (PM2's
// dump.pm2). Both are owner-only (0600): they hold the apps' environments.
//
//   supervisor::write_table(paths.table, entries);          // atomically: a crash leaves the old file or the new
//   auto entries = supervisor::read_table(paths.dump, why);  // nullopt: why says what is wrong with the file
#pragma once

#include <boost/json/object.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clutch/child_process.hpp"
#include "clutch/error.hpp"

namespace clutch::supervisor {

struct table_entry {
  boost::json::object source;               // the app's definition (workers: its scale when written)
  std::shared_ptr<const environment::map> env;  // run_settings::base_env
  bool running = false;                     // false: stopped or errored, and restored so
  std::vector<int> pids;                    // its processes when written: a restore waits for them to be gone
};

error_code write_table(const std::string& path, const std::vector<table_entry>& apps);
// A missing file is an empty table (why stays empty); a damaged one is nullopt.
std::optional<std::vector<table_entry>> read_table(const std::string& path, std::string& why);

}  // namespace clutch::supervisor
