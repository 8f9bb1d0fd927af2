"""The one-command GPU paper run (benchmarks/gpu_paper.sh) smoke-tested on the CPU at toy size: staging
(benchmarks/stage_gpu_data.py --tiny), import, the steal timing, Table X at two surrogate sizes and the
Table II rows, printed beside the paper's. Needs ../shared (a failure under CI=true)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, require_shared

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def test_gpu_paper_script_runs_end_to_end_on_cpu(tmp_path):
    require_shared("gtsrb", "mnist", "fashion_mnist", "tiny_imagenet32")
    shared = SHARED_DATA.parent
    if not (shared / "victims" / "cifar10_simclr_resnet18" / "MANIFEST.json").exists():
        msg = f"shared victim not found under {shared / 'victims'}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    stage, runs = tmp_path / "stage", tmp_path / "runs"
    subprocess.run([sys.executable, "benchmarks/stage_gpu_data.py", "--shared", str(shared), "--tiny", "--no-wheels", "--out", str(stage)],
                   cwd=REPO, check=True)
    env = {**os.environ, "TINY": "1", "STAGE": str(stage), "RUNS": str(runs), "PYTHON": sys.executable,
           "STEALKIT_CACHE": str(tmp_path / "cache")}
    env.pop("OUT", None)
    done = subprocess.run(["bash", "benchmarks/gpu_paper.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    tables = json.loads((runs / "paper_tables.json").read_text())
    by = {(r["surrogate"], r["method"]): r for r in tables["table_x"]}
    assert len(by) == 8
    assert by[("5%", "StolenEncoder")]["queries"] == 64 and by[("3%", "StolenEncoder")]["queries"] == 48
    assert by[("5%", "StolenEncoder-query-aug")]["queries"] == 128  # (e+1)·|D| with e = 1
    assert by[("5%", "Pre-training-encoder")]["queries"] == 0 and by[("5%", "StolenEncoder")]["paper_SA"] == 79.43
    assert {r["downstream"] for r in tables["table_ii"]} == {"gtsrb", "mnist", "fashion_mnist"}
    assert "Table X (GTSRB)" in done.stdout and "paper-setting steal" in done.stdout
