"""The README's result tables, rendered from the JSON they cite (benchmarks/results/*.json).

Each table sits in README.md between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`;
this script rewrites those blocks from the JSON, and `--check` exits non-zero when a block differs from
what its JSON gives (tests/test_readme_tables.py runs the check in CI). Every figure in a block names
its source file; a run's wall time and peak memory are the JSON's `wall_seconds` and `peak_rss_gib`.

    python benchmarks/readme_tables.py            # rewrite README.md's generated blocks
    python benchmarks/readme_tables.py --check    # exit 1 and show the first difference if any block is stale

The papers' numbers in the right-hand columns are quoted from StolenEncoder (Liu, Jia, Liu, Gong, ACM CCS
2022, arXiv:2201.05889), Tables II, X and XI; Tables XIII–XV's sit in the defence config's `paper` fields.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

from stealkit.experiment.report import md_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"

# StolenEncoder paper, CIFAR-10 victim (TA on GTSRB 80.67): Table X at 3% of the victim's data.
PAPER_TABLE10 = {"StolenEncoder": (77.97, 1500), "StolenEncoder-query-aug": (76.71, 151500),
                 "StolenEncoder-w/o-aug": (44.47, 1500), "Pre-training-encoder": (66.42, 0)}
PAPER_TA_GTSRB = 80.67
# Table II, CIFAR-10 victim: TA / SA per downstream set.
PAPER_TABLE2 = {"gtsrb": (80.67, 79.43), "mnist": (97.90, 97.95), "fashion_mnist": (89.44, 90.34)}
NAMES = {"gtsrb": "GTSRB", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def load(name: str, required: bool = True) -> dict | None:
    """benchmarks/results/<name> as a dict; a missing file is FileNotFoundError (None if not required)."""
    path = RESULTS / name
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path.relative_to(REPO)} does not exist: run the command that writes it")
        return None
    return json.loads(path.read_text())


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def ratio(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def machine(d: dict) -> str:
    """'2 CPU cores (Intel Xeon, amx_bf16 …), bf16 autocast' from a results JSON."""
    env = d.get("environment", {})
    flags = env.get("cpu_flags")
    cpu = env.get("cpu_model") or env.get("device_name", "?")
    bf16 = (d.get("precision") or {}).get("bf16_autocast")
    prec = "" if bf16 is None else (", bf16 autocast" if bf16 else ", fp32")
    fl = f"; {' '.join(flags)}" if flags else ""
    return f"{env.get('cpu_count', '?')} CPU cores ({cpu}{fl}){prec}, torch {env.get('torch', '?')}"


def run_line(d: dict, source: str) -> str:
    wall = d.get("wall_seconds")
    rss = d.get("peak_rss_gib")
    parts = [f"`{source}`"]
    if wall is not None:
        parts.append(f"wall {wall / 60:.1f} min (`wall_seconds`)")
    if rss is not None:
        parts.append(f"peak RSS {rss:.2f} GiB (`peak_rss_gib`)")
    parts.append(machine(d))
    parts.append(f"seed {d.get('seed', '?')}")
    return "Source: " + ", ".join(parts) + "."


def probe_note(d: dict) -> str:
    """What the probe was, from the run's resolved probe settings (older results have only the kind)."""
    p = d.get("probe") or {}
    r = d.get("probe_resolved")
    if r is None:
        return (f"Probe: `{p.get('kind', 'mlp')}` {json.dumps(p.get('config', {}))} (this JSON predates the record of "
                f"the probe's resolved settings, `probe_resolved`).")
    inp = "L2-normalised features" if r.get("normalize") else "raw features"
    drop = f"Dropout {r['dropout']}" if r.get("dropout") else "no dropout"
    return (f"Probe: `{p.get('kind', 'mlp')}`, {'-'.join(map(str, r['hidden']))} MLP on {inp}, {drop}, Adam {r['lr']:g}, "
            f"batch {r['batch_size']}, {r['epochs']} epochs.")


def _first(d: dict, label: str) -> dict | None:
    return next((r for r in d["rows"] if r["label"] == label), None)


