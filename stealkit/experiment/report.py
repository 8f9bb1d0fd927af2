"""report.md and plot.png from a results dict (see runner.run_experiment)."""

from __future__ import annotations

from pathlib import Path


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


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


def write_report(results: dict, run_dir: Path) -> Path:
    header, lines = results_table(results)
    env = results["environment"]
    out = [f"# {results['name']}", ""]
    if results.get("description"):
        out += [results["description"], ""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    if "TA honest (%)" in header:
        out += ["", "TA: the victim's clean features; TA honest: its answers through the row's defence, as honest users get "
                "them (Tables XIII–XV's TA); SA/TA is against the clean TA."]
    out += ["", f"Probe: {results['probe']['kind']} {results['probe']['config'] or '(defaults)'}; price ${results['price_per_1000']} per 1,000 queries.",
            f"Device: {results['device']} ({env.get('device_name')}); torch {env.get('torch')}; seed {results['seed']}; wall time {results['wall_seconds']:.1f} s."]
    for r in results["rows"]:
        out.append(f"- {r['label']} on {r['victim']}: surrogate {r['surrogate']} ({r['surrogate_size']} images), "
                   f"query {r['query_seconds']:.1f} s, train {r['train_seconds']:.1f} s, {r['queries_from_cache']} answers from cache")
    for f in results.get("failures", []):
        out.append(f"- SKIPPED {f['label']}: {f['error']}")
    for f in results.get("missing_downstream", []):
        out.append(f"- SKIPPED downstream {f['dataset']}: {f['error']}")
    plot = write_plot(results, run_dir)
    if plot:
        out += ["", f"![plot]({plot.name})"]
    path = run_dir / "report.md"
    path.write_text("\n".join(out) + "\n")
    return path


def write_plot(results: dict, run_dir: Path) -> Path | None:
    """A sweep: SA (and TA) against the swept value per downstream set; otherwise TA vs SA bars."""
    rows = [r for r in results["rows"] if r.get("downstream")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for r in rows for d in r["downstream"]})
    fig, ax = plt.subplots(figsize=(7, 4))
    sweep = results.get("sweep")
    if sweep:
        for ds in datasets:
            groups = {}
            for r in rows:
                if ds in r["downstream"]:
                    groups.setdefault((r["victim"], r["attack"]), []).append((r["sweep"]["value"], r["downstream"][ds]))
            for (victim, attack), pts in groups.items():
                xs = [str(p[0]) for p in pts]
                ax.plot(xs, [100 * p[1]["SA"] for p in pts], marker="o", label=f"SA {ds} ({victim})")
                ax.plot(xs, [100 * p[1]["TA"] for p in pts], linestyle="--", label=f"TA {ds} ({victim})")
        ax.set_xlabel(sweep["param"])
    else:
        import numpy as np

        labels = [f"{r['label']}\n{ds}" for r in rows for ds in datasets if ds in r["downstream"]]
        ta = [100 * r["downstream"][ds]["TA"] for r in rows for ds in datasets if ds in r["downstream"]]
        sa = [100 * r["downstream"][ds]["SA"] for r in rows for ds in datasets if ds in r["downstream"]]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ta, 0.4, label="TA (victim)")
        ax.bar(x + 0.2, sa, 0.4, label="SA (stolen)")
        ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("downstream accuracy (%)")
    ax.set_title(results["name"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = run_dir / "plot.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
