# The two commands of the README, and a few more.
#   make demo   install what is missing, build, run the main demo
#   make test   install what is missing, build (Debug, -Werror), run every test with ctest
#   make asan   the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench  build Release and run bench/run (all benchmarks)
JOBS  ?= 2
DEBUG := build/debug
ASAN  := build/asan

CMAKE_COMMON := -DCLUTCH_WERROR=ON -DCLUTCH_BUILD_TESTS=ON -DCLUTCH_BUILD_EXAMPLES=ON

.PHONY: deps demo test asan bench clean

deps:
	@scripts/install-deps

$(DEBUG)/CMakeCache.txt: | deps
	cmake -S . -B $(DEBUG) -DCMAKE_BUILD_TYPE=Debug $(CMAKE_COMMON)

$(ASAN)/CMakeCache.txt: | deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DCLUTCH_SANITIZE=ON $(CMAKE_COMMON)

demo: deps $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS) --target exec_example
	@rm -rf $(DEBUG)/demo && mkdir -p $(DEBUG)/demo/log
	@echo "started" > $(DEBUG)/demo/log/app.log && echo "nothing yet" > $(DEBUG)/demo/log/error.log
	@echo "== examples/exec.cpp: ls in ./log, streamed and then buffered"
	cd $(DEBUG)/demo && ../examples/exec

test: deps $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS)
	cd $(DEBUG) && ctest -j$(JOBS) --output-on-failure

asan: deps $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j$(JOBS)
	cd $(ASAN) && ctest -j$(JOBS) --output-on-failure

bench: deps
	bench/run

clean:
	rm -rf build
