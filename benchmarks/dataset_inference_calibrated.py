"""Calibrated dataset inference on real encoders: does a per-image reference control for the CIFAR-10 train/test
split shift let dataset inference (Dziedzic, Duan, Kaleem, Dhawan, Guan, Cattan, Boenisch, Papernot, "Dataset
Inference for Self-Supervised Models", NeurIPS 2022, arXiv:2209.09024; released protocol: a GMM(20, diag) fitted
on the suspect's representations of private images, other private vs public images scored by log-likelihood,
one-sided t-test private > public) separate the shared victim and its stolen copies from independent encoders?

The released test, run by benchmarks/dataset_inference_real.py (results/dataset_inference_real_cpu.json), does
not flag the victim (p 0.10) nor any stolen copy, and flags a random ResNet18: cifar10:train and cifar10:test
differ in a way any encoder sees. This script reuses that run's image sets and representations (the same
`--fit`, `--n`, `--views`, `--seed`, `--fast`: cached_reps returns them from the cache) and its GMMs (refitted,
deterministic), and adds reference encoders.

PROTOCOL (fixed in the commit that added this file, before any calibrated result was computed):
  scores   For every encoder E, the released GMM(20, diag, seed) fitted on E's representations of the `--fit`
           private images scores `--n` other private and `--n` public images (one RandomResizedCrop view per
           image, the same views for every encoder); z_E = (score - mean) / sd, mean and sd of E's scores of
           its own fit set (stealkit.verify.calibrated_inference.standardise).
  A (primary, "random pool")  references: randomly initialised ResNet18s with seeds `--pool-seeds` (2 3 4 5),
           chosen a priori: none is a suspect, so all five independents count in the false-positive rate
           (the random ResNet18s of seeds 0 and 1 are suspects, never references). Calibrated score
           c_S(x) = z_S(x) - mean_R z_R(x) on the same image; one-sided Welch t-test c_S(private) > c_S(public)
           on all --n and --n images (calibrated_inference.calibrated_test).
  B ("leave one out")  references: the independent suspects other than the one under test (for the victim
           and a stolen copy: all independents); the same per-image Welch test. No encoder is its own reference.
  C ("encoder level")  the unit is the encoder, not the image: the suspect's split effect d_S = mean z_S(private)
           - mean z_S(public) against the effects of the references of A and B together (k = 8 for an
           independent, 9 otherwise), one-sided t prediction test (calibrated_inference.encoder_level_test).
           A and B assume the references remove the split shift image by image; C does not.
  also     "released": the released test as run (Student t on raw log-likelihoods) and "uncalibrated Welch"
           (Welch on z_S alone), for comparison. Verdict: p < --alpha (0.01). False-positive rate over the
           independent suspects, true-positive rate over the victim and its stolen copies, for every variant.
  why      Per encoder: the split effect d (z units, with its per-image standard error), its correlation with
           the victim's per-image scores and with the random pool's mean score (Pearson, over the 2n scored
           images), the spread of d across non-victim encoders compared with the per-image standard error.

    python benchmarks/dataset_inference_calibrated.py --suspect "victim=runs/victims/cifar10_simclr_resnet18" \
        --kind victim=victim --run runs/verify_real_cpu --suspect "random ResNet18 (seed 0)=random:resnet18:0" \
        --kind "random ResNet18 (seed 0)=independent" ... --fit 5000 --n 5000 --fast \
        --out benchmarks/results/dataset_inference_calibrated_cpu.json
(the full command, with every suspect of benchmarks/verify_real_cpu.sh, is recorded in the JSON's args).
Writes JSON (environment, args, seed, wall time, per-suspect rows, per-encoder split-shift measurements, summary).
Post-hoc diagnostic (added after the results, not part of the protocol): the same command with --seed 1 (fresh
fit/private/public draws and crops), victim and the four ResNet18 independents only, asks whether the seed-0
draw's split effects replicate (results/dataset_inference_calibrated_seed1_cpu.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dataset_inference_real import add_protocol_args, cached_reps, image_sets  # benchmarks/ (the script's own folder is on sys.path)
from stealkit.runtime import environment
from stealkit.verify.calibrated_inference import calibrated_test, encoder_level_test, standardise
from stealkit.verify.dataset_inference import fit_gmm, t_greater
from suspects import load_suspect, run_suspects


def encoder_scores(label: str, spec: str, sets, tag: str, args, cache: Path | None) -> dict:
    """One encoder's released GMM scores: raw log-likelihoods and z (standardised on its fit set) of train and public."""
    t0 = time.perf_counter()
    model, info = load_suspect(spec)
    reps = {part: cached_reps(label, spec, model, imgs, f"{tag}|{part}", cache, args.fast).astype(np.float64)
            for part, imgs in sets.items()}
    t_embed = time.perf_counter() - t0
    gmm = fit_gmm(reps["fit"], args.components, args.covariance, args.seed)
    s = {part: gmm.score_samples(r) for part, r in reps.items()}
    return {"info": info, "dim": reps["fit"].shape[1], "raw": s, "z": {p: standardise(s[p], s["fit"]) for p in ("train", "public")},
            "seconds_embed": round(t_embed, 1), "seconds": round(time.perf_counter() - t0, 1)}


