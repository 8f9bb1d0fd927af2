"""The quickstart end to end, as a user runs it: `stealkit quickstart` on embedded data, on CPU.

Checks the science the quickstart is there to show, on the mean over its three seeds: the pre-trained victim
beats a random encoder (TA > random), StolenEncoder beats a random encoder and is not behind its w/o-aug
variant on SA, while spending exactly |D| = 250 queries per seed.
"""

import json
import re

import pytest
from typer.testing import CliRunner

from stealkit.cli import app


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["quickstart", "--run-dir", str(tmp_path / "qs")])
    assert result.exit_code == 0, result.output
    for f in ("results.json", "report.md", "plot.png", "metrics.jsonl", "config.resolved.yaml"):
        assert (tmp_path / "qs" / f).exists(), f
    res = json.loads((tmp_path / "qs" / "results.json").read_text())
    assert res["seeds"] == [0, 1, 2]
    by: dict[str, list[dict]] = {}
    for r in res["rows"]:
        by.setdefault(r["attack"], []).append(r)
    assert {k: sorted(r["seed"] for r in v) for k, v in by.items()} == {
        "stolenencoder": [0, 1, 2], "stolenencoder-wo-aug": [0, 1, 2], "random-init": [0, 1, 2]}
    assert {r["queries"] for r in by["stolenencoder"] + by["stolenencoder-wo-aug"]} == {250}
    assert {r["queries"] for r in by["random-init"]} == {0}

    def mean(rows, key):
        return sum(r["downstream"]["digits"][key] for r in rows) / len(rows)

    sa = {k: mean(v, "SA") for k, v in by.items()}
    ta = mean(by["stolenencoder"], "TA")
    print("quickstart mean TA", ta, "mean SA", sa)
    assert ta > sa["random-init"] + 0.02, "pre-training should beat a random encoder"
    assert sa["stolenencoder"] > sa["random-init"] + 0.02
    # StolenEncoder led w/o-aug by 3.0 points on the mean over 3 seeds (per-seed sd 2.0 and 2.8, AMX Xeon); a
    # 2-point allowance keeps the check from flipping on another CPU's kernels, and still fails if the
    # augmented term hurts.
    assert sa["stolenencoder"] > sa["stolenencoder-wo-aug"] - 0.02
    assert re.search(r"mean\s+±\s+standard\s+deviation\s+over\s+seeds", result.output), result.output[-2000:]
