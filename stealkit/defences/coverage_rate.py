"""Coverage *rate*: an account's coverage divided by the coverage a broad sweep of the provider's own data
reaches after the same number of queries (stealkit's variant of B4B's coverage; Dubiński et al., "Bucks for
Buckets (B4B)", NeurIPS 2023, arXiv:2310.08571, Section 4).

Why: B4B's coverage only grows with the number of queries. On the shared CIFAR-10 ResNet18 an honest GTSRB user
with 14,630 queries covers more LSH buckets (14.4% of 4,096) than a thief with 2,500 tiny_imagenet32 queries
(14.3%), so no curve of coverage alone spares the one and stops the other (`benchmarks/coverage_calibration.py`).
At an equal number of queries they differ by about 2×, at every count measured: the rate r(n) = c(n) / c_ref(n)
measures how fast an account finds new buckets compared with a sweep of natural images, whatever its size, and
splitting the queries over sybil accounts does not lower it.

The reference c_ref(n) is measured by the provider on its own data (never on a thief's queries): its images are
embedded, hashed with the defence's own planes, and the coverage after n queries is averaged over random orders
(`build_reference`). It is stored as JSON {"queries": [n...], "coverage": [fraction...], "num_tables",
"num_planes", "seed", "data"}; between grid points c_ref is interpolated linearly in log n and log c, beyond the
last point extrapolated along the last segment, and below the first it is n / 2^num_planes (every query a new
bucket: the most any account can cover).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def build_reference(bucket_ids: np.ndarray, num_planes: int, grid: list[int], orders: int = 5, seed: int = 0) -> dict:
    """Bucket ids N × num_tables of the provider's images -> {"queries", "coverage"}: the coverage (fraction of a
    table's buckets, averaged over tables) after the first n images of `orders` random orders, averaged."""
    ids = np.asarray(bucket_ids)
    n_img, tables = ids.shape
    grid = sorted({int(n) for n in grid if 1 <= n <= n_img})
    if not grid:
        raise ValueError(f"no grid point between 1 and the {n_img} reference images")
    rng = np.random.default_rng(seed)
    acc = np.zeros(len(grid))
    for _ in range(orders):
        perm = ids[rng.permutation(n_img)]
        for t in range(tables):
            first = np.zeros(2**num_planes, dtype=bool)
            new = np.zeros(n_img, dtype=np.int64)
            for i, b in enumerate(perm[:, t]):
                if not first[b]:
                    first[b] = True
                    new[i] = 1
            hits = np.cumsum(new)
            acc += hits[np.asarray(grid) - 1]
    cov = acc / (orders * tables * 2**num_planes)
    return {"queries": grid, "coverage": cov.tolist()}


def load_reference(path: str | Path, num_tables: int, num_planes: int, seed: int) -> dict:
    """Read a reference JSON and check it was measured with these hashing settings."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"coverage rate_reference {p} does not exist: measure one with benchmarks/coverage_calibration.py")
    ref = json.loads(p.read_text())
    got = (ref.get("num_tables"), ref.get("num_planes"), ref.get("seed"))
    if got != (num_tables, num_planes, seed):
        raise ValueError(f"{p} was measured with num_tables, num_planes, seed = {got}; this defence has "
                         f"{(num_tables, num_planes, seed)}: measure it again with the defence's settings")
    if len(ref["queries"]) != len(ref["coverage"]) or not ref["queries"]:
        raise ValueError(f"{p}: 'queries' and 'coverage' must be equally long and non-empty")
    ref["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return ref


def reference_coverage(ref: dict, n, num_planes: int) -> np.ndarray:
    """c_ref(n) for query counts n (array): log-log interpolation of the reference (see the module doc)."""
    n = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    q = np.log(np.asarray(ref["queries"], dtype=np.float64))
    c = np.log(np.maximum(np.asarray(ref["coverage"], dtype=np.float64), 1e-12))
    ln = np.log(n)
    out = np.interp(ln, q, c)
    if len(q) > 1:
        slope = (c[-1] - c[-2]) / (q[-1] - q[-2])
        out = np.where(ln > q[-1], c[-1] + slope * (ln - q[-1]), out)
    below = n < float(ref["queries"][0])
    return np.where(below, n / 2**num_planes, np.exp(out))