def split_effect(z: dict) -> dict:
    """mean z(private) - mean z(public), its per-image standard error and Cohen's d."""
    a, b = z["train"], z["public"]
    d = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    pooled = float(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
    return {"d": d, "se": se, "cohen_d": d / pooled, "z_over_se": d / se,
            "mean_z_private": float(a.mean()), "mean_z_public": float(b.mean())}  # below 0: the GMM fits its fit set better


def why(enc: dict, kinds: dict, victim: str, pool_labels: list[str], effects: dict, rows: list[dict], args) -> dict:
    """Measurements of why the released test fails (descriptive, no test): per-image score correlations between
    encoders (Pearson, over the 2n scored images), the split effect by group, and what the victim's effect would need."""
    from scipy.stats import norm, t as student_t

    labels = list(enc)
    corr = np.corrcoef(np.stack([np.concatenate([enc[lab]["z"]["train"], enc[lab]["z"]["public"]]) for lab in labels]))
    idx = {lab: i for i, lab in enumerate(labels)}
    group = {lab: ("random" if lab in pool_labels or next(r["checkpoint"] for r in rows if r["label"] == lab).startswith("random:")
                   else kinds.get(lab)) for lab in labels}
    group = {lab: "trained independent" if g == "independent" else g for lab, g in group.items()}

    def mean_pairwise(a: list[str], b: list[str] | None = None) -> float | None:
        pairs = [(x, y) for i, x in enumerate(a) for y in (a[i + 1:] if b is None else b) if x != y]
        return float(np.mean([corr[idx[x], idx[y]] for x, y in pairs])) if pairs else None

    by = {g: [lab for lab in labels if group[lab] == g] for g in ("random", "trained independent", "stolen")}
    ve = effects[victim]
    c = next(r["C_encoder_level"] for r in rows if r["label"] == victim)
    t_crit = float(student_t.isf(args.alpha, c["df"]))
    return {
        "groups": group,
        "corr_labels": labels, "corr_matrix": np.round(corr, 3).tolist(),
        "victim_max_abs_corr_with_another_encoder": float(np.max(np.abs(np.delete(corr[idx[victim]], idx[victim])))),
        "mean_pairwise_corr": {"random": mean_pairwise(by["random"]), "trained independent": mean_pairwise(by["trained independent"]),
                               "stolen": mean_pairwise(by["stolen"]), "stolen_with_victim": mean_pairwise(by["stolen"], [victim]),
                               "random_with_victim": mean_pairwise(by["random"], [victim])},
        "split_effect_d_by_group": {g: {lab: effects[lab]["d"] for lab in labs} for g, labs in by.items()} | {"victim": {victim: ve["d"]}},
        "split_effect_mean_by_group": {g: float(np.mean([effects[lab]["d"] for lab in labs])) for g, labs in by.items() if labs},
        "victim_gmm_fit_gap_mean_z_private": ve["mean_z_private"],
        "n_per_side_for_victim_effect_at_alpha": int(np.ceil(args.n * (norm.isf(args.alpha) / ve["z_over_se"]) ** 2)) if ve["d"] > 0 else None,
        "C_min_d_to_flag_victim": c["d_references_mean"] + t_crit * c["d_references_sd"] * float(np.sqrt(1 + 1 / c["n_references"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suspect", action="append", default=[], help="LABEL=CHECKPOINT or LABEL=random:ARCH:SEED")
    ap.add_argument("--run", action="append", default=[], help="an experiment run dir: every stolen row is a suspect (kind stolen)")
    ap.add_argument("--kind", action="append", default=[], help="LABEL=victim|stolen|independent (expected answer)")
    ap.add_argument("--pool-arch", default="resnet18", help="architecture of the random reference pool (variant A)")
    ap.add_argument("--pool-seeds", type=int, nargs="+", default=[2, 3, 4, 5], help="seeds of the random reference pool; never a suspect's")
    ap.add_argument("--private", default="cifar10:train")
    ap.add_argument("--public", default="cifar10:test")
    ap.add_argument("--fit", type=int, default=5000, help="private images each GMM is fitted on (as dataset_inference_real.py --fit)")
    ap.add_argument("--n", type=int, default=5000, help="private and public images scored (dataset_inference_real.py's max --sizes)")
    ap.add_argument("--views", choices=["crop", "none"], default="crop")
    ap.add_argument("--fast", action="store_true", help="bf16 autocast embedding (must match the cached run to reuse it)")
    add_protocol_args(ap)
    ap.add_argument("--scores", default=None, help="also save every encoder's per-image z scores here (.npz)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t_start = time.perf_counter()
    kinds = dict(k.split("=", 1) for k in args.kind)
    about: dict[str, str] = {}
    suspects = [tuple(item.split("=", 1)) for item in args.suspect]
    for run in args.run:
        for label, ckpt, kind, made in run_suspects(run):
            suspects.append((label, ckpt))
            kinds.setdefault(label, kind)
            about[label] = made
    pool = [(f"random {args.pool_arch} (seed {s}, reference)", f"random:{args.pool_arch}:{s}") for s in args.pool_seeds]
    if {spec for _, spec in pool} & {spec for _, spec in suspects}:
        raise SystemExit("a reference of the random pool is also a suspect")
    victims = [lab for lab, _ in suspects if kinds.get(lab) == "victim"]
    if len(victims) != 1:
        raise SystemExit("name exactly one suspect --kind LABEL=victim")
    sets, tag = image_sets(args, args.n)[:2]
    cache = Path(args.cache) if args.cache else None

    enc = {}
    for label, spec in [*suspects, *pool]:
        enc[label] = encoder_scores(label, spec, sets, tag, args, cache)
        e = enc[label]
        print(f"{label:48s} dim={e['dim']} split d={split_effect(e['z'])['d']:+.4f} ({e['seconds']:.0f}s)", flush=True)
    if args.scores:
        np.savez_compressed(args.scores, labels=np.array(list(enc)), **{f"{i}_{p}": e["z"][p] for i, e in enumerate(enc.values()) for p in ("train", "public")})

    independents = [lab for lab, _ in suspects if kinds.get(lab) == "independent"]
    pool_labels = [lab for lab, _ in pool]
    zs = lambda labs, part: np.stack([enc[lab]["z"][part] for lab in labs])  # noqa: E731
    effects = {lab: split_effect(e["z"]) for lab, e in enc.items()}
    zv = np.concatenate([enc[victims[0]]["z"]["train"], enc[victims[0]]["z"]["public"]])
    pool_mean = np.concatenate([zs(pool_labels, "train").mean(0), zs(pool_labels, "public").mean(0)])

    rows = []
    for label, spec in suspects:
        e, kind = enc[label], kinds.get(label)
        loo = [lab for lab in independents if lab != label]
        zp, zq = e["z"]["train"], e["z"]["public"]
        t_rel, p_rel = t_greater(e["raw"]["train"], e["raw"]["public"], equal_var=True)
        t_unc, p_unc = t_greater(zp, zq, equal_var=False)
        a = calibrated_test(zp, zq, zs(pool_labels, "train"), zs(pool_labels, "public"), alpha=args.alpha)
        b = calibrated_test(zp, zq, zs(loo, "train"), zs(loo, "public"), alpha=args.alpha)
        c = encoder_level_test(effects[label]["d"], [effects[r]["d"] for r in pool_labels + loo], alpha=args.alpha)
        z_all = np.concatenate([zp, zq])
        row = {"label": label, "checkpoint": spec, "kind": kind, "made": about.get(label, e["info"]["made"]),
               "queries": e["info"]["queries"], "dim": e["dim"],
               "released": {"p_value": p_rel, "t_statistic": t_rel, "stolen": bool(p_rel < args.alpha),
                            "delta_ll": float(e["raw"]["train"].mean() - e["raw"]["public"].mean())},
               "uncalibrated_welch": {"p_value": p_unc, "t_statistic": t_unc, "stolen": bool(p_unc < args.alpha)},
               "A_random_pool": {**a.to_dict(), "references": pool_labels},
               "B_leave_one_out": {**b.to_dict(), "references": loo},
               "C_encoder_level": {**c, "references": pool_labels + loo},
               "split_effect": effects[label],
               "corr_with_victim": float(np.corrcoef(z_all, zv)[0, 1]),
               "corr_with_pool_mean": float(np.corrcoef(z_all, pool_mean)[0, 1]),
               "seconds_embed": e["seconds_embed"], "seconds": e["seconds"]}
        rows.append(row)
        print(f"{label:48s} {kind:11s} released p={p_rel:.3g}  uncal p={p_unc:.3g}  A p={a.p_value:.3g}  B p={b.p_value:.3g}  "
              f"C p={c['p_value']:.3g}  d={effects[label]['d']:+.4f}±{effects[label]['se']:.4f}  r(victim)={row['corr_with_victim']:.3f}", flush=True)

    variants = ["released", "uncalibrated_welch", "A_random_pool", "B_leave_one_out", "C_encoder_level"]
    indep = [r for r in rows if r["kind"] == "independent"]
    owned = [r for r in rows if r["kind"] in ("victim", "stolen")]
    rate = lambda rs, v: sum(r[v]["stolen"] for r in rs) / len(rs) if rs else None  # noqa: E731
    non_victim_d = np.array([effects[lab]["d"] for lab in independents + pool_labels])
    summary = {
        "alpha": args.alpha, "n_independent": len(indep), "n_victim_or_stolen": len(owned),
        "false_positive_rate": {v: rate(indep, v) for v in variants},
        "true_positive_rate": {v: rate(owned, v) for v in variants},
        "victim_flagged": {v: next(r[v]["stolen"] for r in rows if r["kind"] == "victim") for v in variants},
        "split_shift": {
            "victim_d": effects[victims[0]]["d"], "victim_se": effects[victims[0]]["se"],
            "independent_and_pool_d_mean": float(non_victim_d.mean()), "independent_and_pool_d_sd": float(non_victim_d.std(ddof=1)),
            "pool_d": [effects[lab]["d"] for lab in pool_labels],
            "median_per_image_se": float(np.median([effects[lab]["se"] for lab in enc])),
            "encoder_sd_over_per_image_se": float(non_victim_d.std(ddof=1) / np.median([effects[lab]["se"] for lab in enc])),
            "victim_corr_with_pool_mean": float(np.corrcoef(zv, pool_mean)[0, 1]),
        },
    }
    summary["why"] = why(enc, kinds, victims[0], pool_labels, effects, rows, args)
    out = {"benchmark": "dataset_inference_calibrated", "protocol": __doc__.split("PROTOCOL")[1].split("    python")[0].strip(),
           "args": vars(args), "seed": args.seed, "environment": environment(), "summary": summary, "rows": rows,
           "references": {lab: {"checkpoint": spec, "dim": enc[lab]["dim"], "split_effect": effects[lab],
                                "corr_with_victim": float(np.corrcoef(np.concatenate([enc[lab]["z"]["train"], enc[lab]["z"]["public"]]), zv)[0, 1]),
                                "seconds": enc[lab]["seconds"]} for lab, spec in pool},
           "wall_seconds": round(time.perf_counter() - t_start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps({k: v for k, v in summary.items() if k != "why"}), f"-> {args.out}")


if __name__ == "__main__":
    main()
