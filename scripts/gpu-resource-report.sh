#!/usr/bin/env bash
# Per-kernel resource report from the CUDA compiler (ptxas): registers per
# thread, static shared memory, stack frame and spills, for every .cu file in
# cuda/ and kernels/gpu/ and every architecture in CUDA_ARCHS. Needs nvcc only,
# no GPU. Exits 1 if any kernel spills registers (the build itself also fails
# on spills: kernels/CMakeLists.txt passes -Xptxas=-warn-spills,-Werror).
#
#   scripts/gpu-resource-report.sh                 # architectures 80 and 90
#   CUDA_ARCHS="90" scripts/gpu-resource-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
CUDA_ARCHS=${CUDA_ARCHS:-"80;90"}
command -v "$NVCC" >/dev/null || { echo "gpu-resource-report: $NVCC not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf '%-6s %-58s %5s %8s %7s %7s %7s\n' arch kernel regs smem_B stack_B spill_st spill_ld
spilled=0
for src in cuda/*.cu kernels/gpu/*.cu; do
  for arch in ${CUDA_ARCHS//;/ }; do
    "$NVCC" -std=c++17 -O3 -I. -DNDEBUG --generate-code="arch=compute_${arch},code=sm_${arch}" --resource-usage \
      -c "$src" -o "$tmp/out.o" >"$tmp/report.txt" 2>&1 || { cat "$tmp/report.txt" >&2; exit 1; }
    # ptxas prints, per kernel: the entry name, then stack/spills, then registers/smem.
    awk -v arch="sm_$arch" '
      /Compiling entry function/ { match($0, /'\''[^'\'']+'\''/); name = substr($0, RSTART + 1, RLENGTH - 2); next }
      /bytes stack frame/ && name != "" { stack = $1; spill_st = $5; spill_ld = $9; next }
      /Used [0-9]+ registers/ && name != "" {
        regs = 0; smem = 0
        for (i = 1; i <= NF; i++) { if ($(i + 1) ~ /^registers/) regs = $i; if ($(i + 1) ~ /^bytes/ && $(i + 2) ~ /^smem/) smem = $i }
        print arch "\t" name "\t" regs "\t" smem "\t" stack "\t" spill_st "\t" spill_ld
        name = ""
      }' "$tmp/report.txt" >"$tmp/rows.tsv"
    while IFS=$'\t' read -r a mangled regs smem stack st ld; do
      pretty=$(echo "$mangled" | c++filt | sed -E 's/quiver::kernels::gpu:://g; s/\(anonymous namespace\):://g; s/\(.*//')
      printf '%-6s %-58.58s %5s %8s %7s %7s %7s\n' "$a" "$pretty" "$regs" "$smem" "$stack" "$st" "$ld"
      if [ "$st" != 0 ] || [ "$ld" != 0 ]; then spilled=1; fi
    done <"$tmp/rows.tsv"
  done
done
echo "(smem_B: static shared memory; the select kernels add k + block*items keys x 8 B of dynamic shared memory)"
if [ "$spilled" = 1 ]; then
  echo "gpu-resource-report: a kernel spills registers" >&2
  exit 1
fi
