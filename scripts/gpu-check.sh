#!/usr/bin/env bash
# Checks the CUDA path on a machine with a GPU: the GPU kernel tests (which
# must run, not skip), compute-sanitizer memcheck and racecheck over them, and
# quiver-gpu-bench; prints a short table. Results go to bench/RESULTS.md by hand.
#
#   scripts/gpu-check.sh            build here, then run here (a GPU machine with the build dependencies)
#   scripts/gpu-check.sh pack [DIR] build here (no GPU needed) and put the two binaries plus the shared
#                                   libraries a bare CUDA machine lacks into DIR (default .gpu-pack)
#   scripts/gpu-check.sh run [DIR]  on the GPU machine: run what `pack` put into DIR
#
# The binaries (quiver_kernel_tests, quiver-gpu-bench) need only the kernels,
# not the service, so a machine with the CUDA toolkit and nothing else runs them
# (the lent H100/H200: `pack` here, then the device tool's run with command
# "scripts/gpu-check.sh run" and carry [".gpu-pack"]; the pack is ~50 MB of
# the 64 MiB a call may carry).
# Logs go to $OUT (when set) or DIR/logs.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
DIR=${2:-.gpu-pack}
BUILD=${BUILD:-build}
GPU_TESTS='*Gpu*'
# Under the sanitizers: every GPU case except the largest reference sizes, which
# take minutes there.
SANITIZER_TESTS='Cases/GpuSelectKTest.*:GpuFlatSearch.*:GpuRuntime.*:Backends/FlatBackendTest.*/Gpu:Gpu/FlatSearchTest.*_k1*:Gpu/FlatSearchTest.*n5003*'

pack() {
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQUIVER_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=80;90" || exit 1
  fi
  grep -q '^QUIVER_CUDA:STRING=OFF' "$BUILD/CMakeCache.txt" && { echo "gpu-check: $BUILD has QUIVER_CUDA=OFF" >&2; exit 1; }
  cmake --build "$BUILD" --target quiver_kernel_tests quiver-gpu-bench || exit 1
  rm -rf "$DIR" && mkdir -p "$DIR/bin" "$DIR/lib"
  cp "$BUILD/tests/quiver_kernel_tests" "$BUILD/bench/quiver-gpu-bench" "$DIR/bin/"
  strip "$DIR"/bin/*
  # Every shared library except the C/C++ runtime and CUDA's own (a CUDA machine has those).
  for bin in "$DIR"/bin/*; do
    ldd "$bin" | awk '$3 ~ /^\// {print $3}'
  done | sort -u | grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt)\.so' |
    while read -r lib; do cp -L "$lib" "$DIR/lib/"; done
  du -sh "$DIR"
}

run() {
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
    "$@" >"$logs/$log" 2>&1
    local rc=$?
    local verdict=pass
    [ $rc -ne 0 ] && verdict="FAIL (rc $rc)" && failed=1
    if [ "$name" = "GPU tests" ] && grep -q '\[  SKIPPED \]' "$logs/$log"; then verdict="FAIL (skipped: no GPU?)"; failed=1; fi
    if [[ "$name" == compute-sanitizer* ]] && ! grep -q 'ERROR SUMMARY: 0 errors' "$logs/$log"; then
      verdict="FAIL (errors reported)"; failed=1
    fi
    summary+=("$(printf '| %-24s | %-24s | %5ss | %s |' "$name" "$verdict" $((SECONDS - t0)) "$log")")
    tail -n 3 "$logs/$log"
  }
  step "GPU tests" gpu-tests.log "$DIR/bin/quiver_kernel_tests" --gtest_filter="$GPU_TESTS"
  step "CPU kernel tests" cpu-tests.log "$DIR/bin/quiver_kernel_tests" --gtest_filter="-$GPU_TESTS"
  if command -v compute-sanitizer >/dev/null; then
    step "compute-sanitizer memcheck" memcheck.log compute-sanitizer --tool memcheck --leak-check full \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$SANITIZER_TESTS"
    step "compute-sanitizer racecheck" racecheck.log compute-sanitizer --tool racecheck \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$SANITIZER_TESTS"
    step "compute-sanitizer synccheck" synccheck.log compute-sanitizer --tool synccheck \
      "$DIR/bin/quiver_kernel_tests" --gtest_filter="$SANITIZER_TESTS"
  else
    summary+=("| compute-sanitizer        | not installed            |       | |")
  fi
  step "bench flat 1M x 128" bench-flat.log "$DIR/bin/quiver-gpu-bench" flat --n 1000000 --nq 10000 --dim 128 --k 10
  step "bench flat k=1024" bench-flat-k1024.log "$DIR/bin/quiver-gpu-bench" flat --n 1000000 --nq 1000 --dim 128 --k 1024
  step "bench ivf 1M nlist 1024" bench-ivf.log "$DIR/bin/quiver-gpu-bench" ivf --n 1000000 --nq 10000 --nlist 1024 \
    --nprobe 1,4,8,32,128
  echo
  echo "| step                     | result                   | time  | log |"
  echo "|---|---|---:|---|"
  printf '%s\n' "${summary[@]}"
  grep -h -A12 '^### GPU' "$logs"/bench-*.log
  return $failed
}

case "$mode" in
  pack) pack ;;
  run) run ;;
  all) pack && run ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
