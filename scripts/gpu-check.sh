#!/usr/bin/env bash
# Checks the CUDA path on a machine with a GPU: the GPU kernel tests (which
# must run, not skip), compute-sanitizer memcheck and racecheck over them, and
# quiver-gpu-bench; prints a short table. Results go to bench/RESULTS.md by hand.
#
#   scripts/gpu-check.sh            build here, then run here (a GPU machine with the build dependencies)
#   scripts/gpu-check.sh pack [DIR] build here (no GPU needed) and put the binaries plus the shared
#                                   libraries a bare CUDA machine lacks into DIR (default .gpu-pack),
#                                   then compress it into DIR.tar.xz (~26 MB)
#   scripts/gpu-check.sh run [DIR] [PARTS]
#                                   on the GPU machine: run what `pack` made (DIR, or DIR.tar.xz
#                                   unpacked); PARTS: tests,sanitize,bench,indexes (default all;
#                                   one part per call keeps each under the device tool's 10 minutes);
#                                   STEP_TIMEOUT (seconds, default 1200) bounds each step
#
# The binaries: quiver_kernel_tests and quiver-gpu-bench need only the
# kernels; quiver_unit_tests (its GPU cases: the engine serving sealed
# segments from the GPU) and quiver-bench (for `concurrent`: 64 clients through gRPC against an
# in-process server whose sealed segments live on the GPU) brings every
# library of the service along. A machine with the CUDA toolkit and nothing
# else runs them: for the lent H100/H200, `pack` here, then the device tool's
# run with command "scripts/gpu-check.sh run" and carry [".gpu-pack.tar.xz"].
# Logs go to $OUT (when set) or DIR/logs.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
DIR=${2:-.gpu-pack}
PARTS=${3:-tests,sanitize,bench,indexes}
BUILD=${BUILD:-build}
GPU_TESTS='*Gpu*'
# Under the sanitizers: the GPU cases except the largest reference sizes (16 s
# each under racecheck), and one metric of each index kernel; racecheck takes
# the GRAPH kernel on the 50-node graph only (6,000 nodes ran past 2 minutes).
SANITIZER_TESTS='Cases/GpuSelectKTest.*:GpuFlatSearch.*:GpuRuntime.*:Backends/FlatBackendTest.*/Gpu:Gpu/FlatSearchTest.*_k1:Gpu/FlatSearchTest.*n5003*:GpuTf32x3/FlatSearchTest.*n5003*:Metrics/GpuIvfFlatTest.*/L2:Metrics/GpuIvfPqTest.*/L2_8bit:GpuGraph.*'
MEMCHECK_TESTS="$SANITIZER_TESTS:Metrics/GpuGraphTest.*/L2_dim24"

