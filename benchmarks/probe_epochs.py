"""Is the downstream probe trained to the end? Test accuracy against epochs for the released MLP probe
(`mlp`: L2-normalised features, Dropout 0.5) and `mlp-raw` (raw features, no dropout), on the features a
real-data run cached (the same encoders and the same probe subsets as its table).

StolenEncoder (Liu et al., ACM CCS 2022, arXiv:2201.05889), Section V-A 3) trains the probe for 500 epochs
on full downstream sets; the CPU tables probe 2,000-image subsets, i.e. far fewer steps. This prints and
saves each probe's test accuracy every `--every` epochs up to `--epochs`.

    python benchmarks/probe_epochs.py --run runs/table10_real_cpu --config configs/table10_real_cpu.yaml \
        --dataset gtsrb --epochs 2000 --every 250 --out benchmarks/results/probe_epochs_table10_gtsrb.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml

from stealkit.experiment.config import ExperimentConfig
from stealkit.experiment.runner import _downstream_sets
from stealkit.models.checkpoint import load_encoder
from stealkit.probes.evaluate import probe_config_class
from stealkit.probes.features import FeatureCache, encoder_fingerprint
from stealkit.probes.mlp import train_probes
from stealkit.runtime import environment, precision_record, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished run directory (its features/ cache is read)")
    ap.add_argument("--config", required=True, help="the run's config (for the probe subsets)")
    ap.add_argument("--dataset", default="gtsrb")
    ap.add_argument("--encoder", default=None, help="a checkpoint; default: the run's victim")
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    threads = set_threads(args.threads)
    cfg = ExperimentConfig(**yaml.safe_load(Path(args.config).read_text()))
    if cfg.data_root is None and os.environ.get("STEALKIT_DATA"):  # as `stealkit run` resolves it
        cfg = cfg.model_copy(update={"data_root": os.environ["STEALKIT_DATA"]})
    (ds,) = [d for d in cfg.downstream if d.name == args.dataset]
    root, train, test, tags = _downstream_sets(cfg, ds)
    res = json.loads((Path(args.run) / "results.json").read_text())
    ckpt = args.encoder or next(iter(res["victims"].values()))["checkpoint"]
    fp = encoder_fingerprint(load_encoder(ckpt))
    cache = FeatureCache(Path(args.run) / "features")
    key = lambda tag: f"{ds.name}@{root}:{tag}"  # noqa: E731 - the runner's feature key
    tr, te = cache.get(fp, key(tags["train"]), len(train)), cache.get(fp, key(tags["test"]), len(test))
    if tr is None or te is None:
        raise SystemExit(f"no cached features of {ckpt} for {ds.name} in {args.run}/features: run the config first")
    curves = {}
    for kind in ("mlp", "mlp-raw"):
        t0 = time.perf_counter()
        r = train_probes(tr, train.labels, te, test.labels, max(train.num_classes, int(train.labels.max()) + 1),
                         device="cpu", config_class=probe_config_class(kind), epochs=args.epochs, eval_every=args.every)[0]
        curves[kind] = {"history": [{"epoch": h["epoch"], "test_accuracy": h["test_accuracy"], "loss": h["loss"]} for h in r.history],
                        "train_accuracy": r.train_accuracy, "seconds": time.perf_counter() - t0, "config": r.config}
        print(kind, " ".join(f"{h['epoch']}:{100 * h['test_accuracy']:.1f}" for h in r.history),
              f"train {100 * r.train_accuracy:.1f}", flush=True)
    out = {"benchmark": "probe_epochs", "run": args.run, "dataset": ds.name, "train": len(train), "test": len(test),
           "encoder": ckpt, "epochs": args.epochs, "every": args.every, "curves": curves, "threads": threads,
           "precision": precision_record(torch.device("cpu")), "environment": environment(), "seed": cfg.seed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
