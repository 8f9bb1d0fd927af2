"""Table XI beside the paper's (Liu et al., "StolenEncoder", CCS 2022, arXiv:2201.05889, Section VI) from a run of
configs/table11_real_world_cpu.yaml, with the ledger's bill and a Table XII-style compute ratio: the FLOPs
of stealing (the victim answering every query plus training the stolen encoder) against the victim's
training cost, estimated from its measured forward FLOPs, ImageNet-1k's 1,281,167 images and an assumed
number of epochs (350, the official EfficientNet training recipe; the Lite models' exact recipe is not in
the paper). Training a network costs about 3 forward passes per image. Writes <run>/table11.json.

    python benchmarks/table11_report.py --run runs/table11_real_world_cpu --ledger runs/table11_real_world_cpu/ledger.sqlite
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

PAPER_XI = {"mnist": (98.18, 98.70), "fashion_mnist": (91.49, 89.91), "svhn": (72.73, 78.56), "gtsrb": (75.29, 76.96)}  # ImageNet encoder


def forward_flops(encoder) -> int:
    """FLOPs of one forward pass of one image at the encoder's own input size (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    s = encoder.spec.input_size
    x = torch.zeros(1, 3, s, s)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder.eval()(x)
    return int(counter.get_total_flops())


def steal_batch_size(run: Path, row: dict) -> int:
    """The row's stealing batch size as the attack resolved it (its config in the run, defaults filled in)."""
    import yaml

    from stealkit.attacks.base import attack_class

    cfg = yaml.safe_load((run / "config.resolved.yaml").read_text())
    attacks = (cfg.get("attacks") or []) + ([cfg["attack"]] if cfg.get("attack") else [])
    (attack,) = [a for a in attacks if a["name"] == row["attack"]]
    return int(attack_class(attack["name"])(dict(attack.get("config") or {})).config.batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--ledger", default=None)
    ap.add_argument("--account", default=None)
    ap.add_argument("--victim-epochs", type=float, default=350.0, help="assumed epochs of the victim's ImageNet training")
    ap.add_argument("--victim-images", type=int, default=1_281_167)
    args = ap.parse_args()
    from stealkit.models.checkpoint import load_encoder

    run = Path(args.run)
    res = json.loads((run / "results.json").read_text())
    (row,) = res["rows"]
    victim = load_encoder(next(iter(res["victims"].values()))["checkpoint"])
    stolen = load_encoder(run / "rows" / row["key"] / "stolen")
    fv, fs = forward_flops(victim), forward_flops(stolen)
    steal_cfg = json.loads((run / "rows" / row["key"] / "steal.json").read_text())
    epochs = len(steal_cfg["log"])
    batch = steal_batch_size(run, row)
    n = (row["surrogate_size"] // batch) * batch  # the trainer takes floor(|D|/S) full batches per epoch (Algorithm 1)
    # answers + training (forward and backward ≈ 3 forward passes) on the clean and the augmented view
    steal_flops = row["queries"] * fv + epochs * 2 * n * 3 * fs
    victim_flops = args.victim_epochs * args.victim_images * 3 * fv
    lines = ["| downstream | TA (%) | SA (%) | SA/TA (%) | paper TA | paper SA | paper SA/TA |", "|---|---|---|---|---|---|---|"]
    table = []
    for ds, m in row["downstream"].items():
        p = PAPER_XI.get(ds)
        entry = {"downstream": ds, "TA": 100 * m["TA"], "SA": 100 * m["SA"], "SA/TA": 100 * m["SA/TA"],
                 "paper_TA": p[0] if p else None, "paper_SA": p[1] if p else None}
        table.append(entry)
        lines.append(f"| {ds} | {entry['TA']:.2f} | {entry['SA']:.2f} | {entry['SA/TA']:.0f} | "
                     + (f"{p[0]:.2f} | {p[1]:.2f} | {100 * p[1] / p[0]:.0f} |" if p else "— | — | — |"))
    bill = None
    if args.ledger and args.account:
        from stealkit.service.ledger import Ledger

        u = Ledger(args.ledger).usage(args.account)
        bill = {"queries": u.queries, "cost": u.cost, "requests": u.requests}
    out = {"table": table, "queries": row["queries"], "cost_usd": row["cost"], "ledger": bill,
           "steal_seconds": row["query_seconds"] + row["train_seconds"], "wall_seconds": res["wall_seconds"],
           "flops": {"victim_forward": fv, "stolen_forward": fs, "stealing": steal_flops, "victim_training_estimate": victim_flops,
                     "ratio": steal_flops / victim_flops, "assumed_victim_epochs": args.victim_epochs,
                     "images_per_epoch": n, "batch_size": batch, "epochs": epochs},
           "peak_rss_gib": res.get("peak_rss_gib"), "precision": res.get("precision"),
           "environment": res["environment"], "seed": res["seed"]}
    print("\n".join(lines))
    print(f"\n{row['queries']:,} queries, ${row['cost']:.2f} at $1.2 per 1,000" + (f"; the ledger billed {bill['queries']:,} queries, ${bill['cost']:.2f}" if bill else ""))
    print(f"stealing: {steal_flops:.3g} FLOPs ({out['steal_seconds'] / 60:.1f} min on {res['environment'].get('device_name')}); "
          f"the victim's ImageNet training ≈ {victim_flops:.3g} FLOPs (assumed {args.victim_epochs:g} epochs): ratio {out['flops']['ratio']:.2g}")
    (run / "table11.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {run / 'table11.json'}")


if __name__ == "__main__":
    main()
