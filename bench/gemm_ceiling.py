"""cuBLAS SGEMM alone at quiver-gpu-bench flat's shape, through PyTorch (on a
GPU machine, which has it): the ceiling the fused FLAT search is compared
with in docs/gpu-performance.md. FP32 throughout (TF32 off).

    python3 bench/gemm_ceiling.py [--nq 10000] [--n 1000000] [--dim 128] [--tile 65536]
"""
import argparse

import torch

p = argparse.ArgumentParser()
p.add_argument("--nq", type=int, default=10000)
p.add_argument("--n", type=int, default=1000000)
p.add_argument("--dim", type=int, default=128)
p.add_argument("--tile", type=int, default=65536, help="base rows per GEMM (the output tile is nq x tile)")
a = p.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
q = torch.randn(a.nq, a.dim, device="cuda")
base = torch.randn(a.n, a.dim, device="cuda")


def run():
    for b0 in range(0, a.n, a.tile):
        torch.mm(q, base[b0:b0 + a.tile].t())  # the nq x tile output comes from PyTorch's cache


run()
torch.cuda.synchronize()
times = []
for _ in range(5):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    stop.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(stop) / 1e3)
t = sorted(times)[len(times) // 2]
tflops = 2.0 * a.nq * a.n * a.dim / t / 1e12
print(f"SGEMM alone, {a.nq} x {a.n} x {a.dim} in tiles of {a.tile} base rows: {t:.4f} s, {tflops:.2f} TFLOP/s")
