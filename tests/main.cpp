// The test binary is also its own helper child, as libuv's is: `clutch_tests --helper NAME ARGS…` runs one of the
// small programs in helpers.cpp instead of the tests.
#include <gtest/gtest.h>

#include <cstring>

#include "helpers.hpp"

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--helper") == 0) return clutch_test::run_helper(argc - 2, argv + 2);
  clutch_test::set_self(argv[0]);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
