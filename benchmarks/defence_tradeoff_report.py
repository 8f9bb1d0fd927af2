"""The trade-off plot of benchmarks/defence_tradeoff.py's JSON: TA-honest (x) against the thief's SA (y) per
defence setting, one curve per defence family (its settings joined by strength), the undefended point, the
no-query baseline and the goal's box (TA-honest within `max_ta_loss` of undefended, SA within `max_sa_gain` of
the baseline), and the Pareto frontier on the worst thief's SA. Hollow markers: the plain 2,500-query thief;
filled: the worst thief of the setting (adaptive ones included).

    python benchmarks/defence_tradeoff_report.py benchmarks/results/defence_tradeoff_real_cpu.json \\
        --plot docs/img/defence_tradeoff_real_cpu.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--plot", required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = json.loads(Path(args.results).read_text())
    rows, big = d["rows"], d["largest_budget"]
    base = next(r for r in rows if not r["defence"])
    goal = d["config"]["goal"]
    ref_sa = d["reference"]["baseline_SA"]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    ax.fill_between([base["TA_honest"] - goal["max_ta_loss"], base["TA_honest"] + 3], 0, ref_sa + goal["max_sa_gain"],
                    color="tab:green", alpha=0.12, label=f"goal: ≤{goal['max_ta_loss']:g} pt honest loss, ≤{goal['max_sa_gain']:g} pt over baseline")
    ax.axhline(ref_sa, color="grey", ls=":", lw=1, label=f"no-query baseline (pre-training encoder) {ref_sa:.1f}")
    families = {}
    for r in rows:
        families.setdefault(r["family"], []).append(r)
    cmap = plt.get_cmap("tab10")
    for i, (fam, rs) in enumerate(families.items()):
        rs = sorted(rs, key=lambda r: r["TA_honest"])
        c = "black" if fam == "none" else cmap(i % 10)
        xs = [r["TA_honest"] for r in rs]
        ax.plot(xs, [r["SA_worst"] for r in rs], "o-" if len(rs) > 1 else "o", color=c, label=fam)
        ax.plot(xs, [r["SA"][f"thief-{big}"] for r in rs], "o", mfc="none", color=c)
        for r in rs:
            ax.annotate(r["label"], (r["TA_honest"], r["SA_worst"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["TA_honest"])
    ax.plot([r["TA_honest"] for r in front], [r["SA_worst"] for r in front], "--", color="tab:red", lw=1, label="Pareto frontier (worst thief)")
    ax.set_xlabel("TA-honest on GTSRB, full test split (%)")
    ax.set_ylabel("thief's SA on GTSRB (%)")
    ax.set_title(f"Defences on the shared CIFAR-10 ResNet18, through stealkit serve\n"
                 f"filled: the worst thief of a setting; hollow: the plain {big:,}-query StolenEncoder", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the points fill the axes
    ax.grid(alpha=0.3)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=130)
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