pack() {
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQUIVER_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=80;90" || exit 1
  fi
  grep -q '^QUIVER_CUDA:STRING=OFF' "$BUILD/CMakeCache.txt" && { echo "gpu-check: $BUILD has QUIVER_CUDA=OFF" >&2; exit 1; }
  cmake --build "$BUILD" --target quiver_kernel_tests quiver_unit_tests quiver-gpu-bench quiver-bench || exit 1
  rm -rf "$DIR" "$DIR.tar.xz" && mkdir -p "$DIR/bin" "$DIR/lib"
  cp "$BUILD/tests/quiver_kernel_tests" "$BUILD/tests/quiver_unit_tests" "$BUILD/bench/quiver-gpu-bench" \
    "$BUILD/bench/quiver-bench" "$DIR/bin/"
  strip "$DIR"/bin/*
  # Every shared library except the C/C++ runtime and CUDA's own (a CUDA machine has those;
  # cuBLAS is opened with dlopen, through the LD_LIBRARY_PATH that `run` sets).
  for bin in "$DIR"/bin/*; do
    ldd "$bin" | awk '$3 ~ /^\// {print $3}'
  done | sort -u | grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt)\.so' |
    while read -r lib; do cp -L "$lib" "$DIR/lib/"; done
  tar -C "$(dirname "$DIR")" -cJf "$DIR.tar.xz" "$(basename "$DIR")" || exit 1
  du -sh "$DIR" "$DIR.tar.xz"
}

run() {
  if [ ! -x "$DIR/bin/quiver_kernel_tests" ] && [ -f "$DIR.tar.xz" ]; then
    tar -C "$(dirname "$DIR")" -xJf "$DIR.tar.xz" || exit 1
  fi
  [ -x "$DIR/bin/quiver_kernel_tests" ] || { echo "gpu-check: no $DIR/bin: run 'scripts/gpu-check.sh pack' first" >&2; exit 1; }
  local logs=${OUT:-$DIR/logs}
  mkdir -p "$logs"
  export LD_LIBRARY_PATH="$PWD/$DIR/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee "$logs/gpu.txt"
  local summary=() failed=0
  step() {  # name, log file, command...
    local name=$1 log=$2
    shift 2
    local t0=$SECONDS
    # A hung kernel must not eat the device tool's whole 10-minute call.
    timeout --kill-after=10 "${STEP_TIMEOUT:-1200}" "$@" >"$logs/$log" 2>&1
    local rc=$?
    local verdict=pass
    [ $rc -ne 0 ] && verdict="FAIL (rc $rc)" && failed=1
    if [[ "$name" == GPU*tests ]] && grep -q '\[  SKIPPED \]' "$logs/$log"; then verdict="FAIL (skipped: no GPU?)"; failed=1; fi
    # racecheck ends with "RACECHECK SUMMARY: 0 hazards displayed", the others with "ERROR SUMMARY: 0 errors".
    if [[ "$name" == compute-sanitizer* ]] && ! grep -Eq '(ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards)' "$logs/$log"; then
      verdict="FAIL (errors reported)"; failed=1
    fi
    summary+=("$(printf '| %-24s | %-24s | %5ss | %s |' "$name" "$verdict" $((SECONDS - t0)) "$log")")
    tail -n 3 "$logs/$log"
  }
  if [[ ",$PARTS," == *,tests,* ]]; then
    step "GPU tests" gpu-tests.log "$DIR/bin/quiver_kernel_tests" --gtest_filter="$GPU_TESTS"
    step "GPU engine tests" gpu-engine-tests.log "$DIR/bin/quiver_unit_tests" --gtest_filter="$GPU_TESTS"
  fi
  if [[ ",$PARTS," != *,sanitize,* ]]; then
    :
  elif command -v compute-sanitizer >/dev/null; then
    step "compute-sanitizer memcheck" memcheck.log compute-sanitizer --tool memcheck --leak-check full \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$MEMCHECK_TESTS"
    step "compute-sanitizer racecheck" racecheck.log compute-sanitizer --tool racecheck \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$SANITIZER_TESTS"
    step "compute-sanitizer synccheck" synccheck.log compute-sanitizer --tool synccheck \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$MEMCHECK_TESTS"
  else
    summary+=("| compute-sanitizer        | not installed            |       | |")
  fi
  if [[ ",$PARTS," == *,bench,* ]]; then
    step "bench flat 1M x 128" bench-flat.log "$DIR/bin/quiver-gpu-bench" flat --n 1000000 --nq 10000 --dim 128 --k 10 \
      --tiles "${FLAT_TILES:-0x0:fp32,0x0:3xtf32,131072x4096:3xtf32,65536x2048:fp32}"
    step "bench flat k=1024" bench-flat-k1024.log "$DIR/bin/quiver-gpu-bench" flat --n 1000000 --nq 1000 --dim 128 \
      --k 1024
    step "bench ivf 1M nlist 1024" bench-ivf.log "$DIR/bin/quiver-gpu-bench" ivf --n 1000000 --nq 10000 --nlist 1024 \
      --nprobe 1,4,8,32,128
    # 1M points = 10 sealed FLAT segments, served from the GPU; batching off, then on.
    step "bench batching 64 clients" bench-concurrent.log "$DIR/bin/quiver-bench" concurrent --n 1000000 \
      --clients 64 --seconds 5 --rounds 2 --threads "$(nproc)"
  fi
  if [[ ",$PARTS," == *,indexes,* ]]; then
    # Its own part: the 1M graph is built on the CPU, then with its kNN graphs
    # on the GPU (both timed; the sweep searches the second); IVF_PQ on the CPU.
    step "bench graph 1M batch 10" bench-graph.log "$DIR/bin/quiver-gpu-bench" graph --n 1000000 --nq 10000 \
      --batch 10 --itopk 8,16,32,64 --search-width 1,2 --gpu-build
    step "bench ivf_pq 1M pq_dim 64" bench-ivf-pq.log "$DIR/bin/quiver-gpu-bench" ivf --n 1000000 --nq 10000 \
      --nlist 1024 --pq-dim 64 --refine-factor 8 --nprobe 1,4,8,32
  fi
  echo
  echo "| step                     | result                   | time  | log |"
  echo "|---|---|---:|---|"
  printf '%s\n' "${summary[@]}"
  grep -h -A12 '^### GPU' "$logs"/bench-*.log 2>/dev/null
  grep -h -A6 '^| round | unbatched' "$logs"/bench-concurrent.log 2>/dev/null
  return $failed
}

case "$mode" in
  pack) pack ;;
  run) run ;;
  all) pack && run ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
