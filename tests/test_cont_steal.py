"""Cont-Steal (released form: e·|D| queries of the same augmented view, RandAugment + pad-crop + flip, an fc
head; fixed-view form: |D|) and the ICML'22 loss attacks: queries billed exactly, the loss goes down, cache
reuse, protocol presets."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks.base import ATTACKS, build_attack
from stealkit.data.embedded import make_synthetic
from stealkit.models.encoder import build_encoder
from stealkit.targets.local import LocalTarget
from stealkit.userinput import UserError

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
    for name in ("cont-steal", "cont-steal-fixed-view", "steal-mse", "steal-infonce", "steal-softnn", "steal-wasserstein"):
        assert name in ATTACKS


def test_cont_steal_fixed_view_spends_exactly_d_queries_and_loss_decreases(victim, surrogate, tmp_path):
    target = LocalTarget(victim)
    attack = build_attack("cont-steal-fixed-view", {**TINY, "epochs": 6, "temperature": 0.2})
    result = attack.steal(target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert result.queries == len(surrogate) == target.queries
    losses = [e["loss"] for e in result.log]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert result.encoder.feature_dim == victim.feature_dim
    # a rerun in the same workdir reads the cached answers and the finished train state: no new queries
    again = build_attack("cont-steal-fixed-view", {**TINY, "epochs": 6, "temperature": 0.2}).steal(target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert target.queries == len(surrogate)
    assert again.info["queries_from_cache"] == len(surrogate)


@pytest.mark.parametrize("name", ["steal-mse", "steal-infonce", "steal-softnn", "steal-wasserstein"])
def test_icml_loss_attacks_spend_d_queries_released_and_e_d_augmented(victim, surrogate, name):
    """released: |D| clean queries; augmented (the blog's): one augmented view per image per epoch, e·|D|
    (tests/test_loss_steal.py checks which images each encoder sees)."""
    target = LocalTarget(victim)
    result = build_attack(name, {**TINY, "epochs": 1, "protocol": "released", "batch_size": 32}).steal(
        target, surrogate, device="cpu", progress=False)
    assert result.queries == len(surrogate) == target.queries
    assert all(math.isfinite(e["loss"]) for e in result.log)
    target = LocalTarget(victim)
    result = build_attack(name, {**TINY, "epochs": 2}).steal(target, surrogate, device="cpu", progress=False)
    assert result.queries == 2 * len(surrogate) == target.queries
    assert all(math.isfinite(e["loss"]) for e in result.log)


def test_unknown_config_key_fails():
    """A misspelt key is a UserError (a ValueError) that names the attack and the key and suggests the right one;
    a correct key with a wrong type is still a UserError, and a known key builds."""
    with pytest.raises(UserError, match=r"attack 'cont-steal': config\.temprature: unknown setting; did you mean 'temperature'") as info:
        build_attack("cont-steal", {"temprature": 0.1})
    assert isinstance(info.value, ValueError)
    with pytest.raises(UserError, match=r"config\.temperature: Input should be a valid number.*got 'abc'"):
        build_attack("cont-steal", {"temperature": "abc"})
    with pytest.raises(UserError, match=r"config\.temperature: Input should be greater than 0"):
        build_attack("cont-steal", {"temperature": -1})
    assert build_attack("cont-steal", {"temperature": 0.1}).config.temperature == 0.1


class Recording(LocalTarget):
    """A LocalTarget that keeps every batch it was asked to embed."""

    def __init__(self, encoder):
        super().__init__(encoder)
        self.asked = []

    def _embed(self, images):
        self.asked.append(images.clone())
        return super()._embed(images)


def test_cont_steal_released_form_pays_e_times_d_for_the_views_the_stolen_encoder_sees(victim, surrogate, tmp_path):
    """The released code sends the same augmented image to the target and the stolen encoder every epoch:
    e·|D| queries (no clean query), every one an augmented image, each epoch's set a fresh draw."""
    target = Recording(victim)
    epochs = 3
    result = build_attack("cont-steal", {**TINY, "epochs": epochs, "batch_size": 25}).steal(
        target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert result.queries == target.queries == epochs * len(surrogate)
    assert [e["aug_queries"] for e in result.log] == [len(surrogate)] * epochs
    asked = torch.cat(target.asked)
    assert len(asked) == epochs * len(surrogate)
    first, second = asked[: len(surrogate)], asked[len(surrogate) : 2 * len(surrogate)]
    assert not torch.equal(first, surrogate.images)  # augmented, not the clean images
    assert not torch.equal(first, second)  # a fresh A(x) per epoch
    # resumed in the same workdir after it finished: nothing is asked or paid again
    again = build_attack("cont-steal", {**TINY, "epochs": epochs, "batch_size": 25}).steal(
        target, surrogate, device="cpu", workdir=tmp_path, progress=False)
    assert target.queries == epochs * len(surrogate) and again.queries == epochs * len(surrogate)


def test_cont_steal_defaults_are_the_released_codes():
    cfg = build_attack("cont-steal").config
    assert (cfg.batch_size, cfg.optimizer, cfg.lr, cfg.temperature) == (32, "adam", 3e-4, 0.5)
    assert (cfg.augment, cfg.fc) == ("randaugment+padcrop+flip", True)  # utils.random_transform; resnet18(num_classes=512)
    loss = build_attack("cont-steal").make_loss()
    assert loss.stolen_views == loss.target_views == frozenset({"aug"})
    old = build_attack("cont-steal", {"augment": "crop+flip+jitter+gray", "fc": False}).config  # stealkit's earlier form
    assert (old.augment, old.fc) == ("crop+flip+jitter+gray", False)


class Fake(LocalTarget):
    """A LocalTarget whose answers are a fixed random projection of the victim's features to `dim`."""

    def __init__(self, encoder, dim):
        super().__init__(encoder)
        self.proj = torch.randn(encoder.feature_dim, dim, generator=torch.Generator().manual_seed(0))

    @property
    def feature_dim(self):
        return self.proj.shape[1]

    def _embed(self, images):
        return super()._embed(images) @ self.proj


@pytest.mark.parametrize("fc, dim, head", [(True, 64, True), (False, 64, False), (True, 16, True), (False, 16, True)])
def test_cont_steal_fc_head(victim, surrogate, fc, dim, head):
    """fc: true keeps a Linear layer on the pooled features even when its width (cnn_tiny: 64) is the target's D,
    as the released resnet18(num_classes=512) does; fc: false leaves the pooled features, with a Linear only
    where the widths differ. The stolen encoder answers the target's D either way; the released augmentation runs."""
    target = Fake(victim, dim) if dim != victim.feature_dim else LocalTarget(victim)
    result = build_attack("cont-steal", {"arch": "cnn_tiny", "batch_size": 50, "amp": False, "epochs": 1, "fc": fc}).steal(
        target, surrogate, device="cpu", progress=False)
    enc = result.encoder
    assert isinstance(enc.head, torch.nn.Linear) == head and enc.spec.fc == fc
    if head:
        assert (enc.head.in_features, enc.head.out_features) == (64, dim)
    assert enc.feature_dim == dim and enc(surrogate.images[:3]).shape == (3, dim)
    assert result.queries == target.queries == len(surrogate)
    assert "randaugment+padcrop+flip" in result.info["settings"]


@pytest.mark.parametrize("name, batch, lr", [("steal-infonce", 256, 3e-4), ("steal-softnn", 256, 1e-3), ("steal-mse", 64, 1e-3)])
def test_released_protocol_preset(name, batch, lr):
    """steal.py of the released ICML'22 code: one clean view, Adam with weight decay 1e-4, per-loss batch and lr;
    an explicit setting still wins over the preset."""
    cfg = build_attack(name, {"protocol": "released"}).config
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.optimizer) == (batch, lr, 1e-4, "adam")
    loss = build_attack(name, {"protocol": "released"}).make_loss()
    assert loss.stolen_views == loss.target_views == frozenset({"clean"})
    assert build_attack(name, {"protocol": "released", "batch_size": 32}).config.batch_size == 32
    aug = build_attack(name).make_loss()  # the blog's: the target's A(x), the stolen encoder's independent A'(x)
    assert aug.stolen_views == frozenset({"aug2"}) and aug.target_views == frozenset({"aug"})


def test_fc_head_survives_a_checkpoint(tmp_path):
    """The sidecar records `fc`, so a stolen encoder with a 64→64 fc layer loads back with it (strict load)."""
    from stealkit.models.checkpoint import load_encoder, save_encoder

    torch.manual_seed(0)
    enc = build_encoder("cnn_tiny", out_dim=64, fc=True).eval()
    assert isinstance(enc.head, torch.nn.Linear)
    back = load_encoder(save_encoder(enc, tmp_path / "stolen"))
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert back.spec.fc and torch.equal(back(x), enc(x))
    assert isinstance(build_encoder("cnn_tiny", out_dim=64).head, torch.nn.Identity)
