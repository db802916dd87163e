// The preload clutch gives its Node cluster workers (node_preload.cjs says what it does and why):
//   const std::string& path = node_preload_path();   // "" if it could not be written: do without it
//   vars["NODE_OPTIONS"] = with_node_preload(current NODE_OPTIONS, path);
// The file is $TMPDIR/clutch-node-<uid>-<hash>/preload.cjs, one per user and version, readable by all (workers
// may run as another user) and writable by its owner alone; it is checked (or written) once per clutch process.
#pragma once

#include <string>

namespace clutch::supervisor::detail {

extern const char* const node_preload_source;  // node_preload.cjs, built in

const std::string& node_preload_path();

// NODE_OPTIONS with the preload's --require at the end (the preload takes it out again, by that exact text).
std::string with_node_preload(const std::string& node_options, const std::string& path);

}  // namespace clutch::supervisor::detail
