"""Benchmark: does dataset inference (Dziedzic et al., NeurIPS 2022, arXiv:2209.09024) flag a small
SimCLR victim at CPU scale? A negative result, measured: for each recipe and seed, pre-train a victim
(cnn_tiny, SimCLR) on n private `digits` images and an independent encoder on n `synthetic` images,
and run `dataset_inference` (diagonal GMM, k components, fitted on the victim) for both as suspects.

Besides p it prints Δ = mean log-likelihood(private, held out from the fit) − mean log-likelihood(public)
and the mean pairwise cosine of the victim's representations of private vs public images. SimCLR's loss
pushes its training images apart (a lower mean cosine for private images in the long-trained recipes),
which works against the density signal the test looks for; Δ changes sign from seed to seed.
Writes JSON (device, versions, seeds).

    python benchmarks/dataset_inference_cpu.py            # about 3 minutes on one core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stealkit.data import load_dataset
from stealkit.models.encoder import embed
from stealkit.pretrain.config import PretrainConfig
from stealkit.pretrain.trainer import pretrain
from stealkit.runtime import environment
from stealkit.verify.dataset_inference import dataset_inference

RECIPES = [  # (private images, epochs, SimCLR temperature)
    (1347, 12, 0.5),  # the whole digits train split, as configs/verify_cpu.yaml's victim
    (128, 200, 0.5),  # a small private set trained long: the overfitting the test relies on
    (256, 200, 2.0),
]


def simclr(images: torch.Tensor, epochs: int, temperature: float, seed: int):
    cfg = PretrainConfig(method="simclr", arch="cnn_tiny", epochs=epochs, batch_size=64, lr=3e-3, amp=False, device="cpu",
                         proj_hidden=64, proj_dim=32, augment="crop+flip", temperature=temperature, seed=seed, checkpoint_every=10**6)
    encoder, _ = pretrain(images, cfg, progress=False)
    return encoder


def mean_pairwise_cosine(encoder, images: torch.Tensor) -> float:
    z = F.normalize(embed(encoder, images), dim=1)
    n = len(z)
    return float(((z @ z.t()).sum() - n) / (n * (n - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--components", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/dataset_inference_cpu.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits, public = load_dataset("digits", "train", size=16), load_dataset("digits", "test", size=16).images
    synthetic = load_dataset("synthetic", "train", size=16)
    rows = []
    for n, epochs, temp in RECIPES:
        for seed in args.seeds:
            t0 = time.perf_counter()
            private = digits.images if n >= len(digits) else digits.sample(n, seed=seed).images
            victim = simclr(private, epochs, temp, seed)
            independent = simclr(synthetic.sample(min(n, len(synthetic)), seed=seed).images, epochs, temp, seed + 1)
            row = {"n_private": len(private), "epochs": epochs, "temperature": temp, "seed": seed,
                   "cosine_private": mean_pairwise_cosine(victim, private), "cosine_public": mean_pairwise_cosine(victim, public)}
            for name, suspect in (("victim", victim), ("independent", independent)):
                r = dataset_inference(victim, suspect, private, public, n_components=args.components, seed=seed)
                row[name] = {"p_value": r.p_value, "delta_ll": r.mean_ll_train - r.mean_ll_test}
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"n={len(private):5d} ep={epochs:3d} τ={temp} seed {seed}: victim p={row['victim']['p_value']:.2g} "
                  f"(Δ {row['victim']['delta_ll']:+.1f}), independent p={row['independent']['p_value']:.2g} "
                  f"(Δ {row['independent']['delta_ll']:+.1f}); cosine private {row['cosine_private']:.3f} vs public {row['cosine_public']:.3f}",
                  flush=True)
    out = {"benchmark": "dataset_inference_cpu", "args": vars(args), "device": "cpu", "environment": environment(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