def table10() -> str:
    src = "benchmarks/results/table10_real_cpu.json"
    d = load("table10_real_cpu.json")
    raw = load("table10_real_cpu.mlp_raw.json", required=False)
    sets = ["gtsrb", "mnist"]
    head = ["attack", "#queries"] + [f"{NAMES[s]} SA (SA/TA)" for s in sets]
    if raw:
        head += [f"{NAMES[s]} SA, `mlp-raw`" for s in sets]
    head.append("paper, GTSRB at 3%: SA (SA/TA), #queries")
    rows = []
    ta = {s: d["rows"][0]["downstream"][s]["TA"] for s in sets}
    row = ["*victim (TA)*", "—"] + [f"*{pct(ta[s])}*" for s in sets]
    if raw:
        row += [f"*{pct(raw['rows'][0]['downstream'][s]['TA'])}*" for s in sets]
    row.append(f"*{PAPER_TA_GTSRB:.2f}*")
    rows.append(row)
    for r in d["rows"]:
        cells = [r["label"], f"{r['queries']:,}"]
        cells += [f"{pct(r['downstream'][s]['SA'])} ({ratio(r['downstream'][s]['SA/TA'])})" for s in sets]
        if raw:
            rr = _first(raw, r["label"])
            cells += [pct(rr["downstream"][s]["SA"]) if rr else "—" for s in sets]
        paper = PAPER_TABLE10.get(r["label"])
        cells.append(f"{paper[0]:.2f} ({100 * paper[0] / PAPER_TA_GTSRB:.0f}%), {paper[1]:,}" if paper else "—")
        rows.append(cells)
    sizes = d["rows"][0]["downstream"]["gtsrb"]
    lines = md_table(head, rows)
    lines += ["", f"Probes on {sizes['train_size']:,} train / {sizes['test_size']:,} test images per set. {probe_note(d)} "
              + run_line(d, src)]
    if raw:
        lines[-1] += f" The `mlp-raw` columns: the same stolen encoders probed the earlier way (`{src[:-5]}.mlp_raw.json`)."
    return "\n".join(lines)


def table2() -> str:
    src = "benchmarks/results/table2_real_cpu.json"
    d = load("table2_real_cpu.json")
    raw = load("table2_real_cpu.mlp_raw.json", required=False)
    r = d["rows"][0]
    head = ["downstream (train / test)", "TA (%)", "SA (%)", "SA/TA"]
    if raw:
        head += ["TA / SA, `mlp-raw`"]
    head.append("paper TA / SA (SA/TA)")
    rows = []
    for s, e in r["downstream"].items():
        cells = [f"{NAMES.get(s, s)} ({e['train_size']:,} / {e['test_size']:,})", pct(e["TA"]), pct(e["SA"]), ratio(e["SA/TA"])]
        if raw:
            er = raw["rows"][0]["downstream"].get(s)
            cells.append(f"{pct(er['TA'])} / {pct(er['SA'])}" if er else "—")
        p = PAPER_TABLE2.get(s)
        cells.append(f"{p[0]:.2f} / {p[1]:.2f} ({100 * p[1] / p[0]:.0f}%)" if p else "—")
        rows.append(cells)
    lines = md_table(head, rows)
    lines += ["", f"{r['label']}, {r['queries']:,} queries. {probe_note(d)} " + run_line(d, src)]
    return "\n".join(lines)


def table11() -> str:
    src = "benchmarks/results/table11_real_world_cpu.table11.json"
    t = load("table11_real_world_cpu.table11.json")
    res = load("table11_real_world_cpu.json")
    raw = load("table11_real_world_cpu.mlp_raw.json", required=False)
    raw_ds = raw["rows"][0]["downstream"] if raw else {}
    head = "| downstream | TA (%) | SA (%) | SA/TA |" + (" TA / SA, `mlp-raw` |" if raw else "") + " paper TA / SA (SA/TA) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in t["table"]:
        paper = "—" if r.get("paper_TA") is None else \
            f"{r['paper_TA']:.2f} / {r['paper_SA']:.2f} ({100 * r['paper_SA'] / r['paper_TA']:.0f}%)"
        e = raw_ds.get(r["downstream"])
        rawcell = (f" {pct(e['TA'])} / {pct(e['SA'])} |" if e else " — |") if raw else ""
        lines.append(f"| {NAMES.get(r['downstream'], r['downstream'])} | {r['TA']:.2f} | {r['SA']:.2f} | {r['SA/TA']:.0f}% |"
                     f"{rawcell} {paper} |")
    f = t["flops"]
    led = t.get("ledger") or {}
    trained = f.get("images_per_epoch")
    lines += ["", f"{t['queries']:,} queries, ${t['cost_usd']:.2f}; the ledger billed {led.get('queries', '?'):,} queries "
              f"(${led.get('cost', 0):.2f}) in {led.get('requests', '?')} requests. Stealing took {t['steal_seconds'] / 60:.1f} min "
              f"({f['stealing']:.2e} FLOPs: the victim's answers plus training"
              + (f" on {trained:,} images per epoch" if trained else "") + f") against ≈ {f['victim_training_estimate']:.2e} FLOPs "
              f"for the victim's ImageNet training (an estimate: its forward FLOPs × 3 × 1,281,167 images × an assumed "
              f"{f['assumed_victim_epochs']:.0f} epochs), a ratio of {f['ratio']:.1e}. "
              + probe_note(res) + " " + run_line({**t, "peak_rss_gib": t.get("peak_rss_gib"), "precision": t.get("precision")}, src)]
    return "\n".join(lines)


