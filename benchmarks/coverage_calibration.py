"""Calibrate the coverage defence for one victim from the provider's own data (no thief query is used).

B4B (Dubiński et al., NeurIPS 2023, arXiv:2310.08571) turns an account's LSH coverage into noise. Its released
α, β, λ were set for ImageNet encoders; on another encoder the provider has to measure what coverage honest and
broad traffic reach. This script does that with two sources the provider holds:
- its own pre-training images (the "reference sweep": broad natural images, as a thief would send), and
- known-honest traffic of a downstream task (here GTSRB training images *outside* the honest user's subset
  that the trade-off benchmark queries, so the evaluated user's own queries are not used either).
It writes (1) the reference curve c_ref(n) for the coverage-rate defence (`rate_reference`, see
`stealkit.defences.coverage_rate`), (2) the coverage and rate of both sources at a grid of query counts,
and (3) the rate-defence's onset, by a fixed rule: the highest rate the honest traffic reaches after
`--min-queries` queries, plus `--margin`, rounded up to 0.05 (the ramp reaches its full σ at rate 1, the
reference sweep's own rate).

    python benchmarks/coverage_calibration.py --victim runs/victims/cifar10_simclr_resnet18 \\
        --out benchmarks/results/coverage_calibration_cpu.json --reference-out runs/coverage_rate_reference.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

GRID = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 2500, 5000, 10000, 14630, 20000]


def coverage_curve(ids: np.ndarray, num_planes: int, grid: list[int]) -> list[float]:
    """Coverage (fraction, averaged over tables) after the first n rows of `ids` (in the order given)."""
    out = []
    for n in grid:
        if n <= len(ids):
            out.append(float(np.mean([len(np.unique(ids[:n, t])) for t in range(ids.shape[1])]) / 2**num_planes))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--victim", required=True)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--reference", default="cifar10:train", help="the provider's own images (NAME:SPLIT)")
    ap.add_argument("--reference-size", type=int, default=10000)
    ap.add_argument("--honest", default="gtsrb:train", help="known-honest traffic (NAME:SPLIT)")
    ap.add_argument("--honest-size", type=int, default=14630, help="as many as the evaluated honest user sends")
    ap.add_argument("--exclude-first", type=int, default=2000,
                    help="leave out the honest split's seeded subset of this size (the evaluated honest user's images)")
    ap.add_argument("--num-tables", type=int, default=20)
    ap.add_argument("--num-planes", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0, help="the defence's hashing seed")
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--min-queries", type=int, default=100)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference-out", required=True)
    args = ap.parse_args()

    from stealkit.data import load_dataset
    from stealkit.defences.coverage import CoverageDefence
    from stealkit.defences.coverage_rate import build_reference, reference_coverage
    from stealkit.models.checkpoint import load_encoder
    from stealkit.runtime import environment
    from stealkit.targets.answers import api_answers

    t0 = time.time()
    enc = load_encoder(args.victim)
    hasher = CoverageDefence(num_tables=args.num_tables, num_planes=args.num_planes, seed=args.seed, curve="none", transform="none")

    def ids_of(spec: str, n: int, exclude: int = 0) -> tuple[np.ndarray, str]:
        name, split = spec.split(":")
        ds = load_dataset(name, split, root=args.data_root)
        if exclude:  # the complement of ImageSet.sample(exclude, seed=0): the same permutation's tail
            perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
            ds = ds.subset(perm[exclude:].sort().values, name=f"{ds.name} without the evaluated user's {exclude}")
        ds = ds.sample(min(n, len(ds)), seed=1)
        feats = api_answers(enc, ds.images, normalize=True)
        return hasher.buckets(feats), f"{ds.name} ({len(ds)} images)"

    ref_ids, ref_desc = ids_of(args.reference, args.reference_size)
    hon_ids, hon_desc = ids_of(args.honest, args.honest_size, args.exclude_first)
    ref = build_reference(ref_ids, args.num_planes, GRID, orders=args.orders, seed=args.seed)
    ref.update({"num_tables": args.num_tables, "num_planes": args.num_planes, "seed": args.seed, "data": ref_desc,
                "orders": args.orders})
    Path(args.reference_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.reference_out).write_text(json.dumps(ref, indent=2))

    grid = [n for n in GRID if n <= len(hon_ids)]
    hon_cov = coverage_curve(hon_ids, args.num_planes, grid)
    hon_rate = (np.asarray(hon_cov) / reference_coverage(ref, grid, args.num_planes)).tolist()
    after = [r for n, r in zip(grid, hon_rate) if n >= args.min_queries]
    onset = math.ceil((max(after) + args.margin) * 20) / 20
    out = {
        "victim": args.victim, "hashing": {"num_tables": args.num_tables, "num_planes": args.num_planes, "seed": args.seed},
        "reference": {"data": ref_desc, "queries": ref["queries"], "coverage": ref["coverage"]},
        "honest": {"data": hon_desc, "queries": grid, "coverage": hon_cov, "rate": hon_rate},
        "rule": {"min_queries": args.min_queries, "margin": args.margin, "max_honest_rate": max(after), "onset": onset, "beta": 1.0},
        "reference_file": args.reference_out, "environment": environment(), "wall_seconds": time.time() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"reference ({ref_desc}): " + ", ".join(f"{n}: {100 * c:.2f}%" for n, c in zip(ref["queries"], ref["coverage"])))
    print(f"honest ({hon_desc}): " + ", ".join(f"{n}: {100 * c:.2f}% (rate {r:.2f})" for n, c, r in zip(grid, hon_cov, hon_rate)))
    print(f"onset = {onset:.2f} (max honest rate after {args.min_queries} queries {max(after):.3f} + {args.margin}); beta = 1.0")


if __name__ == "__main__":
    main()
