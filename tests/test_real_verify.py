"""`stealkit verify` on the shared real victim (a provider's CIFAR-10 SimCLR ResNet18): the victim itself is
flagged, a randomly initialised ResNet18 is not. Private images are CIFAR-10 train (the victim's training
set), public images CIFAR-10 test. Runs under CI=true (a missing archive or victim is a failure there);
skipped with the reason on a machine without ../shared. A couple of minutes on 2 CPU cores.

Sizes come from benchmarks/results/dataset_inference_real_cpu.json (benchmarks/verify_real_cpu.sh): the
released GMM test does not flag this victim at any size up to 10,000 images; the view-alignment test does.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import require_shared, require_victim

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

N = 2000  # private and public images; the alignment test embeds VIEWS × 2N images per suspect
VIEWS = 4


def _verify(app, suspect, victim, data) -> dict:
    r = CliRunner().invoke(app, ["verify", "--victim", str(victim), "--suspect", str(suspect), "--private", "cifar10:train",
                                 "--public", "cifar10:test", "--private-limit", str(N), "--public-limit", str(N),
                                 "--align-views", str(VIEWS), "--data-root", str(data), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_verify_flags_the_shared_victim_and_not_a_random_encoder(tmp_path, monkeypatch):
    from stealkit.cli import app
    from stealkit.models.checkpoint import save_encoder
    from stealkit.models.encoder import build_encoder

    data = require_shared("cifar10")
    folder = require_victim("cifar10_simclr_resnet18")
    monkeypatch.setenv("STEALKIT_CACHE", str(tmp_path / "cache"))
    victim = tmp_path / "victim"
    r = CliRunner().invoke(app, ["import", str(folder), "--arch", "resnet18", "--cifar-stem", "--mean", "cifar10", "--std", "cifar10",
                                 "--trained-on", "cifar10:train", "--dataset-size", "50000", "--out", str(victim)])
    assert r.exit_code == 0, r.output
    import torch

    torch.manual_seed(0)
    random = tmp_path / "random"
    save_encoder(build_encoder("resnet18", input_size=32), random)

    own = _verify(app, victim, victim, data)
    assert set(own["tests"]) == {"dataset inference (GMM)", "view alignment"}  # no watermark head beside the victim
    align = own["tests"]["view alignment"]
    assert align["n_private"] == align["n_public"] == N and align["views"] == VIEWS
    assert align["mean_private"] > align["mean_public"]
    assert own["threshold"] == pytest.approx(0.01 / 2)  # two tests: Bonferroni
    assert align["p_value"] < own["threshold"] and own["stolen"], own
    assert own["queries"] == 0  # a checkpoint suspect: nothing billed

    other = _verify(app, random, victim, data)
    assert not other["stolen"], other
    assert all(t["p_value"] > other["threshold"] for t in other["tests"].values())
