"""Cont-Steal and the ICML'22 loss attacks: exactly |D| queries, the loss goes down, cache reuse."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks.base import ATTACKS, build_attack
from stealkit.data.embedded import make_synthetic
from stealkit.models.encoder import build_encoder
from stealkit.targets.local import LocalTarget

import stealkit.attacks.cont_steal  # noqa: F401  (registers cont-steal)
import stealkit.attacks.loss_steal  # noqa: F401  (registers steal-*)

TINY = {"arch": "cnn_tiny", "batch_size": 32, "amp": False, "lr": 3e-3, "augment": "flip+gray"}  # colour jitter is slow on CPU


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


@pytest.fixture(scope="module")
def victim():
    torch.manual_seed(0)
    return build_encoder("cnn_tiny").eval()


@pytest.fixture(scope="module")
def surrogate():
    return make_synthetic(10, seed=3)  # 100 images, 32×32


def test_registered():
    for name in ("cont-steal", "steal-mse", "steal-infonce", "steal-softnn", "steal-wasserstein"):
        assert name in ATTACKS


def test_cont_steal_spends_exactly_d_queries_and_loss_decreases(victim, surrogate, tmp_path):
    target = LocalTarget(victim)
    attack = build_attack("cont-steal", {**TINY, "epochs": 6, "temperature": 0.2})
    result = attack.steal(target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert result.queries == len(surrogate) == target.queries
    losses = [e["loss"] for e in result.log]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert result.encoder.feature_dim == victim.feature_dim
    # a rerun in the same workdir reads the cached answers and the finished train state: no new queries
    again = build_attack("cont-steal", {**TINY, "epochs": 6, "temperature": 0.2}).steal(target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert target.queries == len(surrogate)
    assert again.info["queries_from_cache"] == len(surrogate)


@pytest.mark.parametrize("name", ["steal-mse", "steal-infonce", "steal-softnn", "steal-wasserstein"])
def test_icml_loss_attacks_spend_d_queries(victim, surrogate, name):
    target = LocalTarget(victim)
    result = build_attack(name, {**TINY, "epochs": 1}).steal(target, surrogate, device="cpu", progress=False)
    assert result.queries == len(surrogate) == target.queries
    assert all(math.isfinite(e["loss"]) for e in result.log)


def test_unknown_config_key_fails():
    with pytest.raises(Exception):
        build_attack("cont-steal", {"temprature": 0.1})
