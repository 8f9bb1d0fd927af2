"""report.md, plot.png (SA and SA/TA against #queries, one line per attack) and, for defence comparisons,
tradeoff.png (what honest users keep against what the thief gets) from a results dict
(see runner.run_experiment). With several seeds the tables and plots show mean ± standard deviation.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _pct_sd(values) -> str:
    m, sd = _mean_sd(values)
    return "—" if m is None else f"{100 * m:.2f} ± {100 * sd:.2f}"


def results_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Rows: one per (stolen encoder, downstream set). Accuracies in %, as the paper prints them."""
    header = ["victim", "attack", "downstream", "TA (%)", "SA (%)", "SA/TA (%)", "#queries", "cost ($)", "cos fidelity", "agreement (%)"]
    defended = any(ds.get("TA_defended") is not None for r in results["rows"] for ds in r.get("downstream", {}).values())
    if defended:
        header.insert(4, "TA honest (%)")
    checks = sorted({k for r in results["rows"] for k in (r.get("verification") or {})})
    header += [f"{k} p" for k in checks]
    lines = []
    for r in results["rows"]:
        for name, ds in r.get("downstream", {}).items():
            line = [r["victim"], r["label"], name, _pct(ds["TA"]), _pct(ds["SA"]),
                    "—" if ds["SA/TA"] is None else f"{100 * ds['SA/TA']:.0f}",
                    str(r["queries"]), f"{r['cost']:.2f}",
                    "—" if ds["cosine_fidelity"] is None else f"{ds['cosine_fidelity']:.3f}", _pct(ds["agreement"])]
            if defended:
                line.insert(4, _pct(ds["TA_defended"]))
            for k in checks:
                p = (r.get("verification") or {}).get(k, {}).get("p_value")
                line.append("—" if p is None else f"{p:.2g}")
            lines.append(line)
    return header, lines


def _base_label(r: dict) -> str:
    """The row's label without its seed suffix."""
    label = r["label"]
    suffix = f" (seed {r.get('seed')})"
    return label[: -len(suffix)] if label.endswith(suffix) else label


def grouped(results: dict) -> dict[tuple, list[dict]]:
    """(victim, label without seed, dataset) -> the per-seed entries {"row", "ds"}, in row order."""
    groups: dict[tuple, list[dict]] = {}
    for r in results["rows"]:
        for name, ds in r.get("downstream", {}).items():
            groups.setdefault((r["victim"], _base_label(r), name), []).append({"row": r, "ds": ds})
    return groups


def seeds_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """Mean ± standard deviation over seeds per (victim, attack, downstream set)."""
    header = ["victim", "attack", "downstream", "seeds", "TA (%)", "SA (%)", "SA/TA (%)", "#queries"]
    defended = any(ds.get("TA_defended") is not None for r in results["rows"] for ds in r.get("downstream", {}).values())
    if defended:
        header.insert(5, "TA honest (%)")
    lines = []
    for (victim, label, name), entries in grouped(results).items():
        ds = [e["ds"] for e in entries]
        line = [victim, label, name, str(len(entries)), _pct_sd([d["TA"] for d in ds]), _pct_sd([d["SA"] for d in ds]),
                _pct_sd([d["SA/TA"] for d in ds]), str(round(statistics.fmean(e["row"]["queries"] for e in entries)))]
        if defended:
            line.insert(5, _pct_sd([d["TA_defended"] for d in ds]))
        lines.append(line)
    return header, lines


