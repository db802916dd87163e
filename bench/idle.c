/* The program of bench/scale.py: it does nothing until a signal ends it (SIGTERM's default action), so that what
   is measured is the supervisor alone. */
#include <unistd.h>

int main(void) {
  for (;;) pause();
}
