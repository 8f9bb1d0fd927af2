"""The rotation watermark on real encoders (Dziedzic, Dhawan, Kaleem, Guan, Papernot, "On the Difficulty of
Defending Self-Supervised Learning against Model Extraction", ICML 2022, arXiv:2205.07890, and the authors'
blog; released check: cleverhans-lab/ssl-attacks-defenses `watermark.py`): the watermarked victim's fixed
head g reads the binary rotation task off each suspect's representations of rotated public images.

Suspects: the watermarked victim, the victim before the watermark, copies stolen from either through the
served API (--run DIR: every row of an experiment run), and independent encoders. Each gets its watermark
accuracy (2 views per image: one angle in (0°, 180°), one in (180°, 360°)), the per-image Wilcoxon p-value,
the binomial p-value over all predictions, and a verdict at --alpha. The summary gives the false-positive
rate over the independent encoders and the detection rate over the victim and the copies of it.

    python benchmarks/watermark_real.py --victim runs/watermark_real_cpu/victim_wm \
        --suspect "watermarked victim=runs/watermark_real_cpu/victim_wm" --kind "watermarked victim=victim" \
        --run runs/watermark_real_cpu --suspect "random ResNet18=random:resnet18:0" --kind "random ResNet18=independent" \
        --out benchmarks/results/watermark_real_cpu.json
Writes JSON (device, versions, CPU, seed, wall time per suspect).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from stealkit.data import load_dataset
from stealkit.runtime import environment
from stealkit.verify.watermark import head_path, load_watermark_head, watermark_accuracy
from suspects import load_suspect, run_suspects  # benchmarks/suspects.py (the script's own folder is on sys.path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--victim", required=True, help="the watermarked victim (its .wmhead.safetensors beside it)")
    ap.add_argument("--suspect", action="append", default=[], help="LABEL=CHECKPOINT or LABEL=random:ARCH:SEED")
    ap.add_argument("--run", action="append", default=[], help="RUN_DIR or RUN_DIR=KIND: every row of the run is a suspect")
    ap.add_argument("--kind", action="append", default=[], help="LABEL=victim|stolen|stolen-unmarked|independent|unmarked")
    ap.add_argument("--data", default="cifar10:test", help="public images the watermark rotates")
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=os.environ.get("STEALKIT_DATA"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t_start = time.perf_counter()
    head = load_watermark_head(head_path(args.victim))
    name, _, split = args.data.partition(":")
    data = load_dataset(name, split or "test", root=args.data_root)
    images = data.sample(args.limit, seed=args.seed).images if args.limit < len(data) else data.images
    kinds = dict(k.split("=", 1) for k in args.kind)
    suspects = [(*s.split("=", 1), None) for s in args.suspect]
    for item in args.run:
        run, _, kind = item.partition("=")
        for label, ckpt, k, made in run_suspects(run, kind or "stolen"):
            if k == "stolen-unmarked":  # the same attack labels as the watermarked victim's copies
                label, made = f"{label}, of the unmarked victim", f"{made}, from the victim before the watermark"
            suspects.append((label, ckpt, made))
            kinds.setdefault(label, k)
    rows = []
    for label, spec, made in suspects:
        t0 = time.perf_counter()
        model, about = load_suspect(spec)
        row = {"suspect": label, "kind": kinds.get(label, "unknown"), "made": made or about["made"], "queries": about["queries"],
               "checkpoint": spec}
        width = getattr(getattr(model, "spec", None), "feature_dim", None)
        if width is not None and width != head[0].in_features:  # the head cannot read it: not a copy of the victim as is
            row.update(accuracy=None, p_value=None, p_binomial=None, significant=False,
                       verdict=f"not readable: {width}-d features, the head reads {head[0].in_features}-d")
        else:
            row.update(watermark_accuracy(model, head, images, alpha=args.alpha, seed=args.seed).to_dict())
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        acc = "—" if row["accuracy"] is None else f"{row['accuracy']:.3f}  p {row['p_value']:.3g}"
        print(f"{label:55s} acc {acc}  {row['verdict']}", flush=True)
    marked = [r for r in rows if r["kind"] in ("victim", "stolen")]
    indep = [r for r in rows if r["kind"] == "independent"]
    summary = {"detection_rate": sum(r["significant"] for r in marked) / len(marked) if marked else None,
               "false_positive_rate": sum(r["significant"] for r in indep) / len(indep) if indep else None,
               "n_marked": len(marked), "n_independent": len(indep)}
    out = {"benchmark": "watermark_real", "args": vars(args), "environment": environment(), "head": str(head_path(args.victim)),
           "head_task": head.task, "head_normalize": bool(getattr(head, "normalize", False)), "images": len(images),
           "summary": summary, "rows": rows, "wall_seconds": round(time.perf_counter() - t_start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(summary), f"-> {args.out}")


if __name__ == "__main__":
    main()
