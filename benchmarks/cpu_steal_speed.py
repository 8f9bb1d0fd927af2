"""Benchmark: one StolenEncoder epoch on the CPU at the paper's batch size (64), stealkit vs a plain fp32
PyTorch loop in the authors' style, for a ResNet18 and a ResNet34 stolen encoder, fp32 and bf16.

The plain loop is what the released code does (liu00222/StolenEncoder, `train_surrogate_encoder.py` and
`models/surrogate_model.py`): per-image CPU augmentation with torchvision's transforms (flip p=.5,
ColorJitter(.4,.4,.4,.1) p=.8, grayscale p=.2) for every mini-batch, NCHW fp32, separate forward passes
for the clean and the augmented batch, a per-sample Python loop of torch.dist for the loss (normalised
features, summed), SGD lr 1e-3 momentum 0.9 weight decay 5e-4. stealkit is `train_stolen_encoder` with
the same settings (whole-epoch vectorised augmentation, NHWC, bf16 where enabled). Same images, same
answers (random uint8 images and random unit answers: speed does not depend on pixel content).
Each (loop, precision) pair is timed `--repeats` times after one warm-up step and the fastest is kept;
the headline per architecture is stealkit as it runs by default on this CPU (bf16 where the CPU has
bf16 units, else fp32) against the plain fp32 loop. Prints a table and writes JSON (CPU model and
flags, versions, seed, load averages); `python benchmarks/readme_tables.py` renders the README's speed
table from that JSON.

    python benchmarks/cpu_steal_speed.py                       # R18 and R34, fp32 and bf16
    python benchmarks/cpu_steal_speed.py --archs cnn_tiny --images 128 --bf16-images 64   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stealkit.attacks.stolen_encoder import StealConfig, train_stolen_encoder
from stealkit.models.encoder import build_encoder
from stealkit.runtime import cpu_has_fast_bf16, cpu_kind_flags, cpu_name, environment, set_threads


def plain_epoch(images: torch.Tensor, answers: torch.Tensor, arch: str, bf16: bool, seed: int) -> float:
    """The authors' loop for one epoch -> seconds (model built outside the timed part)."""
    from torchvision import transforms as T

    torch.manual_seed(seed)
    model = build_encoder(arch, input_size=images.shape[-1], out_dim=answers.shape[1]).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    aug = T.Compose([T.RandomHorizontalFlip(0.5), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2)])
    perm = torch.randperm(len(images))
    t0 = time.perf_counter()
    for s in range(0, len(images) - 63, 64):
        idx = perm[s : s + 64]
        x = images[idx].float() / 255.0
        xa = torch.stack([aug(img) for img in x])  # per image, as a DataLoader's transform would
        v = answers[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            fc = F.normalize(model(x).float(), dim=-1)
            fa = F.normalize(model(xa).float(), dim=-1)
        loss1 = loss2 = 0
        for i in range(len(fc)):  # the released code's per-sample loop
            loss1 = loss1 + torch.dist(fc[i], v[i], 2)
            loss2 = loss2 + torch.dist(fa[i], v[i], 2)
        loss = loss1 + 20.0 * loss2
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def stealkit_epoch(images: torch.Tensor, answers: torch.Tensor, arch: str, bf16: bool, seed: int) -> float:
    os.environ["STEALKIT_BF16"] = "on" if bf16 else "off"
    cfg = StealConfig(arch=arch, epochs=1, batch_size=64, seed=seed)
    t0 = time.perf_counter()
    _, log = train_stolen_encoder(images, answers, cfg, device="cpu", progress=False)
    return log[0]["seconds"] if log else time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet34"])
    ap.add_argument("--images", type=int, default=512, help="surrogate images per fp32 epoch (8 steps of 64)")
    ap.add_argument("--bf16-images", type=int, default=None,
                    help="images per bf16 epoch (default: --images on a CPU with bf16 units, 128 elsewhere, where bf16 is emulated and very slow)")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per pair; the fastest is kept")
    ap.add_argument("--out", default="benchmarks/results/cpu_steal_speed.json")
    args = ap.parse_args()
    if args.bf16_images is None:
        args.bf16_images = args.images if cpu_has_fast_bf16() else 128
    threads = set_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for arch in args.archs:
        for bf16 in ([False] if args.skip_bf16 else [False, True]):
            n = args.bf16_images if bf16 else args.images
            images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
            answers = F.normalize(torch.randn(n, 512, generator=g), dim=1)
            plain_epoch(images[:64], answers[:64], arch, bf16, args.seed)  # warm-up: oneDNN kernel creation
            plain = min(plain_epoch(images, answers, arch, bf16, args.seed) for _ in range(args.repeats))
            stealkit_epoch(images[:64], answers[:64], arch, bf16, args.seed)
            ours = min(stealkit_epoch(images, answers, arch, bf16, args.seed) for _ in range(args.repeats))
            steps = n // 64
            row = {"arch": arch, "precision": "bf16" if bf16 else "fp32", "images": n, "steps": steps,
                   "plain_seconds": plain, "stealkit_seconds": ours, "speedup": plain / ours,
                   "plain_images_per_s": 2 * steps * 64 / plain, "stealkit_images_per_s": 2 * steps * 64 / ours}
            rows.append(row)
            print(f"{arch:9s} {row['precision']}: plain loop {plain:7.1f} s ({row['plain_images_per_s']:5.1f} img/s), "
                  f"stealkit {ours:7.1f} s ({row['stealkit_images_per_s']:5.1f} img/s): {row['speedup']:.2f}x", flush=True)
    os.environ.pop("STEALKIT_BF16", None)
    default = "bf16" if cpu_has_fast_bf16() else "fp32"
    headline = []
    for arch in args.archs:
        by = {r["precision"]: r for r in rows if r["arch"] == arch}
        if "fp32" in by and default in by:
            ours = by[default]["stealkit_images_per_s"]
            base = by["fp32"]["plain_images_per_s"]
            headline.append({"arch": arch, "stealkit_precision": default, "stealkit_images_per_s": ours,
                             "plain_fp32_images_per_s": base, "speedup": ours / base})
            print(f"{arch}: stealkit as it runs here ({default}) vs the plain fp32 loop: {ours:.1f} vs {base:.1f} img/s, "
                  f"{ours / base:.2f}x")
    blob = {"benchmark": "cpu_steal_speed", "cpu_model": cpu_name(), "cpu_flags": cpu_kind_flags(),
            "cpu_fast_bf16": cpu_has_fast_bf16(), "default_precision": default, "headline": headline,
            "rows": rows, "seed": args.seed, "repeats": args.repeats, "threads": threads, "load_before": load,
            "load_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "environment": environment()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(blob, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
