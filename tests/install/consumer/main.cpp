// A program outside the clutch tree, built against an installed clutch.
#include <clutch/child_process.hpp>
#include <iostream>

int main() {
  auto r = clutch::exec_sync("echo consumer ok");
  std::cout << r.out;
  return r.status.ok() ? 0 : 1;
}
