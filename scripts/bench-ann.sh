#!/usr/bin/env bash
# Reproduces the approximate-search numbers in bench/RESULTS.md with one
# command: quiver-bench ivf (Quiver IVF_FLAT in-process and through gRPC,
# Debian FAISS IVFFlat and HNSWFlat, hnswlib built with -march=native) and the
# PyPI faiss-cpu script on the same data, then a recall-vs-QPS plot.
# Outputs: bench/results/ann.{csv,md,png}, ann_pypi.csv.
#   N=1000000 NLIST=1024 HNSW=0 scripts/bench-ann.sh   (HNSW=0 skips the HNSW baselines)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${N:-200000}
NLIST=${NLIST:-1024}
THREADS=${THREADS:-2}
HNSW=${HNSW:-1}
NO_HNSW=()
if [[ "$HNSW" == 0 ]]; then NO_HNSW=(--no-hnsw); fi
python3 -c "import faiss" 2>/dev/null || python3 -m pip install -q faiss-cpu
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib
"$BUILD/bench/quiver-bench" ivf --n "$N" --nq 1000 --dim 128 --k 10 --nlist "$NLIST" --threads "$THREADS" --grpc "${NO_HNSW[@]}"
python3 bench/faiss_pypi_ivf.py --nlist "$NLIST" --k 10 --threads "$THREADS" "${NO_HNSW[@]}"
python3 bench/plot_ann.py bench/results/ann.csv bench/results/ann_pypi.csv -o bench/results/ann.png
cat bench/results/ann.md
