"""Benchmark: Table II/X on a CIFAR-10 victim — StolenEncoder and its baselines — with wall
time per stage, next to the paper's numbers. Runs `configs/table10_variants_cifar10.yaml` through the runner.

    python benchmarks/steal_table_x.py --data-root ../shared/data \
        --set victim.checkpoint=runs/bench/victim-cifar10-simclr-resnet18.safetensors --set victim.pretrain=null

To fit a time limit per command, run one attack at a time into the same --run-dir (`--attack StolenEncoder`,
then `--attack StolenEncoder-w/o-aug`, ...): the runner keeps each finished row and its queries, and a
steal cut off mid-way resumes from its last saved epoch. Each such call writes --out, results.json and
report.md with its own row only (and probes it); finish with one call without --attack: every row is then
read from the run directory, and only the probes run, for the whole table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stealkit.experiment.config import load_config
from stealkit.experiment.runner import run_experiment

PAPER = {  # StolenEncoder (Liu et al., CCS 2022), Table X (5% surrogate, GTSRB) and Table II (CIFAR-10 rows)
    "gtsrb": {"TA": 80.67, "StolenEncoder": 79.43, "StolenEncoder-w/o-aug": 51.50, "StolenEncoder-query-aug": 78.91, "Pre-training-encoder": 71.40},
    "mnist": {"TA": 97.90, "StolenEncoder": 97.95},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/table10_variants_cifar10.yaml")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run-dir", default="runs/bench/table_x")
    ap.add_argument("--out", default="benchmarks/results/steal_table_x.json")
    ap.add_argument("--attack", action="append", default=[], help="run only the attack(s) with this label (repeatable)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    if args.attack:
        chosen = [a for a in cfg.attack_list() if (a.label or a.name) in args.attack]
        if len(chosen) != len(args.attack):
            raise SystemExit(f"--attack {args.attack}: the config's attacks are {[a.label or a.name for a in cfg.attack_list()]}")
        cfg = cfg.model_copy(update={"attacks": chosen})
    if args.data_root:
        cfg = cfg.model_copy(update={"data_root": args.data_root})
    results = run_experiment(cfg, args.run_dir)
    table = []
    for r in results["rows"]:
        for ds, m in r.get("downstream", {}).items():
            table.append({"attack": r["label"], "downstream": ds, "TA": 100 * m["TA"], "SA": 100 * m["SA"],
                          "paper_TA": PAPER.get(ds, {}).get("TA"), "paper_SA": PAPER.get(ds, {}).get(r["label"]),
                          "queries": r["queries"], "query_seconds": r["query_seconds"], "train_seconds": r["train_seconds"],
                          "cosine_fidelity": m["cosine_fidelity"], "agreement": m["agreement"]})
    out = {"benchmark": "steal_table_x", "args": vars(args), "device": results["device"], "environment": results["environment"],
           "seed": results["seed"], "table": table, "stage_seconds": results["stage_seconds"], "wall_seconds": results["wall_seconds"],
           "failures": results["failures"], "missing_downstream": results["missing_downstream"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"{'attack':26s} {'ds':6s} {'TA':>6s} {'SA':>6s} {'paperTA':>8s} {'paperSA':>8s} {'#q':>7s} {'train s':>8s}")
    for t in table:
        print(f"{t['attack']:26s} {t['downstream']:6s} {t['TA']:6.2f} {t['SA']:6.2f} {str(t['paper_TA']):>8s} {str(t['paper_SA']):>8s} {t['queries']:7d} {t['train_seconds']:8.1f}")
    print("stage seconds:", json.dumps(results["stage_seconds"]))


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    main()
