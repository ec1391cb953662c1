#!/usr/bin/env python3
"""IVF_FLAT baseline: the optimised PyPI FAISS (faiss-cpu) IndexIVFFlat on the
data `quiver-bench ivf` wrote, same nlist and training size, nprobe sweep.

    python3 bench/faiss_pypi_ivf.py --nlist 1024 --k 10 --threads 2
"""
import argparse
import time

import numpy as np

from fvecs import read_fvecs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="bench/results/ivf_base.fvecs")
    ap.add_argument("--queries", default="bench/results/ivf_queries.fvecs")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    xb, xq = read_fvecs(args.base), read_fvecs(args.queries)
    d = xb.shape[1]
    exact = faiss.IndexFlatL2(d)
    exact.add(xb)
    _, truth = exact.search(xq, args.k)
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, args.nlist)
    index.cp.niter = 20
    index.cp.max_points_per_centroid = 64
    t0 = time.perf_counter()
    index.train(xb)
    index.add(xb)
    print(f"faiss-cpu {faiss.__version__} IndexIVFFlat build {time.perf_counter() - t0:.2f} s")
    print(f"{'nprobe':>8} {'recall':>10} {'QPS':>10}")
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128):
        if nprobe > args.nlist:
            break
        index.nprobe = nprobe
        index.search(xq, args.k)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, ids = index.search(xq, args.k)
            times.append(time.perf_counter() - t0)
        med = sorted(times)[len(times) // 2]
        recall = np.mean([len(set(ids[i]) & set(truth[i])) / args.k for i in range(len(xq))])
        print(f"{nprobe:>8} {recall:>10.4f} {len(xq) / med:>10.0f}")


if __name__ == "__main__":
    main()
