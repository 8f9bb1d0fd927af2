"""Benchmark: the StolenEncoder paper's MLP probe (512-256, Adam 1e-4, batch 256, 500 epochs; Section V-A 3)
on 512-d features of 10,000 images (43 classes, as GTSRB), on the CPU: stealkit's batched probe engine for
1 and for 5 probes at once (a victim and four stolen encoders, as a Table X row set), fp32 and bf16.
Random features (speed does not depend on their values). One run each; JSON with device, versions, seed.

    python benchmarks/cpu_probe_speed.py                    # 500 epochs (the paper's), about 10 min on 2 cores
    python benchmarks/cpu_probe_speed.py --epochs 5         # a quick look (per-epoch time is what matters)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from stealkit.probes.mlp import train_probes
from stealkit.runtime import cpu_has_fast_bf16, environment, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=43)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--probes", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--bf16-epochs", type=int, default=2, help="epochs for the bf16 rows (emulated, slow, on CPUs without bf16 units)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/cpu_probe_speed.json")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.n, args.dim, generator=g)
    y = torch.randint(0, args.classes, (args.n,), generator=g)
    xt, yt = x[:1000], y[:1000]
    rows = []
    load = os.getloadavg()[0]
    for bf16 in (False, True):
        os.environ["STEALKIT_BF16"] = "on" if bf16 else "off"
        epochs = args.bf16_epochs if bf16 else args.epochs
        for p in args.probes:
            t0 = time.perf_counter()
            train_probes([x] * p, y, [xt] * p, yt, args.classes, device="cpu", epochs=epochs)
            sec = time.perf_counter() - t0
            row = {"probes": p, "precision": "bf16" if bf16 else "fp32", "epochs": epochs, "seconds": sec,
                   "seconds_per_epoch": sec / max(epochs, 1), "seconds_for_500_epochs": 500 * sec / max(epochs, 1)}
            rows.append(row)
            print(f"{p} probe(s) {row['precision']}: {row['seconds_per_epoch']:.2f} s/epoch -> {row['seconds_for_500_epochs'] / 60:.1f} min "
                  f"for 500 epochs ({epochs} epochs run)", flush=True)
    os.environ.pop("STEALKIT_BF16", None)
    blob = {"benchmark": "cpu_probe_speed", "args": vars(args), "rows": rows, "threads": threads, "load_before": load,
            "load_after": os.getloadavg()[0], "cpu_fast_bf16": cpu_has_fast_bf16(), "environment": environment(), "seed": args.seed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(blob, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
