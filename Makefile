# The two commands of the README, and a few more.
#   make demo   install what is missing, build, run the main demos (examples/agent_app; the clutch supervisor)
#   make demos  the earlier demos (exec, fork, cluster)
#   make test   install what is missing, build (Debug, -Werror), run every test with ctest
#   make asan   the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make clang  the same tests built by Clang (Release), so that nothing only GCC accepts lands
#   make fuzz   build the libFuzzer targets with clang and run each for FUZZ_SECONDS (default 60)
#   make bench  build Release and run bench/run (all benchmarks)
#   make package  the static binary, the npm package and the Debian packages, into build/package/dist
#   make package-test  make package, then test what it wrote (tests/package/check; .ci/run runs it)
JOBS  ?= 2
DEBUG := build/debug
ASAN  := build/asan
FUZZ  := build/fuzz
CLANG := build/clang
FUZZ_SECONDS ?= 60

# Builds of the same sources in other folders (a second clone, CI's) share ccache's results.
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1

CMAKE_COMMON := -DCLUTCH_WERROR=ON -DCLUTCH_BUILD_TESTS=ON -DCLUTCH_BUILD_EXAMPLES=ON

.PHONY: deps demo demos test asan clang fuzz bench package package-test clean

deps:
	@scripts/install-deps

$(DEBUG)/CMakeCache.txt: | deps
	cmake -S . -B $(DEBUG) -DCMAKE_BUILD_TYPE=Debug $(CMAKE_COMMON)

$(ASAN)/CMakeCache.txt: | deps
	cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DCLUTCH_SANITIZE=ON $(CMAKE_COMMON)

# The main demo: examples/agent_app (a master, an agent and app workers on port 7001), then the clutch
# supervisor running examples/apps.toml (port 7002).
demo: deps $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS) --target agent_app clutch_cli
	@echo "== examples/agent_app.cpp: the master starts the agent, then the app workers; HTTP on port 7001"
	scripts/app-demo $(DEBUG)/examples/agent_app 7001
	@echo "== the clutch supervisor: examples/apps.toml in a daemon of its own; HTTP on port 7002"
	scripts/supervisor-demo $(DEBUG)/tools/clutch/clutch

# The earlier layers' demos: exec, fork (C++ and Node children), cluster.
demos: deps $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS) --target exec_example fork_parent fork_child cluster_http
	@rm -rf $(DEBUG)/demo && mkdir -p $(DEBUG)/demo/log
	@echo "started" > $(DEBUG)/demo/log/app.log && echo "nothing yet" > $(DEBUG)/demo/log/error.log
	@echo "== examples/exec.cpp: ls in ./log, streamed and then buffered"
	cd $(DEBUG)/demo && ../examples/exec
	@echo "== examples/fork_parent.cpp: a C++ parent and child exchange messages over Node's channel"
	$(DEBUG)/examples/fork_parent
	@echo "== the same parent driving the seed's Node child (tests/fixtures/child.js)"
	$(DEBUG)/examples/fork_parent tests/fixtures/child.js
	@echo "== examples/cluster_http.cpp: a primary and 2 workers sharing one HTTP port; reload, then stop"
	scripts/cluster-demo $(DEBUG)/examples/cluster_http

test: deps $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS)
	cd $(DEBUG) && ctest -j$(JOBS) --output-on-failure

asan: deps $(ASAN)/CMakeCache.txt
	cmake --build $(ASAN) -j$(JOBS)
	cd $(ASAN) && ctest -j$(JOBS) --output-on-failure

# Debian 12's Clang (14) with GCC 12's libstdc++: the compilers this project is checked with.
$(CLANG)/CMakeCache.txt: | deps
	CXX=clang++ cmake -S . -B $(CLANG) -DCMAKE_BUILD_TYPE=Release $(CMAKE_COMMON)

clang: deps $(CLANG)/CMakeCache.txt
	cmake --build $(CLANG) -j$(JOBS)
	cd $(CLANG) && ctest -j$(JOBS) --output-on-failure

# The corpus grows in the build folder; fuzz/corpus holds the seeds.
fuzz: deps
	CXX=clang++ cmake -S . -B $(FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLUTCH_FUZZ=ON >/dev/null
	cmake --build $(FUZZ) -j$(JOBS)
	mkdir -p $(FUZZ)/corpus && cp -n fuzz/corpus/* $(FUZZ)/corpus/
	@# A finding exits non-zero: show the end of the log (the crash and its input) and fail.
	$(FUZZ)/fuzz/frame_decoder_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ)/ $(FUZZ)/corpus > $(FUZZ)/fuzz.log 2>&1 || { tail -40 $(FUZZ)/fuzz.log; exit 1; }
	@grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' $(FUZZ)/fuzz.log

bench: deps
	bench/run

package: deps
	JOBS=$(JOBS) scripts/package

# Also runs the supervisor's end-to-end tests against the packaged binary: they come from the Debug build.
package-test: package $(DEBUG)/CMakeCache.txt
	cmake --build $(DEBUG) -j$(JOBS) --target clutch_tests
	tests/package/check build/package/dist $(DEBUG)

clean:
	rm -rf build
