#!/usr/bin/env python3
"""The optimised PyPI FAISS (faiss-cpu) on the data `quiver-bench ivf` wrote:
IndexIVFFlat (same nlist and training size, nprobe sweep) and IndexHNSWFlat
(M=32, efConstruction=200, efSearch sweep). Appends its points to
bench/results/ann_pypi.csv in quiver-bench's CSV format, for bench/plot_ann.py.

    python3 bench/faiss_pypi_ivf.py --nlist 1024 --k 10 --threads 2 [--no-hnsw]
"""
import argparse
import time

import numpy as np

from fvecs import read_fvecs


def sweep(name, index, xq, truth, k, repeats, settings, rows):
    for label, apply in settings:
        apply()
        index.search(xq, k)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, ids = index.search(xq, k)
            times.append(time.perf_counter() - t0)
        med = sorted(times)[len(times) // 2]
        recall = np.mean([len(set(ids[i]) & set(truth[i])) / k for i in range(len(xq))])
        lat = []
        for i in range(min(200, len(xq))):
            t0 = time.perf_counter()
            index.search(xq[i : i + 1], k)
            lat.append((time.perf_counter() - t0) * 1e3)
        lat.sort()
        pct = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
        print(f"{name:<28} {label:<12} recall {recall:.4f}  QPS {len(xq) / med:9.0f}  p50 {pct(0.5):.3f} ms")
        rows.append((name, label, recall, len(xq) / med, pct(0.5), pct(0.95), pct(0.99)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="bench/results/ivf_base.fvecs")
    ap.add_argument("--queries", default="bench/results/ivf_queries.fvecs")
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-hnsw", action="store_true")
    ap.add_argument("--out", default="bench/results/ann_pypi.csv")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    xb, xq = read_fvecs(args.base), read_fvecs(args.queries)
    d = xb.shape[1]
    exact = faiss.IndexFlatL2(d)
    exact.add(xb)
    _, truth = exact.search(xq, args.k)
    rows = []
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, args.nlist)
    index.cp.niter = 20
    index.cp.max_points_per_centroid = 64
    t0 = time.perf_counter()
    index.train(xb)
    index.add(xb)
    print(f"faiss-cpu {faiss.__version__} IndexIVFFlat build {time.perf_counter() - t0:.2f} s")
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= args.nlist]
    sweep("faiss IVFFlat (PyPI)", index, xq, truth, args.k, args.repeats,
          [(f"nprobe={p}", lambda p=p: setattr(index, "nprobe", p)) for p in probes], rows)
    if not args.no_hnsw:
        hnsw = faiss.IndexHNSWFlat(d, 32)
        hnsw.hnsw.efConstruction = 200
        t0 = time.perf_counter()
        hnsw.add(xb)
        print(f"faiss-cpu IndexHNSWFlat M=32 efC=200 build {time.perf_counter() - t0:.2f} s")
        sweep("faiss HNSWFlat (PyPI)", hnsw, xq, truth, args.k, args.repeats,
              [(f"ef={e}", lambda e=e: setattr(hnsw.hnsw, "efSearch", max(e, args.k)))
               for e in (10, 16, 32, 64, 128, 256)], rows)
    with open(args.out, "w") as f:
        f.write("method,param,recall_at_k,qps,p50_ms,p95_ms,p99_ms\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")


if __name__ == "__main__":
    main()