def victim_ta() -> str:
    src = "benchmarks/results/real_victim_ta_cpu.json"
    v = load("real_victim_ta_cpu.json")
    acc = next(iter(v["accuracy"].values()))
    refs = {"gtsrb": "MANIFEST.json: 79.63 on random 14,000 / 6,000 subsets; StolenEncoder paper's CIFAR-10 victim: 80.67",
            "mnist": "paper's CIFAR-10 victim: 97.90 (Table II)"}
    lines = ["| downstream | train / test | TA (%) | reference |", "|---|---|---|---|"]
    for s, a in acc.items():
        ds = v["datasets"][s]
        lines.append(f"| {NAMES.get(s, s)} | {ds['train']:,} / {ds['test']:,} (full) | **{pct(a)}** | {refs.get(s, '—')} |")
    lines += ["", probe_note({"probe": {"kind": v.get("probe", "mlp"), "config": v.get("probe_config", {})},
                              "probe_resolved": v.get("probe_resolved")}) + " " + run_line(v, src)]
    return "\n".join(lines)


def speed() -> str:
    src = "benchmarks/results/cpu_steal_speed.json"
    d = load("cpu_steal_speed.json")
    head = ["stolen encoder", "precision", "images / epoch", "plain loop: s (img/s)", "stealkit: s (img/s)", "ratio"]
    lines = md_table(head, [[r["arch"], r["precision"], str(r["images"]),
                             f"{r['plain_seconds']:.1f} ({r['plain_images_per_s']:.1f})",
                             f"{r['stealkit_seconds']:.1f} ({r['stealkit_images_per_s']:.1f})", f"{r['speedup']:.2f}×"]
                            for r in d["rows"]])
    lines.append("")
    for h in d.get("headline", []):
        lines.append(f"**{h['arch']}: stealkit as it runs by default on this CPU ({h['stealkit_precision']}) against the plain "
                     f"fp32 loop: {h['stealkit_images_per_s']:.1f} vs {h['plain_fp32_images_per_s']:.1f} img/s, "
                     f"{h['speedup']:.2f}×** (`headline`).")
    load_note = f"1-minute load average {d.get('load_before')} before, {d.get('load_after')} after"
    lines += ["", f"Source: `{src}`: {d['cpu_model']} ({' '.join(d.get('cpu_flags', [])) or 'no listed flags'}), "
              f"{d['threads']} threads, fastest of {d.get('repeats', 1)} runs per pair, {load_note}, "
              f"torch {d['environment']['torch']}, seed {d['seed']}."]
    return "\n".join(lines)


def serving() -> str:
    src = "benchmarks/results/serve_batching_cpu.json"
    d = load("serve_batching_cpu.json")
    by = {(r["mode"], r["clients"], r["batch"]): r for r in d["results"]}
    ref = d["settings"]["reference_batch"]
    order = [(1, ref)] + [(c, b) for b in d["settings"]["batch_sizes"] for c in d["settings"]["clients"]]
    def cell(mode, c, b):
        r = by.get((mode, c, b))
        return "—" if r is None else f"{r['images_per_s']:.1f} · {r['p50_ms']:.0f} · {r['p99_ms']:.0f}"

    head = ["clients × images per request", "with batching: images/s · p50 · p99 ms", "without: images/s · p50 · p99 ms"]
    lines = md_table(head, [[f"{c} × {b}", cell("batched", c, b), cell("unbatched", c, b)] for c, b in order])
    t = d["target"]
    top = max(d["settings"]["clients"])
    ub = by.get(("unbatched", top, 1))
    base = by.get(("unbatched", 1, ref))
    lines += ["", f"{top} concurrent batch-1 clients with batching reach **{100 * t['ratio']:.0f}%** of the images/s of one "
              f"batch-{ref} client on a server without batching (`target.ratio`, goal ≥ {100 * t['goal']:.0f}%)"
              + (f"; without batching they reach {100 * ub['images_per_s'] / base['images_per_s']:.0f}% of it" if ub and base else "")
              + f". Source: `{src}`, {d['settings']['arch']} at {d['settings']['size']}×{d['settings']['size']}, "
              f"{d['settings']['transport']}, {d['environment'].get('cpu_count', '?')} CPU cores "
              f"({d['environment'].get('cpu_model') or d.get('device_name', '?')}), 1-minute load "
              f"{d['load_average']['start'][0]:.1f} at the start and {d['load_average']['end'][0]:.1f} at the end."]
    return "\n".join(lines)


