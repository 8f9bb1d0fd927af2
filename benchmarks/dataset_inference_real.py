"""Dataset inference on real encoders (Dziedzic, Duan, Kaleem, Dhawan, Guan, Cattan, Boenisch, Papernot,
"Dataset Inference for Self-Supervised Models", NeurIPS 2022, arXiv:2209.09024; the released protocol of
cleverhans-lab/DatasetInferenceForSelfSupervisedModels `dataset-inference/gmm.py`): is each suspect the
shared victim or a copy of it?

The owner's signature is its private training set (cifar10:train for the shared victim); public images of
the same distribution are cifar10:test. Three disjoint image sets, drawn once from `--seed`:
  fit     `--fit` private images, the GMM is fitted on the suspect's representations of them (released);
  train   up to max(--sizes) other private images, scored;
  public  up to max(--sizes) public images, scored.
Each image is embedded once per suspect (one RandomResizedCrop view per image, as released, or the image
as is with --views none), and the one-sided t-test runs at every size n in --sizes on the first n train
and first n public representations (nested subsets), --draws times with different subsets for n below
the maximum (the median p is reported, and every draw is kept in the JSON). The GMM is fitted once per
suspect. Suspects are `LABEL=CHECKPOINT` (an encoder written by stealkit), or `LABEL=random:ARCH:SEED`
(a randomly initialised network). Each suspect's provenance (how it was made, #queries) is read from its
checkpoint sidecar, or given with --about LABEL=TEXT.

    python benchmarks/dataset_inference_real.py --victim runs/victims/cifar10_simclr_resnet18 \
        --suspect victim=runs/victims/cifar10_simclr_resnet18 --suspect random=random:resnet18:0 \
        --out benchmarks/results/dataset_inference_real_cpu.json
Writes JSON (device, versions, CPU, seeds, wall time per suspect).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from stealkit.data import load_dataset
from stealkit.runtime import environment
from stealkit.verify.alignment import SIMCLR_VIEWS, alignment_scores_test, augmented_views, pairwise_alignment
from stealkit.verify.dataset_inference import crop_views, dataset_inference_reps, fit_gmm, representations
from suspects import load_suspect, run_suspects  # benchmarks/suspects.py (the script's own folder is on sys.path)


def cached_reps(label: str, spec: str, model, images: torch.Tensor, tag: str, cache: Path | None, fast: bool = False) -> np.ndarray:
    """L2-normalised representations (float32 on disk), cached under a key of everything that shapes them: the
    checkpoint's weights and sidecar (or the random spec), the exact input images, and the precision that ran."""
    from stealkit.models.checkpoint import weights_path
    from stealkit.runtime import bf16_enabled

    path = None
    if cache is not None:
        h = hashlib.sha256()
        if spec.startswith("random:"):
            h.update(spec.encode())
        else:
            w = weights_path(spec)
            h.update(w.read_bytes())
            h.update(w.with_suffix(".json").read_bytes())
        h.update(images.contiguous().numpy().tobytes())
        h.update(f"{tag}|bf16={fast and bf16_enabled(torch.device('cpu'))}".encode())
        path = cache / f"{h.hexdigest()[:24]}.npy"
        if path.exists():
            return np.load(path)
    reps = representations(model, images, fast=fast)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, reps.astype(np.float32))
        os.replace(tmp, path)  # a crash never leaves a truncated file under the key
    return reps


def add_protocol_args(ap: argparse.ArgumentParser) -> None:
    """The released GMM's settings, the verdict level, the seed of the image draw, where the data and the
    representation cache live: options every script on this protocol shares."""
    ap.add_argument("--components", type=int, default=20)
    ap.add_argument("--covariance", default="diag")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=os.environ.get("STEALKIT_DATA"))
    ap.add_argument("--cache", default=os.path.join(os.environ.get("STEALKIT_CACHE", ".cache/stealkit"), "di_reps"))


def image_sets(args, n: int):
    """The three disjoint image sets of the protocol, drawn once from args.seed: `args.fit` private images for the
    GMM, `n` other private and `n` public ones to score (one RandomResizedCrop view each with args.views == "crop",
    the same for every suspect) -> ({"fit", "train", "public"}: uint8 images, the cache tag of their
    representations, the private dataset, its permutation, the public images before the views)."""
    pname, _, psplit = args.private.partition(":")
    qname, _, qsplit = args.public.partition(":")
    private = load_dataset(pname, psplit or "train", root=args.data_root)
    public = load_dataset(qname, qsplit or "test", root=args.data_root)
    if args.fit + n > len(private) or n > len(public):
        raise SystemExit(f"need {args.fit}+{n} private and {n} public images; have {len(private)} and {len(public)}")
    perm = torch.randperm(len(private), generator=torch.Generator().manual_seed(args.seed))
    pub_raw = public.images[torch.randperm(len(public), generator=torch.Generator().manual_seed(args.seed + 1))[:n]]
    sets = {"fit": private.images[perm[: args.fit]], "train": private.images[perm[args.fit : args.fit + n]], "public": pub_raw}
    if args.views == "crop":  # one view per image, the same views for every suspect
        sets = {part: crop_views(imgs, args.seed + i) for i, (part, imgs) in enumerate(sets.items())}
    tag = f"{args.private}|{args.public}|{args.fit}|{n}|{args.views}|{args.seed}|fast={args.fast}"
    return sets, tag, private, perm, pub_raw


