#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string_view>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "os/file.hpp"
#include "supervisor/node_preload.hpp"

namespace clutch::supervisor::detail {

namespace {

// Ours and nobody else's to change: what workers load must not be writable by another user.
bool ours(const std::string& path, mode_t type) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && (st.st_mode & S_IFMT) == type && st.st_uid == ::geteuid() &&
         (st.st_mode & 022) == 0;
}

bool holds_source(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  return in.good() || in.eof() ? text == node_preload_source : false;
}

// $TMPDIR/clutch-node-<uid>-<hash of the source>/preload.cjs: one per user and version of it, shared by every
// clutch process of that user (readable by all, since workers may run as another user) and left in place, as a
// cache is, so that a clutch that is killed leaves nothing new behind. "" if it cannot be had safely.
std::string preload_file_in(const std::string& tmp, const std::string& name) {
  std::string folder = tmp + name;
  if (::mkdir(folder.c_str(), 0755) == 0) {
    if (::chmod(folder.c_str(), 0755) != 0) return {};  // the umask's
  } else if (errno != EEXIST) {
    return {};
  }
  if (!ours(folder, S_IFDIR)) return {};
  // Node loads it by its real path, and the preload finds its --require by that path.
  if (char* real = ::realpath(folder.c_str(), nullptr)) {
    folder = real;
    std::free(real);
  }
  const std::string file = folder + "/preload.cjs";
  if (ours(file, S_IFREG) && holds_source(file)) return file;
  // Whole, for a clutch process starting at the same time; readable by workers that run as another user.
  return os::replace_file(file, node_preload_source, 0644, false) == 0 ? file : std::string();
}

std::string make_preload_file() {
  std::uint64_t hash = 14695981039346656037ull;  // FNV-1a
  for (const char* c = node_preload_source; *c; ++c) hash = (hash ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
  char name[64];
  std::snprintf(name, sizeof name, "/clutch-node-%u-%016llx", static_cast<unsigned>(::geteuid()),
                static_cast<unsigned long long>(hash));
  const char* tmp = std::getenv("TMPDIR");
  if (tmp && *tmp) {
    if (auto file = preload_file_in(tmp, name); !file.empty()) return file;
  }
  return preload_file_in("/tmp", name);
}

}  // namespace

const std::string& node_preload_path() {
  static const std::string path = make_preload_file();  // once, at the first Node worker
  return path;
}

std::string with_node_preload(const std::string& node_options, const std::string& path) {
  // JSON's quoting is one Node's NODE_OPTIONS parser reads, and the one the preload looks for.
  return node_options + " --require " + boost::json::serialize(boost::json::value(path));
}

}  // namespace clutch::supervisor::detail
