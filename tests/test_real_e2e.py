"""End to end on real data: import the shared real victim (a provider's CIFAR-10 SimCLR ResNet18), serve it
on loopback with normalised answers, steal it over HTTP from real tiny_imagenet32 images for one epoch,
evaluate on a few hundred real GTSRB images, and check that the ledger's bill equals the reported
queries. Runs under CI=true (a missing archive or victim is a failure there); skipped with the reason
on a machine without ../shared. A couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import require_shared

SHARED = Path(os.environ.get("STEALKIT_TEST_VICTIMS", Path(__file__).resolve().parents[2] / "shared" / "victims"))
N_QUERIES = 48

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


def _victim_dir() -> Path:
    folder = SHARED / "cifar10_simclr_resnet18"
    if not (folder / "MANIFEST.json").exists():
        msg = f"shared victim not found under {folder} (set STEALKIT_TEST_VICTIMS)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " — under CI=true a missing archive is a failure")
        pytest.skip(msg)
    return folder


def test_import_serve_steal_over_http_evaluate_and_bill(tmp_path, monkeypatch):
    from stealkit.cli import app
    from stealkit.experiment.config import ExperimentConfig
    from stealkit.experiment.runner import run_experiment
    from stealkit.models.checkpoint import load_encoder
    from stealkit.service import Ledger, ServiceSettings, create_app
    from stealkit.service.background import serve_in_thread
    from stealkit.targets.answers import api_answers
    from stealkit.targets.remote import RemoteTarget

    data = require_shared("gtsrb", "tiny_imagenet32")
    folder = _victim_dir()
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    victim = tmp_path / "victim"
    r = CliRunner().invoke(app, ["import", str(folder), "--arch", "resnet18", "--cifar-stem", "--trained-on", "cifar10:train",
                                 "--dataset-size", "50000", "--out", str(victim)])
    assert r.exit_code == 0, r.output
    enc = load_encoder(victim)

    ledger = Ledger(tmp_path / "ledger.sqlite")
    key = ledger.create_account("thief")
    settings = ServiceSettings(checkpoint=str(victim), ledger=str(ledger.path), device="cpu", normalize=True)
    with serve_in_thread(create_app(settings)) as url:
        # what the server answers is the imported encoder's normalised output, bitwise
        probe_images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
        with RemoteTarget(url, key) as client:
            served = client.embed(probe_images)
        assert torch.equal(served, api_answers(enc, probe_images, normalize=True))
        assert torch.allclose(served.norm(dim=1), torch.ones(4), atol=1e-5)
        cfg = ExperimentConfig(
            name="real-e2e", device="cpu", progress=False, data_root=str(data), normalize_answers=True,
            victim={"label": "cifar10-simclr-resnet18", "checkpoint": str(victim)},
            attack={"name": "stolenencoder", "label": "StolenEncoder", "config": {"arch": "resnet18", "epochs": 1, "batch_size": 16}},
            surrogate={"name": "tiny_imagenet32", "split": "train", "limit": N_QUERIES},
            target={"url": url, "api_key": key, "cache_dir": str(tmp_path / "answers")},
            downstream=[{"name": "gtsrb", "train_limit": 300, "test_limit": 200}],
            probe={"kind": "linear", "config": {"epochs": 30}},
        )
        res = run_experiment(cfg, tmp_path / "run", echo=lambda m: None)
    (row,) = res["rows"]
    billed = ledger.usage("thief")
    assert row["queries"] == N_QUERIES and billed.queries == N_QUERIES + 4  # the 4 probe images above, then the steal
    assert row["cost"] == pytest.approx(N_QUERIES * 1.2 / 1000)
    gtsrb = row["downstream"]["gtsrb"]
    assert gtsrb["train_size"] == 300 and gtsrb["test_size"] == 200
    assert 1 / 43 < gtsrb["TA"] <= 1.0  # a real encoder's features beat chance on 43 classes
    assert 0.0 <= gtsrb["SA"] <= 1.0 and gtsrb["SA/TA"] == pytest.approx(gtsrb["SA"] / gtsrb["TA"])
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "plot.png").exists()