def p_curve(sizes: list[int], n_all: int, args, tag: tuple, test) -> list[dict]:
    """p-value against sample size: at each n, `test(private_idx, public_idx) -> (p, delta or None)` on --draws random
    subsets of n of the n_all private and n_all public scores (the whole set, once, at n = n_all); subsets drawn
    from numpy's generator seeded [seed, n, draw, *tag] -> one dict per n (median p, every p, flagged fraction)."""
    curve = []
    for n in sizes:
        ps, deltas = [], []
        for d in range(1 if n == n_all else args.draws):
            g = np.random.default_rng([args.seed, n, d, *tag])
            it = np.arange(n) if n == n_all else g.choice(n_all, n, replace=False)
            ip = np.arange(n) if n == n_all else g.choice(n_all, n, replace=False)
            p, delta = test(it, ip)
            ps.append(p)
            deltas.append(delta)
        entry = {"n": n, "p_median": float(np.median(ps)), "p_values": ps}
        if deltas[0] is not None:
            entry["delta_ll"] = deltas
        curve.append({**entry, "flagged_fraction": float(np.mean(np.array(ps) < args.alpha))})
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suspect", action="append", default=[], help="LABEL=CHECKPOINT or LABEL=random:ARCH:SEED")
    ap.add_argument("--run", action="append", default=[], help="an experiment run dir: every stolen row is a suspect (kind stolen)")
    ap.add_argument("--about", action="append", default=[], help="LABEL=how it was made (overrides the sidecar)")
    ap.add_argument("--kind", action="append", default=[], help="LABEL=victim|stolen|independent (expected answer)")
    ap.add_argument("--private", default="cifar10:train")
    ap.add_argument("--public", default="cifar10:test")
    ap.add_argument("--fit", type=int, default=10000, help="private images the GMM is fitted on")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 5000, 10000])
    ap.add_argument("--draws", type=int, default=5, help="subsets per size below the maximum")
    ap.add_argument("--views", choices=["crop", "none"], default="crop")
    ap.add_argument("--align-views", type=int, default=4, help="views per image of the view-alignment test (0: skip it)")
    ap.add_argument("--align-max", type=int, default=4000, help="private and public images of the view-alignment test")
    ap.add_argument("--variants", default="1:diag,5:diag,50:diag,10:full",
                    help="other GMM settings (components:covariance) tried on the victim's representations, to show "
                         "whether any setting finds the signal the released one misses ('' skips)")
    ap.add_argument("--fast", action="store_true", help="embed with bf16 autocast where the CPU/GPU has it (runtime.bf16_enabled)")
    add_protocol_args(ap)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t_start = time.perf_counter()
    n_max = max(args.sizes)
    about = dict(a.split("=", 1) for a in args.about)
    kinds = dict(k.split("=", 1) for k in args.kind)
    sets, tag, private, perm, pub_raw = image_sets(args, n_max)
    fit_imgs, train_imgs, pub_imgs = sets["fit"], sets["train"], sets["public"]
    suspects = [item.split("=", 1) for item in args.suspect]
    for run in args.run:
        for label, ckpt, kind, made in run_suspects(run):
            suspects.append((label, ckpt))
            kinds.setdefault(label, kind)
            about.setdefault(label, made)
    if not suspects:
        raise SystemExit("give at least one --suspect LABEL=CHECKPOINT or --run DIR")
    if args.align_views:
        na = min(args.align_max, n_max)
        align_priv = augmented_views(private.images[perm[args.fit : args.fit + na]], args.align_views, seed=args.seed + 3)
        align_pub = augmented_views(pub_raw[:na], args.align_views, seed=args.seed + 4)
    cache = Path(args.cache) if args.cache else None
    rows = []
    for label, spec in suspects:
        t0 = time.perf_counter()
        model, info = load_suspect(spec)
        reps = {part: cached_reps(label, spec, model, imgs, f"{tag}|{part}", cache, args.fast)
                for part, imgs in (("fit", fit_imgs), ("train", train_imgs), ("public", pub_imgs))}
        align = None
        if args.align_views:
            scores = {}
            for part, v in (("private", align_priv), ("public", align_pub)):
                flat = v.reshape(-1, *v.shape[2:])
                r = cached_reps(label, spec, model, flat, f"{tag}|align{args.align_views}x{na}|{part}", cache, args.fast)
                scores[part] = pairwise_alignment(torch.from_numpy(r).reshape(args.align_views, na, -1))
            align = {"views": args.align_views, "augment": SIMCLR_VIEWS, "mean_private": float(scores["private"].mean()),
                     "mean_public": float(scores["public"].mean()), "curve": []}
            align["curve"] = p_curve(sorted(x for x in set(args.sizes) | {na} if x <= na), na, args, (1,),
                                     lambda it, ip: (alignment_scores_test(scores["private"][it], scores["public"][ip]).p_value, None))
            r_a = alignment_scores_test(scores["private"], scores["public"], alpha=args.alpha, views=args.align_views)
            align.update(n=na, t_statistic=r_a.t_statistic, p_value=r_a.p_value, stolen=r_a.stolen)
        t_embed = time.perf_counter() - t0
        gmm = fit_gmm(reps["fit"].astype(np.float64), args.components, args.covariance, args.seed)
        def gmm_test(it, ip):
            r = dataset_inference_reps(None, reps["train"][it].astype(np.float64), reps["public"][ip].astype(np.float64),
                                       gmm=gmm, n_fit=args.fit, views=args.views, covariance_type=args.covariance, alpha=args.alpha)
            return r.p_value, r.mean_ll_train - r.mean_ll_test

        curve = p_curve(sorted(args.sizes), n_max, args, (), gmm_test)
        full = dataset_inference_reps(None, reps["train"].astype(np.float64), reps["public"].astype(np.float64), gmm=gmm,
                                      n_fit=args.fit, views=args.views, covariance_type=args.covariance, alpha=args.alpha)
        variants = []
        if kinds.get(label) == "victim" and args.variants:
            for v in args.variants.split(","):
                k, cov = v.split(":")
                r = dataset_inference_reps(reps["fit"].astype(np.float64), reps["train"].astype(np.float64),
                                           reps["public"].astype(np.float64), n_components=int(k), covariance_type=cov,
                                           views=args.views, alpha=args.alpha, seed=args.seed)
                variants.append({"components": int(k), "covariance": cov, "p_value": r.p_value, "t_statistic": r.t_statistic,
                                 "delta_ll": r.mean_ll_train - r.mean_ll_test})
                print(f"{label:28s} GMM({k}, {cov}) p={r.p_value:.3g} t={r.t_statistic:.3g}", flush=True)
        row = {"label": label, "checkpoint": spec, "kind": kinds.get(label), "made": about.get(label, info["made"]),
               "queries": info["queries"], **full.to_dict(), "delta_ll": full.mean_ll_train - full.mean_ll_test,
               "curve": curve, "alignment": align, "gmm_variants": variants, "seconds_embed": round(t_embed, 1), "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        if align:
            print(f"{label:28s} alignment p={align['p_value']:.3g} t={align['t_statistic']:.3g} "
                  f"Δ={align['mean_private'] - align['mean_public']:.4f}  curve p: "
                  + " ".join("%d:%.2g" % (c["n"], c["p_median"]) for c in align["curve"]), flush=True)
        print(f"{label:28s} GMM p={full.p_value:.3g} t={full.t_statistic:.3g} Δll={row['delta_ll']:.3g} {full.verdict}  "
              f"curve p: {' '.join('%d:%.2g' % (c['n'], c['p_median']) for c in curve)}  ({row['seconds']:.0f}s)", flush=True)
        write(args, rows, t_start, complete=False)  # a partial record after every suspect
    summary = write(args, rows, t_start, complete=True)
    print(json.dumps(summary), f"-> {args.out}")


def write(args, rows: list[dict], t_start: float, complete: bool) -> dict:
    """Write the JSON record (the false-positive rate over the independent suspects, every row) -> summary."""
    independent = [r for r in rows if r["kind"] == "independent"]
    owned = [r for r in rows if r["kind"] in ("victim", "stolen")]

    def rate(rs, key):
        return sum(bool(key(r)) for r in rs) / len(rs) if rs else None

    summary = {"n_independent": len(independent), "n_victim_or_stolen": len(owned),
               "false_positive_rate_gmm": rate(independent, lambda r: r["stolen"]),
               "false_positive_rate_alignment": rate(independent, lambda r: r["alignment"]["stolen"]) if args.align_views else None,
               "true_positive_rate_gmm": rate(owned, lambda r: r["stolen"]),
               "true_positive_rate_alignment": rate(owned, lambda r: r["alignment"]["stolen"]) if args.align_views else None}
    from stealkit.runtime import bf16_enabled

    precision = {"bf16_autocast": bool(args.fast and bf16_enabled(torch.device("cpu")))}
    out = {"benchmark": "dataset_inference_real", "complete": complete, "args": vars(args), "environment": environment(),
           "precision": precision,
           "summary": summary, "rows": rows, "wall_seconds": round(time.perf_counter() - t_start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    return summary


if __name__ == "__main__":
    main()
