"""The quickstart end to end, as a user runs it: `stealkit quickstart` on embedded data, on CPU.

Checks the science the quickstart is there to show: the pre-trained victim beats a random encoder
(TA > random), and StolenEncoder beats both its w/o-aug variant and a random encoder on SA, while
spending exactly |D| = 250 queries.
"""

import json

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
    rows = {r["attack"]: r for r in res["rows"]}
    se, wo, rnd = rows["stolenencoder"], rows["stolenencoder-wo-aug"], rows["random-init"]
    assert se["queries"] == wo["queries"] == 250 and rnd["queries"] == 0
    sa = {k: r["downstream"]["digits"]["SA"] for k, r in rows.items()}
    ta = se["downstream"]["digits"]["TA"]
    print("quickstart TA", ta, "SA", sa)
    assert ta > sa["random-init"] + 0.02, "pre-training should beat a random encoder"
    assert sa["stolenencoder"] > sa["random-init"] + 0.02
    assert sa["stolenencoder"] > sa["stolenencoder-wo-aug"]
    assert "SA/TA" in result.output or "SA/TA" in (tmp_path / "qs" / "report.md").read_text()
