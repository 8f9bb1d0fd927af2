"""Where pre-training time goes: augmentation throughput (kornia, per-sample draws) vs the SimCLR
step, on the same device. Prints a table and writes JSON (device, versions, seed).

    python benchmarks/augment_speed.py --n 50000 --out benchmarks/results/augment_speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from stealkit.augment import Augmenter
from stealkit.runtime import environment, pick_device


def timed(fn, device, repeat=3) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--chunk", type=int, nargs="*", default=[1024, 8192, 50000])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/augment_speed.json")
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, device=device)
    rows = []
    for names in ["crop", "flip", "jitter", "gray", "crop+flip+jitter+gray"]:
        aug = Augmenter(names).to(device)
        for chunk in args.chunk:
            s = timed(lambda: [aug(x[i : i + chunk]) for i in range(0, args.n, chunk)], device)
            rows.append({"augment": names, "chunk": chunk, "seconds": s, "images_per_s": args.n / s})
            print(f"{names:24s} chunk {chunk:6d}: {args.n / s:12.0f} images/s")
    with open(args.out, "w") as f:
        json.dump({"benchmark": "augment_speed", "device": str(device), "environment": environment(), "seed": args.seed, "n": args.n, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
