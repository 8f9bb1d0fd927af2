"""Why a stolen encoder's SA is low: the scale and spread of its features, and the MLP probe on raw features
(`mlp-raw`, the probe for which scale matters; the released `mlp` normalises every vector) on them raw and
rescaled to a reference encoder's spread. Reads a finished `stealkit run` directory (its stolen
encoders and its cached GTSRB probe features, so the probe sees exactly the runner's subsets and seed).

    python benchmarks/feature_spread.py --run runs/table10_real_cpu_mlp_raw \
        --label "StolenEncoder (Adam, stealkit's option)" --reference StolenEncoder

Writes <run>/feature_spread.json (and benchmarks/results/<run name>.feature_spread.json): per encoder the mean
and std of ‖f‖ and the mean per-coordinate std over 256 test images; test/train accuracy of the probe.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

from safetensors.torch import load_file

from stealkit.data import load_dataset
from stealkit.models.checkpoint import load_encoder
from stealkit.models.encoder import embed
from stealkit.probes.mlp import MLPRawConfig, train_probes
from stealkit.runtime import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--label", required=True, help="the row to look at (its label in results.json)")
    ap.add_argument("--reference", required=True, help="a row whose feature spread the rescaled probe copies")
    ap.add_argument("--dataset", default="gtsrb")
    args = ap.parse_args()
    run = Path(args.run)
    res = json.loads((run / "results.json").read_text())
    seed = res["seed"]
    rows = {r["label"]: r for r in res["rows"]}
    ds = rows[args.label]["downstream"][args.dataset]
    te = load_dataset(args.dataset, "test").sample(ds["test_size"], seed=seed)
    tr = load_dataset(args.dataset, "train").sample(ds["train_size"], seed=seed)
    cached = {d.rsplit("/", 1)[0] for d in glob.glob(str(run / "features" / "*" / f"{args.dataset}*test*"))}
    out = {"run": str(run), "dataset": args.dataset, "seed": seed, "encoders": {}, "environment": environment()}
    feats = {}
    for label in (args.label, args.reference):
        enc = load_encoder(run / "rows" / rows[label]["key"] / "stolen").eval()
        f = embed(enc, te.images[:256])
        n = f.norm(dim=1)
        out["encoders"][label] = {"norm_mean": float(n.mean()), "norm_std": float(n.std()), "coordinate_std": float(f.std(0).mean())}
        d = next(d for d in cached if (load_file(glob.glob(d + f"/{args.dataset}*test*")[0])["features"][:256] - f).abs().max() < 1e-3)
        feats[label] = (load_file(glob.glob(d + f"/{args.dataset}*train*")[0])["features"],
                        load_file(glob.glob(d + f"/{args.dataset}*test*")[0])["features"])
        print(label, out["encoders"][label], flush=True)
    (a_tr, a_te), (r_tr, _) = feats[args.label], feats[args.reference]
    k = float(r_tr.std(0).mean() / a_tr.std(0).mean())
    t0 = time.perf_counter()
    probes = train_probes([a_tr, a_tr * k], tr.labels, [a_te, a_te * k], te.labels, int(max(tr.labels.max(), te.labels.max())) + 1,
                          device="cpu", epochs=res["probe"]["config"].get("epochs", 500), seeds=[seed, seed],
                          config_class=MLPRawConfig)
    out["probe"] = {"scale": k, "seconds": time.perf_counter() - t0, "runner_SA": ds["SA"],
                    "raw": {"test": probes[0].accuracy, "train": probes[0].train_accuracy},
                    "rescaled": {"test": probes[1].accuracy, "train": probes[1].train_accuracy}}
    print(f"probe on {args.label}: raw {probes[0].accuracy:.4f} (runner {ds['SA']:.4f}), x{k:.1f} {probes[1].accuracy:.4f}")
    (run / "feature_spread.json").write_text(json.dumps(out, indent=2))
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path(f"benchmarks/results/{run.name}.feature_spread.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