def quickstart() -> str:
    """`stealkit quickstart`'s table (mean ± sd over its seeds) from its results.json, kept in benchmarks/results."""
    from stealkit.experiment.report import results_table, seeds_table

    src = "benchmarks/results/quickstart.json"
    d = load("quickstart.json")
    multi = len(d.get("seeds") or [d.get("seed")]) > 1
    header, rows = seeds_table(d) if multi else results_table(d)
    keep = [i for i, h in enumerate(header) if h != "victim"]
    lines = md_table([header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    seeds = f"mean ± standard deviation over seeds {d['seeds']} (attack and probe randomness; one victim)" if multi else f"seed {d['seed']}"
    lines += ["", f"{seeds}. {probe_note(d)} " + run_line(d, src)]
    return "\n".join(lines)


def k_of_n(rate: float | None, n: int) -> str:
    """A rate over n suspects as the count it came from: 0.2, 5 -> '1/5' (None -> '—')."""
    return "—" if rate is None else f"{round(rate * n)}/{n}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def _suspect_label(label: str) -> str:
    """'StolenEncoder [limit=500], 500 queries' -> 'StolenEncoder, 500 surrogate images' (#queries has its own column)."""
    m = re.match(r"(.*) \[limit=(\d+)\], [\d,]+ queries$", label)
    return f"{m.group(1)}, {int(m.group(2)):,} surrogate images" if m else label


def _complete(d: dict, src: str) -> dict:
    if not d.get("complete", True):
        raise SystemExit(f"{src} is a partial record (complete: false): its run stopped early; rerun it before rendering")
    return d


def dataset_inference() -> str:
    """Each suspect: how it was made, #queries, the released GMM test and the view-alignment test (p, verdict)."""
    src = "benchmarks/results/dataset_inference_real_cpu.json"
    d = _complete(load("dataset_inference_real_cpu.json"), src)
    a = d["args"]
    head = ["suspect", "kind", "#queries", "GMM dataset inference: p (verdict)", "view alignment: p (verdict)",
            "Δ alignment (private − public)"]
    rows = []
    for r in d["rows"]:
        al = r.get("alignment") or {}
        q = "—" if r.get("queries") in (None, 0) and r.get("kind") != "stolen" else f"{r['queries']:,}"
        gmm = f"{_p(r['p_value'])} ({'**stolen**' if r['stolen'] else 'not flagged'})"
        ali = f"{_p(al['p_value'])} ({'**stolen**' if al['stolen'] else 'not flagged'})" if al else "—"
        delta = f"{al['mean_private'] - al['mean_public']:+.4f}" if al else "—"
        rows.append([_suspect_label(r["label"]), r.get("kind") or "—", q, gmm, ali, delta])
    sm = d["summary"]
    n_ind = sm["n_independent"]
    n_al = (d["rows"][0].get("alignment") or {}).get("n", 0)
    view = "one RandomResizedCrop view each" if a["views"] == "crop" else "the images as they are"
    lines = md_table(head, rows)
    lines += ["", f"GMM: {a['components']} components ({a['covariance']} covariance) fitted on the suspect's representations of "
              f"{a['fit']:,} private images ({view}), then {max(a['sizes']):,} other private vs {max(a['sizes']):,} public "
              f"images, one-sided Student t-test (the released protocol). View alignment: {a['align_views']} views "
              f"(crop+flip+jitter+gray) of {n_al:,} private and {n_al:,} public images. Verdict at p < {a['alpha']}. "
              f"False positives over the {n_ind} independent encoders: GMM {k_of_n(sm['false_positive_rate_gmm'], n_ind)}, "
              f"alignment {k_of_n(sm['false_positive_rate_alignment'], n_ind)}. Wall {d['wall_seconds'] / 60:.1f} min, {machine(d)}, seed {a['seed']}. Source: `{src}`."]
    return "\n".join(lines)


def dataset_inference_curve() -> str:
    """Median p-value of both tests against the number of private/public images (the curve run: the victim and a
    random encoder up to 10,000 images each)."""
    src = "benchmarks/results/dataset_inference_curve_cpu.json"
    d = _complete(load("dataset_inference_curve_cpu.json"), src)
    sizes = sorted({c["n"] for r in d["rows"] for c in r["curve"] + (r.get("alignment") or {}).get("curve", [])})
    head = ["suspect", "test"] + [f"{n:,}" for n in sizes]
    rows = []
    for r in d["rows"]:
        for test, curve in (("GMM", r["curve"]), ("view alignment", (r.get("alignment") or {}).get("curve", []))):
            by_n = {c["n"]: c["p_median"] for c in curve}
            rows.append([r["label"], test] + [_p(by_n[n]) if n in by_n else "—" for n in sizes])
    a = d["args"]
    lines = md_table(head, rows)
    lines += ["", f"Median p over {a['draws']} random subsets of n private and n public images (one draw at the largest n), "
              f"each image embedded once; GMM fitted on {a['fit']:,} other private images. Wall {d['wall_seconds'] / 60:.1f} min, "
              f"{machine(d)}. Source: `{src}`."]
    return "\n".join(lines)


def attack_comparison() -> str:
    """SA per attack and surrogate size on GTSRB and MNIST, the best per size in bold, and whether the best is
    contrastive (the blog's claim), from the attack-comparison run (benchmarks/attack_comparison_real_cpu.sh)."""
    src = "benchmarks/results/attack_comparison_real_cpu.json"
    d = load("attack_comparison_real_cpu.json")
    sets = ["gtsrb", "mnist"]
    kind = {"stolenencoder": "ℓ2 + augmentation term", "stolenencoder-wo-aug": "ℓ2", "cont-steal": "contrastive (NT-Xent)",
            "steal-infonce": "contrastive (InfoNCE)", "steal-softnn": "contrastive (Soft-NN)", "steal-mse": "MSE",
            "steal-wasserstein": "Wasserstein"}
    head = ["attack", "loss", "surrogate images", "#queries (billed)"] + [f"{NAMES[s]} SA (SA/TA)" for s in sets]
    ta = {s: d["rows"][0]["downstream"][s]["TA"] for s in sets}
    rows = [["*victim (TA)*", "—", "—", "—"] + [f"*{pct(ta[s])}*" for s in sets]]
    verdicts = []
    for size in sorted({r["surrogate_size"] for r in d["rows"]}):
        group = [r for r in d["rows"] if r["surrogate_size"] == size]
        best = {s: max(group, key=lambda r: r["downstream"][s]["SA"]) for s in sets}
        for r in sorted(group, key=lambda r: r["label"]):
            cells = []
            for s in sets:
                c = f"{pct(r['downstream'][s]['SA'])} ({ratio(r['downstream'][s]['SA/TA'])})"
                cells.append(f"**{c}**" if r is best[s] else c)
            rows.append([r["label"].split(" [")[0], kind.get(r["attack"], r["attack"]), f"{size:,}", f"{r['queries']:,}"] + cells)
        for s in sets:
            k = kind.get(best[s]["attack"], "")
            verdicts.append(f"{size:,} images, {NAMES[s]}: {best[s]['label'].split(' [')[0]} "
                            f"({'contrastive' if k.startswith('contrastive') else 'not contrastive'})")
    holds = all("(contrastive)" in v for v in verdicts)
    sizes = d["rows"][0]["downstream"]["gtsrb"]
    lines = md_table(head, rows)
    lines += ["", f"Best SA per surrogate size (bold): {'; '.join(verdicts)}. \"Contrastive losses perform the best\": "
              f"**{'holds' if holds else 'does not hold'}** here. Probes on {sizes['train_size']:,} train / "
              f"{sizes['test_size']:,} test images per set. {probe_note(d)} " + run_line(d, src)]
    return "\n".join(lines)

def dataset_inference_calibrated() -> str:
    """Each suspect under the released test and the three calibrated variants fixed before any result, with its
    private-minus-public gap in standard errors, and the released p on a fresh draw of images (seed 1) where run."""
    src, src1 = "benchmarks/results/dataset_inference_calibrated_cpu.json", "benchmarks/results/dataset_inference_calibrated_seed1_cpu.json"
    d, d1 = load("dataset_inference_calibrated_cpu.json"), load("dataset_inference_calibrated_seed1_cpu.json", required=False)
    redraw = {r["label"]: r for r in (d1 or {}).get("rows", [])}
    variants = [("released", "released"), ("A_random_pool", "A: less random-pool refs"),
                ("B_leave_one_out", "B: less other independents"), ("C_encoder_level", "C: encoder level")]
    head = ["suspect", "kind", "gap (z) ± SE"] + [f"{name}: p" for _, name in variants] + ["released p, fresh draw (seed 1)"]
    rows = []
    for r in d["rows"]:
        e = r["split_effect"]
        cells = [f"{_p(r[k]['p_value'])}{' **stolen**' if r[k]['stolen'] else ''}" for k, _ in variants]
        again = redraw.get(r["label"])
        rows.append([_suspect_label(r["label"]), r["kind"], f"{e['d']:+.3f} ± {e['se']:.3f}", *cells,
                     _p(again["released"]["p_value"]) if again else "—"])
    sm = d["summary"]
    fp = ", ".join(f"{name.split(':')[0]} {k_of_n(sm['false_positive_rate'][k], sm['n_independent'])}" for k, name in variants)
    tp = ", ".join(f"{name.split(':')[0]} {k_of_n(sm['true_positive_rate'][k], sm['n_victim_or_stolen'])}" for k, name in variants)
    a = d["args"]
    lines = md_table(head, rows)
    lines += ["", f"The released GMM ({a['components']} components, {a['covariance']}) fitted on each encoder's representations of "
              f"{a['fit']:,} private images, {a['n']:,} other private vs {a['n']:,} public images scored, scores standardised on the "
              f"fit set (gap: mean private − mean public). A: each image's score less the mean score of random ResNet18s (seeds "
              f"{', '.join(map(str, a['pool_seeds']))}, none a suspect), one-sided Welch test; B: less the other independent "
              f"encoders (never the one under test); C: the suspect's gap against the references' gaps, a t prediction test. "
              f"Flagged at p < {a['alpha']}. False positives over the independent encoders: {fp}; flagged among the victim and its "
              f"copies: {tp}. Wall {d['wall_seconds'] / 60:.1f} min (representations from the cache of "
              f"`benchmarks/dataset_inference_real.py`), {machine(d)}, seed {a['seed']}. Sources: `{src}`"
              + (f", `{src1}` (wall {d1['wall_seconds'] / 60:.1f} min)." if d1 else ".")]
    return "\n".join(lines)


UNMARKED = ", of the unmarked victim"  # benchmarks/watermark_real.py's suffix for copies of the victim before the watermark


def watermark() -> str:
    """What the watermark costs honest users (TA before/after) and what it reads off each suspect."""
    src_ta, src_wm, src_steal = ("benchmarks/results/watermark_ta_cpu.json", "benchmarks/results/watermark_real_cpu.json",
                                 "benchmarks/results/watermark_steal_cpu.json")
    ta, wm, steal = load("watermark_ta_cpu.json"), load("watermark_real_cpu.json"), load("watermark_steal_cpu.json")
    sets = [s for s in ("gtsrb", "mnist") if s in ta["datasets"]]
    (before, acc_b), (after, acc_a) = list(ta["accuracy"].items())
    head = ["encoder"] + [f"{NAMES[s]} TA ({ta['datasets'][s]['train']:,} train / {ta['datasets'][s]['test']:,} test)" for s in sets]
    rows = [["shared victim", *(pct(acc_b[s]) for s in sets)], ["watermarked victim", *(pct(acc_a[s]) for s in sets)],
            ["**cost to honest users (points)**", *(f"**{100 * (acc_b[s] - acc_a[s]):+.2f}**" for s in sets)]]
    lines = md_table(head, rows)
    lines += ["", f"`{before}` against `{after}`, the same training subset, test split and probe seed for both. "
              f"{probe_note({'probe': {'kind': ta['probe']}, 'probe_resolved': ta['probe_resolved']})} "
              + run_line(ta, src_ta), ""]
    sa = {f"{r['label']}, {r['queries']:,} queries": r["downstream"]["gtsrb"]["SA"] for r in steal["rows"]}
    unmarked = load("verify_real_cpu.json", required=False)  # copies of the victim before the watermark
    sa.update({f"{r['label']}, {r['queries']:,} queries{UNMARKED}": r["downstream"]["gtsrb"]["SA"] for r in (unmarked or {}).get("rows", [])})
    kinds = {"victim": "watermarked victim", "unmarked": "victim before the watermark", "stolen": "copy of the watermarked victim",
             "stolen-unmarked": "copy of the unmarked victim", "independent": "independent"}
    head = ["suspect", "kind", "#queries", "GTSRB SA", "watermark accuracy", "p (per-image Wilcoxon)", "p (binomial)", "verdict"]
    rows = []
    order = list(kinds)
    for r in sorted(wm["rows"], key=lambda r: order.index(r["kind"]) if r["kind"] in order else len(order)):
        if r["accuracy"] is None:
            rows.append([_suspect_label(r["suspect"]), kinds.get(r["kind"], r["kind"]), "—", "—", "—", "—", "—", r["verdict"]])
            continue
        q = f"{r['queries']:,}" if r["kind"].startswith("stolen") and r.get("queries") is not None else "—"
        verdict = "**watermark**" if r["significant"] else "no watermark"
        label = r["suspect"].removesuffix(UNMARKED)
        rows.append([_suspect_label(label) + (" (unmarked victim)" if label != r["suspect"] else ""), kinds.get(r["kind"], r["kind"]), q, pct(sa.get(r["suspect"])),
                     f"{100 * r['accuracy']:.2f}%", _p(r["p_value"]), _p(r["p_binomial"]), verdict])
    sm = wm["summary"]
    lines += md_table(head, rows)
    lines += ["", f"Watermark accuracy: the watermarked victim's fixed head on each suspect's representations of {wm['images']:,} "
              f"CIFAR-10 test images, each rotated once by an angle in (0°, 180°) and once in (180°, 360°) (chance 50%). "
              f"Verdict at p < {wm['args']['alpha']} (per-image Wilcoxon). Detected: {k_of_n(sm['detection_rate'], sm['n_marked'])} of the watermarked victim and its copies; false positives: "
              f"{k_of_n(sm['false_positive_rate'], sm['n_independent'])} independent encoders. GTSRB SA "
              f"of the copies from `{src_steal}` (2,000 train / 1,000 test, the released probe). Wall {wm['wall_seconds'] / 60:.1f} min, "
              f"{machine(wm)}, seed {wm['args']['seed']}. Source: `{src_wm}`."]
    return "\n".join(lines)


ROLE_NAMES = {"sybil": "sybil", "averaging": "averaging", "renormalise": "re-normalising", "recentre": "re-centring",
              "diluting": "diluting"}


def role_name(role: str, cfg: dict) -> str:
    """An adaptive thief's name in the table: "diluting-3" -> "diluting ×3" (its re-asks per new image)."""
    if role.endswith("+fc"):  # the same paid answers, the stolen encoder with a linear head
        base = role.removesuffix("+fc")
        return ("plain thief" if base == "thief" else role_name(base, cfg)) + " + linear head"
    if role.startswith("diluting"):
        n = role.split("-", 1)[1] if "-" in role else cfg["diluting"]["repeats_per_new"]
        return f"diluting ×{float(n):g}"
    return ROLE_NAMES[role]


def defence_tradeoff() -> str:
    """Every defence through the served API (benchmarks/defence_tradeoff.py): TA-honest on the full GTSRB test
    split, SA of the plain and adaptive thieves, what reaching the undefended SA costs, the goal's bar."""
    src = "benchmarks/results/defence_tradeoff_real_cpu.json"
    d = load("defence_tradeoff_real_cpu.json")
    small, big = min(d["budgets"]), max(d["budgets"])
    base = next(r for r in d["rows"] if not r["defence"])
    ref = d["reference"]
    head = ["defence setting", "TA-honest (loss)", f"SA, {small:,} / {big:,} queries", "adaptive thieves: SA (queries)",
            "worst SA (over baseline)", f"queries to reach {d['undefended_SA_target']:.2f} SA ($)", "goal", "paper TA / SA"]
    rows = []
    for r in d["rows"]:
        adaptive = [f"{role_name(k, d['config'])} {v:.2f} ({r['queries'][k]:,})" for k, v in r["SA"].items() if not k.startswith("thief-")]
        rep = r.get("averaging_repeats")
        if rep and "averaging" not in r["SA"]:
            billed = r["accounts"].get("averager", {}).get("billed", 0)
            adaptive.append(f"averaging: all {rep['repeats']} repeats got identical answers ({billed:,} queries), nothing to average")
        cost = r["cost_to_reach_undefended"]
        if cost["queries"] is None:
            reach = f"not within {cost.get('largest_budget', big):,}"
        else:
            mark = {"at most": "≤ ", "interpolated": "≈ "}.get(cost["how"], "")  # ≈: linear between two measured budgets
            reach = f"{mark}{cost['queries']:,.0f} (${cost['dollars']:.2f})"
        g = r["goal"]
        # a thief another setting of the same family faced and this one did not: its "met" is against fewer thieves
        untried = sorted({k for o in d["rows"] if o["family"] == r["family"] for k in o["SA"]} - set(r["SA"]))
        untried = [role_name(k, d["config"]) for k in untried if not k.startswith("thief-")]
        goal = (f"**met**, but not tried against: {', '.join(untried)}" if untried else "**met**") if g["met"] else "gap " + ", ".join(
            x for x in ([f"TA {g['ta_gap']:.2f} pt"] if g["ta_gap"] else []) + ([f"SA {g['sa_gap']:.2f} pt"] if g["sa_gap"] else []))
        name = f"**{r['label']}**" if r["pareto"] else r["label"]
        rows.append([name, f"{r['TA_honest']:.2f} ({g['ta_loss']:+.2f})",
                     " / ".join(f"{r['SA'][f'thief-{b}']:.2f}" if f"thief-{b}" in r["SA"] else "—" for b in (small, big))
                     + "".join(f"; {int(k[6:]):,}: {v:.2f}" for k, v in r["SA"].items() if k.startswith("thief-") and int(k[6:]) > big),
                     "; ".join(adaptive) or "—",
                     f"{r['SA_worst']:.2f} ({g['sa_gain']:+.2f})", reach, goal, r.get("paper") or "—"])
    lines = md_table(head, rows)
    beyond = any(k.startswith("thief-") and int(k[6:]) > big for r in d["rows"] for k in r["SA"])
    seeds = ref["TA_clean_normalised_by_seed"]
    cfg = d["config"]
    lines += ["", f"Bold: on the Pareto frontier (TA-honest against the worst thief's SA). TA-honest: the honest account's "
              f"answers, {cfg['honest'].get('train_limit', 'all'):,} GTSRB training images and the full test split; the victim's own "
              f"normalised features give {ref['TA_clean_mean']:.2f} ± {ref['TA_clean_std']:.2f} over {len(seeds)} probe seeds "
              f"({', '.join(f'{v:.2f}' for v in seeds.values())}), the undefended row {base['TA_honest']:.2f}. SA: the stolen "
              f"encoder's probe on the same training images and {cfg['sa_test_limit']:,} of the test images. Baseline: the "
              f"pre-training encoder (no query) {ref['baseline_SA']:.2f}; goal: TA loss ≤ {cfg['goal']['max_ta_loss']:g} and "
              f"worst SA ≤ baseline + {cfg['goal']['max_sa_gain']:g}. Queries to reach: ≤ the smallest measured budget that "
              f"reaches it, ≈ linear between the two budgets around it"
              + (f"; a plain thief beyond {big:,} queries (after the SA column's ';') only prices the defence, the "
                 f"goal's worst thief is the plain thieves within {big:,} and every adaptive one, whatever it paid" if beyond else "") + f". Price ${cfg['price_per_1000']:g} per 1,000 queries. "
              + probe_note(d) + " " + run_line(d, src)]
    return "\n".join(lines)


BLOCKS = {"quickstart": quickstart, "victim_ta": victim_ta, "table10": table10, "table2": table2, "table11": table11,
          "speed": speed, "serving": serving, "dataset_inference": dataset_inference,
          "dataset_inference_curve": dataset_inference_curve, "attack_comparison": attack_comparison, "watermark": watermark,
          "dataset_inference_calibrated": dataset_inference_calibrated, "defence_tradeoff": defence_tradeoff}
PATTERN = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def render(text: str, missing: list[str] | None = None) -> str:
    """README text with every generated block replaced by what its JSON gives now. A block whose JSON does
    not exist is left as it is and its reason appended to `missing` (an error when `missing` is None)."""
    unknown = [m.group(2) for m in PATTERN.finditer(text) if m.group(2) not in BLOCKS]
    if unknown:
        raise SystemExit(f"README.md has generated blocks this script does not know: {unknown}; known: {sorted(BLOCKS)}")

    def one(m):
        try:
            return m.group(1) + BLOCKS[m.group(2)]() + "\n" + m.group(4)
        except FileNotFoundError as exc:
            if missing is None:
                raise
            missing.append(f"{m.group(2)}: {exc}")
            return m.group(0)

    return PATTERN.sub(one, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md differs from its JSON")
    ap.add_argument("--readme", type=Path, default=README)
    args = ap.parse_args()
    text = args.readme.read_text()
    missing: list[str] = []
    new = render(text, missing)
    for line in missing:
        print(f"not rendered: {line}", file=sys.stderr)
    if args.check and missing:
        return 1
    if args.check:
        if new != text:
            diff = difflib.unified_diff(text.splitlines(), new.splitlines(), "README.md", "from JSON", lineterm="", n=0)
            print("\n".join(list(diff)[:40]))
            print("README.md's generated tables are stale: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        print(f"README.md: {len(PATTERN.findall(text))} generated blocks match their JSON")
        return 0
    args.readme.write_text(new)
    print(f"README.md: {len(PATTERN.findall(text))} generated blocks rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
