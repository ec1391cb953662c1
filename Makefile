# Quiver: two commands on a fresh Debian machine.
#   make run    installs what is missing, builds Release, starts a single-node quiverd
#   make test   installs, builds, runs every test (plus ASan/UBSan and TSan runs)
# Both are idempotent; ccache makes rebuilds cheap.

BUILD      ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
JOBS       ?= $(shell nproc)
ARGS       ?=
CMAKE_GEN  := -G Ninja
# CUDA architectures for the cuda/ layer (A100, H100).
CUDA_ARCHS ?= 80;90

.PHONY: all deps build run test test-main test-asan test-tsan raft-sim bench bench-ann clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCHS)"
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/service/quiverd $(ARGS)

test: build test-main test-asan test-tsan

# Unit, service and integration tests on the Release build.
test-main:
	ctest --test-dir $(BUILD) --output-on-failure -j 2 --timeout 900

# The unit and service tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQUIVER_CUDA=OFF \
	  -DQUIVER_BUILD_BENCH=OFF -DQUIVER_SANITIZE=address,undefined
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target quiver_unit_tests quiver_kernel_tests quiver_service_tests quiver_raft_tests
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  QUIVER_RAFT_SIM_SEEDS=150 ctest --test-dir $(ASAN_BUILD) --output-on-failure -j 2 -L 'unit|service' --timeout 900

# The concurrent parts (replicator, engine under concurrent search) under ThreadSanitizer.
test-tsan: deps
	cmake -S . -B $(TSAN_BUILD) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQUIVER_CUDA=OFF \
	  -DQUIVER_BUILD_BENCH=OFF -DQUIVER_SANITIZE=thread
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target quiver_unit_tests
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp OMP_NUM_THREADS=1 \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -L concurrency --timeout 900

# The Raft simulator over many more seeds than `make test` runs (SEEDS, FIRST_SEED).
SEEDS      ?= 100000
FIRST_SEED ?= 1000000
raft-sim: build
	$(BUILD)/tests/quiver-raft-sim --first-seed $(FIRST_SEED) --seeds $(SEEDS)
	$(BUILD)/tests/quiver-raft-sim --first-seed $(FIRST_SEED) --seeds $$(( $(SEEDS) / 4 )) --voters 5 --spares 1
	$(BUILD)/tests/quiver-raft-sim --first-seed $(FIRST_SEED) --seeds $$(( $(SEEDS) / 4 )) --crash-rate 0.01
	$(BUILD)/tests/quiver-raft-sim --first-seed $(FIRST_SEED) --seeds $$(( $(SEEDS) / 4 )) --no-pre-vote --no-check-quorum

bench: build
	$(BUILD)/bench/quiver-bench flat --help >/dev/null
	scripts/bench-flat.sh

# IVF_FLAT against FAISS (Debian and PyPI) and hnswlib, with a recall-vs-QPS plot.
bench-ann: build
	scripts/bench-ann.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
