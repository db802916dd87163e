#include "os/file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "os/fd.hpp"

namespace clutch::os {

int replace_file(const std::string& path, std::string_view text, mode_t mode, bool durable) {
  std::string temp = path + ".XXXXXX";
  unique_fd fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (!fd) return errno;
  int err = ::fchmod(fd.get(), mode) == 0 ? 0 : errno;
  while (err == 0 && !text.empty()) {
    const auto n = ::write(fd.get(), text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) err = n < 0 ? errno : EIO;
    else text.remove_prefix(static_cast<std::size_t>(n));
  }
  if (err == 0 && durable && ::fsync(fd.get()) != 0) err = errno;
  if (err == 0 && ::close(fd.release()) != 0) err = errno;
  if (err == 0 && ::rename(temp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) ::unlink(temp.c_str());
  return err;
}

}  // namespace clutch::os