def md_table(header, lines) -> list[str]:
    """A markdown table: header cells and rows of cells -> its lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(line) + " |" for line in lines]


def write_report(results: dict, run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    header, lines = results_table(results)
    env = results["environment"]
    out = [f"# {results['name']}", ""]
    if results.get("description"):
        out += [results["description"], ""]
    multi = len(results.get("seeds") or [results.get("seed")]) > 1
    if multi:
        out += [f"Mean ± standard deviation over seeds {results['seeds']}:", ""] + md_table(*seeds_table(results))
        out += ["", "Per seed:", ""]
    out += md_table(header, lines)
    if "TA honest (%)" in header:
        out += ["", "TA: the victim's clean features; TA honest: its answers through the row's defence, as honest users get "
                "them (Tables XIII–XV's TA); SA/TA is against the clean TA."]
    answers = "L2-normalised answers" if results.get("normalize_answers") else "raw answers"
    out += ["", f"Probe: {results['probe']['kind']} {results['probe']['config'] or '(defaults)'}; price ${results['price_per_1000']} per "
            f"1,000 queries; the API returned {answers}.",
            f"Device: {results['device']} ({env.get('device_name')}, {env.get('threads')} threads); torch {env.get('torch')}; "
            f"seed {results['seed']}; wall time {results['wall_seconds']:.1f} s."]
    for r in results["rows"]:
        settings = f"; {r['settings']}" if r.get("settings") else ""
        out.append(f"- {r['label']} on {r['victim']}: surrogate {r['surrogate']} ({r['surrogate_size']} images), "
                   f"query {r['query_seconds']:.1f} s, train {r['train_seconds']:.1f} s, {r['queries_from_cache']} answers from cache{settings}")
    for f in results.get("failures", []):
        out.append(f"- SKIPPED {f['label']}: {f['error']}")
    for f in results.get("missing_downstream", []):
        out.append(f"- SKIPPED downstream {f['dataset']}: {f['error']}")
    for plot in (write_plot(results, run_dir), write_tradeoff(results, run_dir)):
        if plot:
            out += ["", f"![{plot.stem}]({plot.name})"]
    path = run_dir / "report.md"
    path.write_text("\n".join(out) + "\n")
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(results: dict, dataset: str) -> dict[str, list[tuple]]:
    """attack label (without sweep value and seed) -> [(queries, SA mean, SA sd, SA/TA mean, SA/TA sd, sweep value)]."""
    by_label: dict[str, dict] = {}
    for (victim, label, name), entries in grouped(results).items():
        if name != dataset:
            continue
        row = entries[0]["row"]
        base = row.get("attack_label") or label.split(" [")[0]
        sa = _mean_sd([e["ds"]["SA"] for e in entries])
        ratio = _mean_sd([e["ds"]["SA/TA"] for e in entries])
        q = statistics.fmean(e["row"]["queries"] for e in entries)
        sweep = (row.get("sweep") or {}).get("value")
        by_label.setdefault(f"{base} ({victim})" if len({k[0] for k in grouped(results)}) > 1 else base, []).append((q, *sa, *ratio, sweep))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in by_label.items()}


def write_plot(results: dict, run_dir: Path) -> Path | None:
    """SA (left) and SA/TA (right) against #queries (symlog axis: 0 for attacks that ask nothing), one line
    per attack, one row of panels per downstream set; the victim's TA dashed; error bars over seeds."""
    rows = [r for r in results["rows"] if r.get("downstream")]
    if not rows:
        return None
    plt = _plt()
    datasets = sorted({d for r in rows for d in r["downstream"]})
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.6 * len(datasets)), squeeze=False)
    nonzero = [r["queries"] for r in rows if r["queries"] > 0]
    lin = min(nonzero) if nonzero else 1
    for i, ds in enumerate(datasets):
        ax_sa, ax_ratio = axes[i]
        for label, pts in _series(results, ds).items():
            q = [p[0] for p in pts]
            line = ax_sa.errorbar(q, [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], marker="o", capsize=3, label=label)
            ax_ratio.errorbar(q, [100 * p[3] if p[3] is not None else math.nan for p in pts],
                              yerr=[100 * p[4] if p[4] is not None else 0.0 for p in pts],
                              marker="o", capsize=3, color=line[0].get_color(), label=label)
            for p in pts:
                if p[5] is not None:
                    ax_sa.annotate(str(p[5]), (p[0], 100 * p[1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for victim, ta in sorted({(r["victim"], r["downstream"][ds]["TA"]) for r in rows if ds in r["downstream"]}):
            ax_sa.axhline(100 * ta, linestyle="--", color="grey", linewidth=1)
            ax_sa.annotate(f"TA {victim}", (0, 100 * ta), xycoords=("axes fraction", "data"), fontsize=7, color="grey",
                           xytext=(2, 2), textcoords="offset points")
            break  # one victim's TA line per panel keeps it readable; the table has every TA
        ax_ratio.axhline(100, linestyle="--", color="grey", linewidth=1)
        for ax, ylabel in ((ax_sa, f"SA on {ds} (%)"), (ax_ratio, f"SA/TA on {ds} (%)")):
            if len(nonzero) == len(rows):  # every attack asked: a plain log axis (symlog's margins reach below 0)
                ax.set_xscale("log")
                ax.set_xlabel("#queries (log)")
            else:
                ax.set_xscale("symlog", linthresh=lin)
                ax.set_xlim(left=0)
                ax.set_xlabel("#queries (symlog)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        ax_sa.legend(fontsize=7)
    fig.suptitle(results["name"], fontsize=10)
    fig.tight_layout()
    path = run_dir / "plot.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_tradeoff(results: dict, run_dir: Path) -> Path | None:
    """For defence comparisons: SA against TA-honest, one point per defence setting (labelled), one panel per
    downstream set; the diagonal SA = TA-honest; error bars over seeds. A good defence lies far below it."""
    rows = [r for r in results["rows"] if r.get("downstream") and any(d.get("TA_defended") is not None for d in r["downstream"].values())]
    if not rows:
        return None
    plt = _plt()
    datasets = sorted({d for r in rows for d in r["downstream"]})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.5), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        lo, hi = 100.0, 0.0
        for (victim, label, name), entries in grouped(results).items():
            if name != ds or entries[0]["ds"].get("TA_defended") is None:
                continue
            ta, ta_sd = _mean_sd([e["ds"]["TA_defended"] for e in entries])
            sa, sa_sd = _mean_sd([e["ds"]["SA"] for e in entries])
            ax.errorbar(100 * ta, 100 * sa, xerr=100 * ta_sd, yerr=100 * sa_sd, marker="o", capsize=3)
            defence = entries[0]["row"].get("defence")
            text = "no defence" if not defence else label.split(" vs ", 1)[-1]
            ax.annotate(text, (100 * ta, 100 * sa), textcoords="offset points", xytext=(4, 4), fontsize=7)
            lo, hi = min(lo, 100 * ta, 100 * sa), max(hi, 100 * ta, 100 * sa)
        pad = max(2.0, 0.05 * (hi - lo))
        lim = (max(0.0, math.floor(lo - pad)), min(100.0, math.ceil(hi + pad)))
        ax.plot(lim, lim, linestyle="--", color="grey", linewidth=1, label="SA = TA honest")
        ax.set_xlim(*lim)
        ax.set_ylim(*lim)
        ax.set_xlabel(f"TA honest on {ds} (%): what honest users keep")
        ax.set_ylabel(f"SA on {ds} (%): what the thief gets")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['name']}: the provider's trade-off", fontsize=10)
    fig.tight_layout()
    path = run_dir / "tradeoff.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
