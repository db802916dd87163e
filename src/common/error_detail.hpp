// Library-private error helpers.
#pragma once

#include "clutch/error.hpp"
#include "os/spawn.hpp"

namespace clutch::detail {

error_code spawn_error(os::spawn_stage stage, int errno_value) noexcept;
inline error_code errno_error(int errno_value) noexcept { return {errno_value, boost::system::generic_category()}; }

}  // namespace clutch::detail
