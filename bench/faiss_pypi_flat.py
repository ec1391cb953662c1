#!/usr/bin/env python3
"""Times the optimised FAISS from PyPI (faiss-cpu, AVX2/AVX-512 build) on the
data quiver-bench wrote, so the FLAT comparison includes FAISS at its best.

    python3 bench/faiss_pypi_flat.py --k 10 --threads 2 --repeats 5
"""
import argparse
import os
import time

import numpy as np

from fvecs import read_fvecs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="bench/results/flat_base.fvecs")
    ap.add_argument("--queries", default="bench/results/flat_queries.fvecs")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import faiss  # imported late so --help works without it

    faiss.omp_set_num_threads(args.threads)
    xb, xq = read_fvecs(args.base), read_fvecs(args.queries)
    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    index.search(xq, args.k)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        index.search(xq, args.k)
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    opts = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else "?"
    print(f"faiss-cpu {faiss.__version__} ({opts}) IndexFlatL2: {len(xq) / med:.0f} QPS, median {med:.4f} s")


if __name__ == "__main__":
    main()
