"""How clean were the answers a thief kept? For each role of one trade-off setting, the cosine between every
kept answer and the victim's own normalised features of the same image, after the best orthogonal map between
the two (orthogonal Procrustes: a defence's per-account rotation is undone; noise is not).

Reads what benchmarks/defence_tradeoff.py cached (runs/<config>/<setting>/<role>/queries.safetensors: images
N×3×H×W uint8, features N×D) and embeds the same images with the victim. Prints one line per role and writes
JSON (device, versions, seed: none is drawn).

    python benchmarks/answers_vs_clean.py --setting runs/defence_tradeoff_real_cpu/coverage-rate-sigma-3 \
        --victim runs/victims/cifar10_simclr_resnet18 --roles thief-2500 diluting diluting-3 \
        --out benchmarks/results/answers_vs_clean_coverage_rate_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def procrustes_cosines(clean: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """N×D clean features and N×D answers -> N cosines between clean·R and the answers, R the orthogonal D×D
    map minimising ‖clean·R − answers‖ (R = U Vᵀ from the SVD of cleanᵀ·answers)."""
    u, _, vt = torch.linalg.svd(clean.T.double() @ answers.double())
    return F.cosine_similarity(clean.double() @ (u @ vt), answers.double(), dim=1).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", required=True, help="a setting's folder of the trade-off run")
    ap.add_argument("--victim", required=True)
    ap.add_argument("--roles", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from safetensors.torch import load_file

    from stealkit.models.checkpoint import load_encoder
    from stealkit.probes.features import extract_features
    from stealkit.runtime import environment

    victim = load_encoder(args.victim)
    rows = {}
    for role in args.roles:
        path = Path(args.setting) / role / "queries.safetensors"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run benchmarks/defence_tradeoff.py for this setting and role first")
        blob = load_file(str(path))
        clean = F.normalize(extract_features(victim, blob["images"], device="cpu"), dim=1)
        cos = procrustes_cosines(clean, blob["features"].float())
        rows[role] = {"images": len(cos), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                      "share_above_0.9": float((cos > 0.9).float().mean())}
        print(f"{role}: {len(cos):,} kept answers, cosine with the victim's features after the best rotation: "
              f"mean {cos.mean():.3f}, min {cos.min():.3f}, above 0.9: {100 * (cos > 0.9).float().mean():.1f}%")
    out = {"setting": args.setting, "victim": args.victim, "roles": rows, "environment": environment(), "seed": None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
