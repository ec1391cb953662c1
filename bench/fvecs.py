"""Reads the TEXMEX .fvecs files quiver-bench writes (int32 dimension, then
that many float32 per row)."""
import numpy as np


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        raise ValueError(f"{path}: not an .fvecs file of dimension {d}")
    rows = raw.reshape(-1, d + 1)
    if not (rows[:, 0] == d).all():
        raise ValueError(f"{path}: rows of different dimensions")
    return rows[:, 1:].copy().view(np.float32)
