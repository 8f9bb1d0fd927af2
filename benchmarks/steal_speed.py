"""Benchmark: how long one StolenEncoder steal takes in the paper's setting (2,500 queries,
ResNet34, 100 epochs, batch 64; target on one H100: < 60 s), and where the time goes.

Times `train_stolen_encoder` on random uint8 images and random 512-d target answers (speed does not
depend on pixel content) for each step mode (CUDA graph or eager) and precision, and the victim's
answers to the 2,500 queries (ResNet18, once). Prints a table and writes JSON (device, versions, seed).

    python benchmarks/steal_speed.py                                  # the paper's setting, graph + eager
    python benchmarks/steal_speed.py --arch cnn_tiny --n 256 --epochs 2 --modes eager   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from stealkit.attacks.stolen_encoder import StealConfig, train_stolen_encoder
from stealkit.models.encoder import build_encoder, embed
from stealkit.runtime import environment, pick_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_query(victim_arch: str, images: torch.Tensor, device: torch.device) -> dict:
    """Seconds for the victim to answer every surrogate image once (what the attack pays for)."""
    victim = build_encoder(victim_arch, input_size=images.shape[-1]).to(device).eval()
    embed(victim, images[:256].to(device), batch_size=256)  # warm-up (cudnn autotune)
    sync(device)
    t0 = time.perf_counter()
    feats = embed(victim, images.to(device), batch_size=256)
    sync(device)
    return {"victim_arch": victim_arch, "seconds": time.perf_counter() - t0, "dim": int(feats.shape[1])}


def time_steal(images, feats, cfg: StealConfig, device) -> dict:
    sync(device)
    t0 = time.perf_counter()
    _, log = train_stolen_encoder(images, feats, cfg, device=device, progress=False)
    sync(device)
    total = time.perf_counter() - t0
    per_epoch = [e["seconds"] for e in log]
    steady = per_epoch[1:] or per_epoch
    steps = len(images) // cfg.batch_size
    median = statistics.median(steady)
    return {
        "total_seconds": total,
        "first_epoch_seconds": per_epoch[0],  # includes cudnn autotuning and CUDA-graph capture
        "median_epoch_seconds": median,
        "steps_per_s": steps / median,
        "images_per_s": 2 * steps * cfg.batch_size / median,  # clean + augmented image per sample
        "final_loss": log[-1]["loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet34")
    ap.add_argument("--victim-arch", default="resnet18")
    ap.add_argument("--n", type=int, default=2500, help="surrogate images = queries")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[64])
    ap.add_argument("--modes", nargs="+", default=["graph", "eager"], choices=["graph", "eager"])
    ap.add_argument("--precision", nargs="+", default=["bf16"], choices=["bf16", "fp32"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/steal_speed.json")
    args = ap.parse_args()
    device = pick_device(args.device)
    torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    feats = torch.randn(args.n, args.dim, generator=g)
    result = {"benchmark": "steal_speed", "args": vars(args), "device": str(device), "environment": environment(), "seed": args.seed}
    result["query"] = time_query(args.victim_arch, images, device)
    print(f"victim {args.victim_arch} answers {args.n} queries in {result['query']['seconds']:.2f} s", flush=True)
    rows = []
    for bs in args.batch_size:
        for mode in args.modes:
            if mode == "graph" and device.type != "cuda":
                continue  # CUDA graphs need a GPU
            for prec in args.precision:
                cfg = StealConfig(arch=args.arch, epochs=args.epochs, batch_size=bs, seed=args.seed, cuda_graph=mode == "graph", amp=prec == "bf16")
                row = {"batch_size": bs, "mode": mode, "precision": prec, **time_steal(images, feats, cfg, device)}
                rows.append(row)
                print(f"{args.arch} batch {bs:4d} {mode:5s} {prec}: {row['total_seconds']:7.1f} s total, {row['median_epoch_seconds']:.3f} s/epoch, "
                      f"{row['steps_per_s']:.0f} steps/s, {row['images_per_s']:.0f} img/s", flush=True)
                result["rows"] = rows
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
