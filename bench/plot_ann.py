#!/usr/bin/env python3
"""Recall@k against QPS per method, from quiver-bench's and the PyPI FAISS
script's CSV files, as a PNG (log-scale QPS, the ann-benchmarks view).

    python3 bench/plot_ann.py bench/results/ann.csv bench/results/ann_pypi.csv -o bench/results/ann.png
"""
import argparse
import csv
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", nargs="+")
    ap.add_argument("-o", "--out", default="bench/results/ann.png")
    ap.add_argument("--title", default="recall@10 vs QPS (same data, same run, 2 threads)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for path in args.csv:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for row in csv.DictReader(f):
                series.setdefault(row["method"], []).append((float(row["recall_at_k"]), float(row["qps"])))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for method, pts in sorted(series.items()):
        pts.sort(key=lambda p: -p[1])  # sweep order: cheapest setting first
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=method)
    ax.set_yscale("log")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second")
    ax.set_title(args.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
