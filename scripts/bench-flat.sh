#!/usr/bin/env bash
# Reproduces the FLAT and Upsert numbers in bench/RESULTS.md.
# Interleaves quiver-bench (Quiver in-process, Quiver via gRPC, Debian FAISS)
# with the PyPI faiss-cpu timing, ROUNDS times, because the machine is noisy:
# compare the ratios within a round, not absolute numbers across rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
python3 -c "import faiss" 2>/dev/null || python3 -m pip install -q faiss-cpu
for round in $(seq 1 "$ROUNDS"); do
  echo "=== round $round"
  "$BUILD/bench/quiver-bench" flat --n 100000 --nq 1000 --dim 128 --k 10 --threads "$THREADS" --repeats 5
  python3 bench/faiss_pypi_flat.py --k 10 --threads "$THREADS" --repeats 5
done
"$BUILD/bench/quiver-bench" upsert --clients 4 --batch 1000 --dim 128 --total 400000
